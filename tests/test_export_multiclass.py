"""Multi-class export verification (issue 16 item 8): a 3-class CMUNeXt-S exported to ONNX FP32,
OpenVINO FP32 and OpenVINO INT8 (NNCF, calibrated on a 3-class set) and verified against PyTorch
and per-class ground truth, in both ground-truth layouts; the per-class pass gate; a 3-class model
on a 1-class dataset is a clear error."""
import json
from pathlib import Path

import numpy as np
import pytest

from cmunext_edge.export.calibration import CalibrationError, make_calibration_set
from cmunext_edge.export.pipeline import export
from cmunext_edge.export.verify import CLASS_AGREEMENT_MARGIN, compare, format_figures
from cmunext_edge.checkpoints.weights import load_checkpoint

from conftest import SAMPLES

SIZE = 8        # images per calibration / verification set: keeps the module fast


@pytest.fixture(scope="module")
def exports(three_class, tmp_path_factory):
    """ONNX FP32 and OpenVINO FP32 through export(), OpenVINO INT8 through the CLI; each verified
    on the masks layout, and the ONNX one also on the label-image layout."""
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("mc_exports")
    ckpt, masks, labels = three_class["checkpoint"], three_class["masks"], three_class["labels"]
    res = {"onnx": export(ckpt, target="onnx", precision="fp32", out=out / "m", verify_data=masks,
                          calib_size=SIZE, log=lambda m: None),
           "onnx_labels": export(ckpt, target="onnx", precision="fp32", out=out / "l", verify_data=labels,
                                 calib_size=SIZE, log=lambda m: None)}
    if pytest.importorskip("openvino") and pytest.importorskip("nncf"):
        res["openvino"] = export(ckpt, target="openvino", precision="fp32", out=out / "m",
                                 verify_data=masks, calib_size=SIZE, log=lambda m: None)
    return res, out


def _manifest_entry(result) -> dict:
    return json.loads(result.manifest.read_text())["artifacts"][result.artifact.name]


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_fp32_exports_record_per_class_figures(exports, name):
    res = exports[0].get(name)
    if res is None:
        pytest.skip(f"{name} not available")
    v = _manifest_entry(res)["verification"]
    assert v["passed"] and v["n_images"] == SIZE
    assert len(v["per_class_agreement"]) == 3 and min(v["per_class_agreement"]) > 0.999
    assert len(v["per_class_dice_vs_ground_truth"]) == 3
    assert len(v["per_class_dice_vs_ground_truth_pytorch"]) == 3
    assert v["dice_vs_ground_truth"] == pytest.approx(v["dice_vs_ground_truth_pytorch"], abs=2e-3)
    # the classes differ (benign / malignant / rim), so the per-class Dice are not all one number
    assert len({round(d, 4) for d in v["per_class_dice_vs_ground_truth"]}) > 1
    assert "per class" in format_figures(v)


def test_label_images_give_the_same_figures_as_per_class_masks(exports):
    masks = exports[0]["onnx"].verification
    labels = exports[0]["onnx_labels"].verification
    assert masks["source"]["files"] == labels["source"]["files"]
    for key in ("dice_vs_ground_truth", "dice_vs_ground_truth_pytorch", "mask_dice_agreement"):
        assert labels[key] == pytest.approx(masks[key], abs=1e-9)
    for key in ("per_class_dice_vs_ground_truth", "per_class_dice_vs_ground_truth_pytorch",
                "per_class_agreement"):
        assert labels[key] == pytest.approx(masks[key], abs=1e-9)


def test_openvino_int8_cli_calibrated_on_three_classes(three_class, exports, capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from cmunext_edge.cli.export import main
    out = exports[1] / "int8"
    rc = main(["--weights", str(three_class["checkpoint"]), "--target", "openvino", "--int8",
               "--calib", str(three_class["masks"]), "--calib-size", str(SIZE),
               "--verify-data", str(three_class["masks"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    line = next(x for x in err.splitlines() if x.startswith("verification: "))
    assert "per class" in line and line.count(" / ") >= 4      # agreement and Dice, 3 classes each
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["artifacts"].values()
    v = entry["verification"]
    assert entry["calibration"]["size"] == SIZE and v["passed"] and v["precision"] == "int8"
    assert len(v["per_class_agreement"]) == 3
    assert min(v["per_class_agreement"]) >= v["required_agreement"] - CLASS_AGREEMENT_MARGIN
    assert len(v["per_class_dice_vs_ground_truth"]) == 3


def test_accuracy_control_validation_scores_three_classes(three_class, exports):
    """NNCF accuracy control's validation function on a compiled 3-class IR and 3-class masks:
    the official Dice over all channels, as verification computes it with PyTorch."""
    ov = pytest.importorskip("openvino")
    from cmunext_edge.export.openvino_export import dice_validation_fn
    res = exports[0].get("openvino")
    if res is None:
        pytest.skip("openvino not available")
    spec = load_checkpoint(three_class["checkpoint"]).spec
    calib = make_calibration_set(three_class["masks"], spec, SIZE, 0, num_classes=3)
    assert all(m.shape == (3, *spec.size) for m in calib.masks)
    compiled = ov.Core().compile_model(str(res.artifact), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    mean, per_item = dice_validation_fn(compiled, [(x[None], m) for x, m in zip(calib.inputs, calib.masks)])
    assert len(per_item) == SIZE
    assert mean == pytest.approx(res.verification["dice_vs_ground_truth"], abs=2e-3)


def test_three_class_model_on_one_class_dataset_is_a_clear_error(three_class, tmp_path):
    with pytest.raises(CalibrationError, match=r"model has 3 classes.*ground truth has 1"):
        export(three_class["checkpoint"], target="onnx", precision="fp32", out=tmp_path,
               verify_data=SAMPLES, calib_size=4, log=lambda m: None)
    assert not any(tmp_path.iterdir())


def test_three_class_model_on_bundled_samples_reports_agreement_only(three_class, tmp_path):
    """No --verify-data: the bundled (1-class) samples are not its domain; no ground truth is
    loaded, so there is no class-count error, and per-class agreement is still reported."""
    pytest.importorskip("onnxruntime")
    res = export(three_class["checkpoint"], target="onnx", precision="fp32", out=tmp_path, calib_size=2,
                 log=lambda m: None)
    v = res.verification
    assert v["passed"] and v["dice_vs_ground_truth"] is None and len(v["per_class_agreement"]) == 3
    assert v["per_class_dice_vs_ground_truth"] is None


def _logits(rng, n=4, c=3, size=32):
    return rng.normal(size=(n, c, size, size)).astype(np.float32)


def test_per_class_gate_fails_one_drifting_class_that_the_mean_hides():
    """Mean agreement above the INT8 floor, one class below floor - margin: not passed."""
    rng = np.random.default_rng(0)
    ref = _logits(rng, c=8)
    out = ref.copy()
    flip = rng.random(out[:, 7].shape) < 0.15                 # class 7: 15 % of its pixels flipped
    out[:, 7][flip] *= -1
    f = compare(out, ref, None, "int8")
    assert f["mask_dice_agreement"] >= f["required_agreement"]
    assert f["per_class_agreement"][7] < f["required_agreement"] - CLASS_AGREEMENT_MARGIN
    assert not f["passed"]
    out[:, 7] = ref[:, 7]
    assert compare(out, ref, None, "int8")["passed"]


def test_one_class_figures_are_unchanged():
    """One class: no per-class keys, and Dice vs ground truth is the old per-image mean."""
    from cmunext_edge.core.metrics import mean_dice
    rng = np.random.default_rng(1)
    ref = _logits(rng, c=1)
    out = ref + rng.normal(scale=0.05, size=ref.shape).astype(np.float32)
    masks = [rng.random((32, 32)) > 0.5 for _ in range(len(ref))]
    f = compare(out, ref, masks, "fp32")
    assert not any(k.startswith("per_class") for k in f) and "per class" not in format_figures(f)
    old = float(np.mean([mean_dice(o > 0, m[None]) for o, m in zip(out, masks)]))
    assert f["dice_vs_ground_truth"] == pytest.approx(old, abs=1e-12)
    assert compare(out, ref, [m[None] for m in masks], "fp32") == f      # HxW or 1xHxW masks
    from cmunext_edge.bench.engine import RowResult
    from cmunext_edge.export.auto.run import Measured, _row_json
    assert "per_class_dice" not in _row_json(Measured("a", "onnx", "fp32", "", {}))
    assert "per_class_dice" not in RowResult("a", "a.onnx").to_dict()


def test_auto_eval_set_and_report_carry_per_class_dice(three_class, tmp_path):
    """`--target auto` on a 3-class model and set: per-class Dice of PyTorch and of every candidate
    in the report JSON and Markdown; a 1-class evaluation set is a clear error."""
    pytest.importorskip("onnxruntime")
    from cmunext_edge.export.auto import load_eval_set, run_auto
    spec = load_checkpoint(three_class["checkpoint"]).spec
    with pytest.raises(CalibrationError, match="model has 3 classes"):
        load_eval_set(SAMPLES, None, spec, 4, num_classes=3)
    rep = run_auto(three_class["checkpoint"], out=tmp_path, data=three_class["labels"], eval_size=4,
                   candidates=["ort-fp32"], rounds=1, iters=2, throughput_s=0, time_pytorch=False,
                   log=lambda m: None)
    (row,) = rep["candidates"]
    assert len(row["per_class_dice"]) == 3 and len(rep["pytorch_fp32_per_class_dice"]) == 3
    assert row["per_class_dice"] == pytest.approx(rep["pytorch_fp32_per_class_dice"], abs=1e-3)
    saved = json.loads((tmp_path / "auto_report.json").read_text())
    assert saved["candidates"][0]["per_class_dice"] == row["per_class_dice"]
    assert "Per-class Dice" in (tmp_path / "auto_report.md").read_text()


def test_bench_data_records_per_class_dice(three_class, exports, tmp_path, capsys):
    """cmunext-bench --data on a 3-class set: per-class Dice in the JSON and the Markdown table;
    the compact terminal table keeps its columns. Same Dice as the export's verification."""
    from cmunext_edge.bench.report import to_markdown
    from cmunext_edge.cli.bench import main
    res = exports[0]["onnx"]
    j = tmp_path / "b.json"
    rc = main([str(res.artifact), "--warmup", "1", "--iters", "2", "--batch-sizes", "1", "--streams", "1",
               "--throughput-time", "0", "--matmul-time", "0.05", "--quiet", "--data", str(three_class["masks"]),
               "--json", str(j), "--markdown", str(tmp_path / "b.md")])
    out = capsys.readouterr().out
    assert rc == 0
    (row,) = json.loads(j.read_text())["rows"]
    assert row["n_dice_images"] == 16 and len(row["per_class_dice"]) == 3
    assert "Dice per class" in (tmp_path / "b.md").read_text() and "Dice per class" not in out
    assert " / ".join(f"{d:.4f}" for d in row["per_class_dice"]) in to_markdown(json.loads(j.read_text()))


@pytest.mark.parametrize("layout", ["masks", "labels"])
def test_bundle_carries_every_class_and_the_check_scores_per_class(three_class, exports, layout, tmp_path,
                                                                  capsys):
    from cmunext_edge.device.bundle import BundleError, make_bundle
    from cmunext_edge.cli import check as check_cli
    from cmunext_edge.device.compare import compare as compare_reports
    art = exports[0]["onnx"].artifact
    res = make_bundle(art, tmp_path, images=three_class[layout], n_images=2, archive=False)
    rows = res.manifest["references"]
    assert len(rows) == 2 and all(len(r["host_class_dice"]) == 3 for r in rows)
    if layout == "masks":
        assert all(len(r["masks"]) == 3 and "mask" not in r for r in rows)
        assert [sorted(p.name for p in (res.folder / "verify" / "masks" / str(k)).iterdir()) for k in range(3)] \
            == [sorted(Path(r["masks"][0]).name for r in rows)] * 3
    else:
        assert all(r["labels"].startswith("verify/labels/") for r in rows)
    rc = check_cli.main([str(res.folder), "--iters", "2", "--warmup", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "per class agreement 0: " in out and ", 2: " in out and "per class Dice 0: " in out, out  # not only in JSON
    report = json.loads((res.folder / "device_report.json").read_text())
    assert len(report["dice"]["per_class_device"]) == 3
    assert report["dice"]["per_class_device"] == pytest.approx(report["dice"]["per_class_host"], abs=1e-3)
    assert len(report["agreement"]["per_class_mask_dice"]) == 3
    from cmunext_edge.cli import info as info_cli
    assert info_cli.main([str(art)]) == 0
    assert "mask Dice agreement" in (line := next(x for x in capsys.readouterr().out.splitlines()
                                                  if x.startswith("verification"))) and "(per class " in line, line
    merged = compare_reports([res.folder / "device_report.json"])
    assert "per class" in merged["markdown"] and len(merged["rows"][0]["per_class_dice"]) == 3
    from cmunext_edge.resources import SAMPLES_DIR
    with pytest.raises(BundleError, match="model has 3 classes.*has 1"):
        make_bundle(art, tmp_path / "one", images=SAMPLES_DIR, archive=False)
    with pytest.raises(BundleError, match="not its domain: give --images"):
        make_bundle(art, tmp_path / "none", archive=False)     # a model that is not shipped: no BUSI default
