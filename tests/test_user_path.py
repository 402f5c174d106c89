"""A new user's path (issue 16): verification on the model's own data, reports that say what they
measured against, a bench table that fits the terminal, help that runs, cmunext-info on artifacts,
runtime-sized extras."""
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cmunext_edge.artifacts.meta import (build_metadata, check_selftest, make_selftest, selftest_input)
from cmunext_edge.bench.report import COLUMNS, format_table, honest_dice_axis, verification
from cmunext_edge.cli.info import main as info_main
from cmunext_edge.export.verify_data import BUNDLED, CALIBRATION, HELD_OUT, VERIFY_DATA, plan_verification
from cmunext_edge.fileio import sha256_file
from cmunext_edge.core.preprocess import PreprocessSpec

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "cmunext-s-busi.safetensors"
SAMPLES = ROOT / "cmunext_edge" / "samples" / "busi"


# --- 1. verification data ------------------------------------------------------------------
def test_verification_plan_prefers_verify_data_then_held_out_then_calib_then_bundled():
    assert plan_verification("mine/", "calib/", "x" * 64).origin == VERIFY_DATA
    plan = plan_verification(None, "calib/", "x" * 64)
    assert plan.origin == CALIBRATION and plan.source == "calib/" and plan.ground_truth
    foreign = plan_verification(None, None, "0" * 64)
    assert foreign.origin == BUNDLED and not foreign.ground_truth and "not this model's domain" in foreign.note
    if SHIPPED.is_file():          # the shipped model: its own held-out validation images, even with --calib
        for calib in (None, "calib/"):
            own = plan_verification(None, calib, sha256_file(SHIPPED))
            assert own.origin == HELD_OUT and own.ground_truth and own.held_out and "cmunext-s-busi" in own.note


def test_off_domain_export_verifies_on_given_data_with_ground_truth(ckpt_s, tmp_path):
    pytest.importorskip("onnxruntime")
    from cmunext_edge.export.pipeline import export
    logs = []
    res = export(ckpt_s, target="onnx", out=tmp_path, calib_size=3, verify_data=SAMPLES, log=logs.append)
    v = res.verification
    assert v["data"]["origin"] == VERIFY_DATA and v["dice_vs_ground_truth"] is not None
    assert not any("not this model's domain" in m for m in logs)
    assert any("vs PyTorch FP32 on 3 images of busi (--verify-data)" in m for m in logs)
    assert not any(m.startswith("calibration set") for m in logs)        # fp32: no calibration
    entry = json.loads(res.manifest.read_text())["artifacts"][res.artifact.name]
    assert entry["verification"]["data"]["source"] == str(SAMPLES)


# --- 2. reports say what they measured against ----------------------------------------------
def test_selftest_says_it_compares_with_the_export_time_output():
    spec = PreprocessSpec()
    x = selftest_input(spec)
    logits = np.tanh(x[:, :1] * 3)
    st = make_selftest(spec, logits, "int8")
    res = check_selftest(st, spec, lambda _: logits)
    assert res.passed and "same as at export" in res.message and "not with PyTorch" in res.message


def _row(label, p50, dice, artifact, precision="fp32", agree=None):
    return {"label": label, "device": "cpu", "latency_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50,
            "std": 0.1}, "fps_batch1": 1000 / p50, "preprocess_ms": 0.5, "postprocess_ms": 0.2,
            "dice": dice, "agreement_dice": agree, "artifact": str(artifact), "precision": precision,
            "artifact_mb": 1.0, "error": None}


def _report(rows):
    return {"machine": {"cpu": "test cpu", "usable_cores": 2, "load_average": [0.1]}, "rows": rows}


def test_bench_marks_unverified_rows(tmp_path):
    art = tmp_path / "m_int8.xml"
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {
        art.name: {"files": [], "precision": "int8", "verification": None},      # every entry lists its files
        "ok.onnx": {"files": [], "precision": "fp32", "verification": {"passed": True}}}}))
    assert verification(_row("a", 1.0, 0.6, art, "int8")) == "NO"
    assert "--no-verify" in verification(_row("a", 1.0, 0.6, art, "int8"), long=True)
    assert verification(_row("b", 1.0, 0.6, tmp_path / "ok.onnx")) == "yes"
    assert verification(_row("b", 1.0, 0.6, tmp_path / "ok.onnx", agree=0.98)) == "NO"   # < fp32 floor
    assert verification(_row("c", 1.0, 0.6, tmp_path / "w.safetensors")) == "ref"
    # an FP32 artifact run at bf16 (OpenVINO's default where BF16 is native) meets the bf16 floor
    assert verification(_row("b", 1.0, 0.6, tmp_path / "ok.onnx", "bf16", agree=0.9985)) == "yes"
    low = verification(_row("b", 1.0, 0.6, tmp_path / "ok.onnx", "bf16", agree=0.985), long=True)
    assert low.startswith("NO") and "0.99 (bf16, as run; exported fp32)" in low
    text = format_table(_report([_row("m_int8.xml openvino/cpu/int8", 1.0, 0.6, art, "int8")]), width=200)
    assert "UNVERIFIED m_int8.xml" in text


def test_dice_axis_is_never_zoomed_to_thousandths():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.scatter([1, 2, 3], [0.5958, 0.5970, 0.5985])
    lo, hi = honest_dice_axis(ax)
    assert hi - lo >= 0.1 and lo <= 0.5958 and hi >= 0.5985
    ax.scatter([1], [0.999])
    lo, hi = honest_dice_axis(ax)
    assert hi <= 1.0 and hi - lo >= 0.1
    plt.close(fig)


# --- 3. a table that fits the terminal ------------------------------------------------------
@pytest.mark.parametrize("width", [80, 100, 140])
def test_bench_table_fits_the_terminal_and_wide_shows_everything(tmp_path, width, monkeypatch):
    rows = [_row("cmunext-s-busi_int8_transformer_dense.xml openvino/cpu/int8 [threads=2]", 3.21, 0.7731,
                 tmp_path / "x.xml", "int8", 0.98),
            _row("cmunext-s-busi.safetensors pytorch/cpu/fp32", 12.5, 0.7802, tmp_path / "w.safetensors")]
    table = format_table(_report(rows), width=width).split("\n\n")[0].splitlines()
    assert max(len(line) for line in table) <= width and table[0].startswith("configuration")
    assert "p50 ms" in table[0] and "columns hidden" in table[-1]
    monkeypatch.setenv("COLUMNS", str(width))
    assert format_table(_report(rows)).split("\n\n")[0] == "\n".join(table)        # $COLUMNS honoured
    wide = format_table(_report(rows), wide=True).splitlines()[0]
    assert all(h in wide for h, _ in COLUMNS)


# --- 4. help that runs as written -----------------------------------------------------------
def _help(main) -> str:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["--help"])
    return buf.getvalue()


def test_help_examples_point_at_real_files_and_show_defaults():
    from cmunext_edge.cli import bench, export, info, predict, train
    text = {m.__name__: _help(m.main) for m in (bench, export, info, predict, train)}
    for name, out in text.items():
        assert "../shared" not in out, name
        for path in re.findall(r"(?:models|cmunext_edge/samples)/[\w./-]+", out):
            assert (ROOT / path.rstrip(".")).exists(), (name, path)
    assert "(default: 300)" in text["cmunext_edge.cli.train"] and "--epochs 90" in text["cmunext_edge.cli.train"]


def test_resume_with_changed_schedule_says_what_happens():
    pytest.importorskip("torch")
    from cmunext_edge.train.recipe import TrainConfig, schedule_change
    cfg = TrainConfig(data="d", out="o", epochs=20)
    assert schedule_change({"epochs": 20, "lr": 0.01, "batch_size": 8}, cfg, 5, 80) is None
    note = schedule_change({"epochs": 10, "lr": 0.01, "batch_size": 8}, cfg, 5, 80)
    assert "--epochs 10 -> 20" in note and "recomputed" in note
    old, new = (float(v) for v in re.findall(r"learning rate is ([\d.e-]+) instead of ([\d.e-]+)", note)[0][::-1])
    assert old == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-2) and new == pytest.approx(0.01 * 0.75 ** 0.9, rel=1e-2)
    assert "nothing left" in schedule_change({"epochs": 10}, TrainConfig(data="d", out="o", epochs=4), 5, 80)


def test_accuracy_control_candidate_is_skipped_without_masks(tmp_path):
    from cmunext_edge.export.auto import CANDIDATES, skip_reason
    by_name = {c.name: c for c in CANDIDATES}
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.png").write_bytes((SAMPLES / "images" / "benign (100).png").read_bytes())
    assert "needs calibration images with masks" in skip_reason(by_name["ov-int8-accuracy-control"], plain)
    assert skip_reason(by_name["ov-int8-accuracy-control"], None) is None          # bundled: masks
    assert skip_reason(by_name["ov-int8-accuracy-control"], SAMPLES) is None
    assert skip_reason(by_name["ort-fp32"], plain) is None


# --- 5. cmunext-info on artifacts ---------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    if not SHIPPED.is_file():
        pytest.skip("no shipped model")
    from cmunext_edge.export.pipeline import export
    out = tmp_path_factory.mktemp("info")
    onnx = export(SHIPPED, target="onnx", out=out, calib_size=2, log=lambda m: None)
    ov = export(SHIPPED, target="openvino", precision="fp16", out=out, verify=False, log=lambda m: None)
    return onnx.artifact, ov.artifact


def test_info_describes_onnx_and_openvino_artifacts(exported, capsys):
    onnx, ov = exported
    assert info_main([str(onnx), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["format"], d["precision"], d["variant"], d["num_classes"]) == ("ONNX", "fp32", "cmunext-s", 1)
    assert d["verification"]["passed"] and d["input_shape"] == [1, 3, 256, 256] and d["selftest"]
    assert info_main([str(ov)]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO IR" in out and "fp16" in out and "NOT verified at export" in out and ".bin" in out


def test_info_on_artifacts_without_torch(exported):
    from test_no_torch import run_without_torch
    for art in exported:
        done = run_without_torch("info", art)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "cmunext-s" in done.stdout and "verification" in done.stdout


def test_info_reads_a_tensorrt_sidecar(tmp_path, capsys):
    engine = tmp_path / "m_fp16.engine"
    engine.write_bytes(b"\0plan")
    meta = build_metadata(spec=PreprocessSpec(), variant="cmunext-s", in_channels=3, num_classes=1,
                          source_sha256="a" * 64, precision="fp16", target="tensorrt")
    (tmp_path / "m_fp16.engine.json").write_text(json.dumps(
        {"tensorrt_version": "10.3", "precision": "fp16", "shapes": {"min": [1, 3, 256, 256]}, "metadata": meta}))
    assert info_main([str(engine), "--json"]) == 1       # described, but a load would refuse it: exit 1
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "TensorRT plan" and d["precision"] == "fp16" and d["tensorrt"]["tensorrt_version"] == "10.3"
    assert d["files_check"]["ok"] is False and "integrity cannot be checked" in d["files_check"]["message"]
    assert info_main([str(tmp_path / "none.onnx")]) == 2
    assert capsys.readouterr().err == f"cmunext-info: error: {tmp_path / 'none.onnx'}: no such artifact\n"


# --- 6. extras split by role ------------------------------------------------------------------
def test_runtime_extras_carry_no_export_tooling():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = lambda reqs: {re.split(r"[<>=\[ ]", r)[0] for r in reqs}            # noqa: E731
    assert names(extras["openvino"]) == {"openvino"} and names(extras["onnxruntime"]) == {"onnxruntime"}
    assert "nncf" in names(extras["openvino-export"]) and "onnxslim" in names(extras["onnx-export"])
    from cmunext_edge._deps import EXTRAS
    assert EXTRAS["nncf"] == "openvino-export" and EXTRAS["onnxruntime"] == "onnxruntime"
    assert all(e in extras for e in EXTRAS.values())
