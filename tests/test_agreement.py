"""Issue 21: the one agreement comparator, its statistics and the gate (mean floor, tail floor,
enough images for the tail claim); held-out verification by default; overlap warnings; the
manifest records. Real exports of the shipped model on real images."""
import io
import json
import logging
import math
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest

from cmunext_edge.core.agreement import (BAD_IMAGE, GATES, Comparator, clopper_pearson_upper, gate,
                                         min_images)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "cmunext_edge" / "samples" / "busi"
HELDOUT = ROOT / "cmunext_edge" / "samples" / "busi-heldout"
VAL = ROOT / "models" / "cmunext-s-busi.val.txt"
SPLIT = ROOT / "models" / "cmunext-s-busi.split.json"


# --- statistics ------------------------------------------------------------------------------
def _binom_cdf(k, n, p):
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("k,n", [(0, 16), (0, 90), (2, 90), (1, 45), (5, 200)])
def test_clopper_pearson_upper_bound_is_exact(k, n):
    bound = clopper_pearson_upper(k, n)
    assert abs(_binom_cdf(k, n, bound) - 0.05) < 1e-6          # the definition of the one-sided bound
    if k == 0:
        assert bound == pytest.approx(1 - 0.05 ** (1 / n))
    assert clopper_pearson_upper(k + 1, n) > bound > k / n


def test_enough_images_rules_out_twice_the_tail_floor():
    for precision, g in GATES.items():
        n = min_images(precision)
        assert clopper_pearson_upper(0, n) <= 2 * g.tail < clopper_pearson_upper(0, n - 1)
    assert clopper_pearson_upper(0, 16) > 0.17               # the 16 bundled samples


def _logits(n, rng, size=32):
    """n one-class logit maps: a bright disc (positive) on a negative background."""
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, r = rng.integers(10, 22, 2).tolist() + [int(rng.integers(5, 9))]
        out.append(np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 3.0, -3.0)[None])
    return np.stack(out).astype(np.float32)


def _erode_to(logit: np.ndarray, below: float) -> np.ndarray:
    """A copy of a one-class logit map with the top rows of its mask removed until its mask Dice
    with the original first drops below `below` (a partial flip, as INT8 near the threshold does)."""
    from cmunext_edge.core.metrics import iou_dice
    out = logit.copy()
    for row in range(out.shape[1]):
        out[0, row][out[0, row] > 0] = -3.0
        if iou_dice(out > 0, logit > 0)[1] < below:
            return out
    raise AssertionError("no mask to erode")


def test_tail_floor_fails_an_artifact_whose_mean_passes():
    rng = np.random.default_rng(0)
    ref = _logits(100, rng)
    out = ref.copy()
    for i in (3, 17, 41, 60, 88):            # five images partly flipped: agreement just below 0.90
        out[i] = _erode_to(ref[i], BAD_IMAGE)
    comp = Comparator()
    comp.add(out, ref, [f"img{i}" for i in range(100)])
    s = comp.summary()
    d = s["distribution"]
    assert d["n"] == 100 and d["n_bad"] == 5 and d["worst"] < BAD_IMAGE
    assert d["worst_image"] in ("img3", "img17", "img41", "img60", "img88")
    assert d["bad_share_upper95"] == pytest.approx(clopper_pearson_upper(5, 100))
    assert d["worst"] <= d["p5"] <= 1.0 and d["mean_lower95"] <= d["mean"]
    assert s["mask_dice_agreement"] == pytest.approx(np.mean(comp.per_image))
    assert s["mask_dice_agreement"] >= GATES["int8"].mean
    decision = gate(s, "int8")              # the mean floor holds; the tail floor fails it
    assert not decision["passed"] and "mean" not in decision["failure"]
    assert "5 of 100 images (5.0%) below 0.9" in decision["failure"] and "tail floor 3%" in decision["failure"]
    only3 = ref.copy()
    only3[[3, 17, 41]] = out[[3, 17, 41]]
    three = Comparator()
    three.add(only3, ref)
    assert gate(three.summary(), "int8")["passed"]          # 3 of 100 bad: within the 3% floor
    clean = Comparator()
    clean.add(ref, ref)
    assert gate(clean.summary(), "int8")["verified"]


def test_a_bound_wider_than_the_tail_claim_passes_but_is_not_verified():
    """1 flipped image in 74 (the shipped INT8 IR's record): 1.4% below 0.90 passes the 3% floor,
    but the 95% bound, 6.3%, is above the 6% a verified tail claim means: not verified."""
    rng = np.random.default_rng(2)
    ref = _logits(74, rng)
    out = ref.copy()
    out[5] = _erode_to(ref[5], BAD_IMAGE)
    one = Comparator()
    one.add(out, ref)
    decision = gate(one.summary(), "int8")
    assert decision["passed"] and not decision["verified"]
    assert "1 of 74 images below 0.9" in decision["claim"] and "6.3%" in decision["claim"]
    assert "above the 6%" in decision["claim"]
    ref150 = _logits(150, rng)                           # 1 bad image among 150: bound 3.1%, verified
    out150 = ref150.copy()
    out150[5] = _erode_to(ref150[5], BAD_IMAGE)
    more = Comparator()
    more.add(out150, ref150)
    assert gate(more.summary(), "int8")["verified"]


def test_too_few_images_pass_but_are_not_verified():
    rng = np.random.default_rng(1)
    ref = _logits(16, rng)
    comp = Comparator()
    comp.add(ref, ref)
    decision = gate(comp.summary(), "int8")
    assert decision["passed"] and not decision["verified"]
    assert "only 16 images" in decision["claim"] and f"at least {min_images('int8')}" in decision["claim"]


def test_per_class_statistics_for_several_classes():
    rng = np.random.default_rng(2)
    ref = np.concatenate([_logits(50, rng), _logits(50, rng)], axis=1)       # 2 classes
    out = ref.copy()
    out[:4, 1] *= -1                                                          # class 1 flips on 4
    comp = Comparator()
    comp.add(out, ref)
    s = comp.summary()
    assert len(s["per_class_distribution"]) == 2
    assert s["per_class_distribution"][0]["n_bad"] == 0 and s["per_class_distribution"][1]["n_bad"] == 4
    assert s["per_class_agreement"][1] < s["per_class_agreement"][0] == 1.0


# --- held out by default -----------------------------------------------------------------------
def test_packaged_heldout_images_are_the_shipped_models_validation_images():
    from cmunext_edge.data.discovery import discover, read_name_list
    from cmunext_edge.data.model_split import training_images
    names = {s.name for s in discover(HELDOUT)}
    split = json.loads(SPLIT.read_text())
    val = set(read_name_list(VAL))
    assert val == set(split["val"]) and len(val) == 90 and names < val and len(names) == 64
    assert not names & set(split["train"])
    # the 26 validation images left out are near copies of training images; the 64 are not
    busi = ROOT.parent / "shared" / "data" / "busi-train"
    left_out = [s for s in discover(busi) if s.name in val - names]
    assert training_images(left_out, SPLIT) == val - names and not training_images(discover(HELDOUT), SPLIT)
    bundled = {s.name for s in discover(SAMPLES)}
    assert bundled <= val                      # the 16 bundled samples are validation images too


@pytest.mark.parametrize("folder", ["busi-heldout", "busi-calib"])
def test_packaged_images_give_the_tensors_of_the_originals(busi, folder):
    """The held-out (verification) and calibration images, stored at network size, preprocess to
    exactly the originals' tensors and ground truth."""
    from cmunext_edge.checkpoints.weights import load_checkpoint
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.data.groundtruth import load_truth
    spec = load_checkpoint(ROOT / "models" / "cmunext-s-busi.safetensors").spec
    stored = {s.name: s for s in discover(HELDOUT.parent / folder)}
    for s in [s for s in discover(busi) if s.name in stored][::11]:
        assert np.array_equal(spec(stored[s.name].image), spec(s.image))
        assert np.array_equal(load_truth(stored[s.name], 1, spec.size), load_truth(s, 1, spec.size))


def _plan_sets(weights, **options):
    """The calibration and verification sets an export would use, and its log (nothing built)."""
    from cmunext_edge.export.options import ExportOptions
    from cmunext_edge.export.pipeline import _image_sets, _plan
    logs = []
    job = _plan(weights, ExportOptions(**options), logs.append)
    calib, verify = _image_sets(job)
    return calib, verify, logs


def test_default_int8_verification_is_held_out_and_disjoint_from_calibration(trained, tmp_path):
    pytest.importorskip("nncf")
    calib, verify, logs = _plan_sets(trained, target="openvino", precision="int8", out=tmp_path)
    calib_names = {s.name for s in calib.samples}
    verify_names = {s.name for s in verify.samples}
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.resources import CALIB_DIR
    # the default calibration images: 64 of the shipped model's training images, so all 64 held-out verify
    assert calib_names == {s.name for s in discover(CALIB_DIR)} and len(calib_names) == 64
    assert calib_names <= set(json.loads(SPLIT.read_text())["train"])
    assert not calib_names & verify_names and len(verify_names) == 64
    assert verify.plan.origin == "held-out validation images" and verify.plan.held_out
    assert verify.overlap == {"calibration": [], "training": []}
    assert not any(m.startswith("warning") for m in logs)


def test_overlapping_verify_data_is_left_out_or_warned_about(trained, busi, tmp_path):
    pytest.importorskip("nncf")
    calib, verify, logs = _plan_sets(trained, target="openvino", precision="int8", out=tmp_path, calib=SAMPLES,
                                     verify_data=SAMPLES, calib_size=4, verify_size=6)
    # other images are known: the ones that calibrated the model are left out, and said so
    assert verify.overlap["left_out"] and not verify.overlap["calibration"] and len(verify) == 6
    assert not {s.name for s in verify.samples} & {s.name for s in calib.samples}
    assert any("left out, verifying on the others" in m for m in logs)
    _, verify, logs = _plan_sets(trained, target="onnx", out=tmp_path, verify_data=busi, split=None,
                                 verify_size=5)
    # the shipped model's split is known: --verify-data holding its validation images uses that list
    assert verify.plan.split == str(SPLIT) and {s.name for s in verify.samples} <= set(json.loads(SPLIT.read_text())["val"])
    names_file = tmp_path / "some.txt"
    train_names = json.loads(SPLIT.read_text())["train"][:3]
    names_file.write_text("\n".join(train_names) + "\n")
    _, verify, logs = _plan_sets(trained, target="onnx", out=tmp_path, verify_data=busi, split=names_file)
    assert sorted(s.name for s in verify.samples) == sorted(train_names) and len(verify) == 3
    assert verify.overlap["training"] and any("are training images of this model" in m for m in logs)


def test_split_needs_verify_data(trained, tmp_path):
    from cmunext_edge.export.targets import ExportUsageError
    with pytest.raises(ExportUsageError, match="--split chooses images of --verify-data"):
        _plan_sets(trained, target="onnx", out=tmp_path, split=VAL)


# --- real exports: manifest records ------------------------------------------------------------
def test_export_on_few_images_is_not_called_verified(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from cmunext_edge.artifacts.info import describe_artifact, verification_line
    from cmunext_edge.export.pipeline import export
    logs = []
    res = export(trained, target="onnx", out=tmp_path, verify_data=SAMPLES, log=logs.append)
    v = res.verification
    assert v["passed"] and not v["verified"] and v["n_images"] == 16
    assert any(m.startswith("warning: NOT verified: only 16 images") for m in logs)
    entry = json.loads(res.manifest.read_text())["artifacts"][res.artifact.name]
    d = entry["verification"]["distribution"]
    assert d["n"] == 16 and d["bad_share_upper95"] == pytest.approx(1 - 0.05 ** (1 / 16))
    assert {"p5", "worst", "worst_image", "n_bad", "mean_lower95"} <= set(d)
    info = describe_artifact(res.artifact)
    assert "NOT verified (too few images)" in verification_line(info["verification"], info["in_manifest"])


def test_no_verify_export_warns(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from cmunext_edge.export.pipeline import export
    logs = []
    res = export(trained, target="onnx", out=tmp_path, verify=False, log=logs.append)
    assert res.verification is None and any(m.startswith("warning: --no-verify") for m in logs)


# --- quiet toolchains, hints -------------------------------------------------------------------
def test_toolchain_noise_is_silenced_only_inside_the_scope():
    from cmunext_edge.export.quiet import quiet_toolchains
    err = io.StringIO()
    root_handlers = list(logging.getLogger().handlers)
    with redirect_stderr(err):
        with quiet_toolchains():
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler):
                    h.setStream(err)
            logging.warning("Axis 1 is out-of-range for weight 'w' with rank 1")
            logging.getLogger("nncf").info("INFO: statistics collection")
            logging.warning("something else")
    text = err.getvalue()
    assert "out-of-range" not in text and "statistics collection" not in text and "something else" in text
    assert logging.getLogger().handlers == root_handlers and not logging.getLogger().filters


def test_gate_hint_names_only_settings_a_user_can_set():
    from cmunext_edge.capabilities import detect
    from cmunext_edge.cli.export import build_parser
    from cmunext_edge.export.int8_recipe import gate_failure_hint
    from cmunext_edge.export.options import ExportOptions
    flags = {o for a in build_parser()._actions for o in a.option_strings}
    for target in ("openvino", "onnxruntime"):
        hint = gate_failure_hint(target, "int8", "cpu", ExportOptions(nncf={"overflow_fix": "first_layer"}),
                                 caps=detect())
        assert "preset" not in hint
        for item in hint.split("Try:")[1].split(";"):
            assert "={" not in item or "Python: export(" in item
            for flag in (w.strip("().,") for w in item.split() if w.startswith("--")):
                assert flag in flags, flag


# --- device bundles ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_onnx(trained, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from cmunext_edge.export.pipeline import export
    return export(trained, target="onnx", out=tmp_path_factory.mktemp("onnx"), verify_data=SAMPLES,
                  log=lambda m: None).artifact


def test_bundle_carries_enough_images_for_the_tail_claim(shipped_onnx, tmp_path):
    from cmunext_edge.device.bundle import make_bundle
    from cmunext_edge.device.check import run_check
    res = make_bundle(shipped_onnx, tmp_path, archive=False)
    assert res.manifest["images"] == {"source": str(HELDOUT), "n": min_images("fp32"), "without_mask_not_used": 0,
                                      "artifact_calibration_images": 0, "calibration_overlap": 0,
                                      "calibration_not_used": 0, "training_not_used": 0, "training_overlap": 0,
                                      "training_list": str(SPLIT)}
    rep = run_check(res.folder, iters=2, warmup=1)
    agr = rep["agreement"]
    assert rep["passed"] and agr["verified"] and agr["distribution"]["n"] == min_images("fp32")
    few = make_bundle(shipped_onnx, tmp_path / "few", n_images=5, archive=False)
    agr = run_check(few.folder, iters=2, warmup=1)["agreement"]
    assert not agr["verified"] and "only 5 images" in agr["claim"]


def _dataset(folder: Path, images: dict) -> Path:
    """An official-layout dataset at `folder` of {new name: (image, mask)}."""
    import shutil
    for sub in ("images", "masks/0"):
        (folder / sub).mkdir(parents=True)
    for name, (image, mask) in images.items():
        shutil.copy(image, folder / "images" / f"{name}.png")
        shutil.copy(mask, folder / "masks" / "0" / f"{name}.png")
    return folder


def test_bundle_leaves_out_the_models_training_images_and_check_says_when_it_could_not(shipped_onnx, busi, tmp_path, capsys):
    """`cmunext-bundle --images` of a dataset holding the model's training images took them (38 of
    49) and cmunext-check called the artifact verified on them. Now training images (by name, or
    renamed: by pixel fingerprint) are left out and counted; with nothing else there they are used,
    and the check says the figures are not held out."""
    from cmunext_edge.cli.bundle import images_line
    from cmunext_edge.device.bundle import make_bundle
    from cmunext_edge.device.check import run_check
    train = json.loads(SPLIT.read_text())["train"][:3]
    trained = {f"copy_{k}": (busi / "images" / f"{n}.png", busi / "masks" / "0" / f"{n}.png") for k, n in enumerate(train)}
    held = {p.stem: (p, SAMPLES / "masks" / "0" / p.name) for p in sorted((SAMPLES / "images").glob("*.png"))[:3]}
    mixed = _dataset(tmp_path / "mixed", {**trained, **held})
    res = make_bundle(shipped_onnx, tmp_path / "b1", images=mixed, n_images=6, archive=False)
    used = res.manifest["images"]
    assert used["n"] == 3 and used["training_not_used"] == 3 and used["training_overlap"] == 0, used
    assert used["without_mask_not_used"] == 0 and sorted(r["name"] for r in res.manifest["references"]) == sorted(held)
    assert "3 training image(s) of the model" in images_line(used) and "warning" not in images_line(used)
    only = _dataset(tmp_path / "only", trained)
    res = make_bundle(shipped_onnx, tmp_path / "b2", images=only, archive=False)
    assert res.manifest["images"]["training_overlap"] == 3 and "not held out" in images_line(res.manifest["images"])
    agr = run_check(res.folder, iters=1, warmup=0)["agreement"]
    assert agr["verified"] is False and agr["claim"].startswith("not held out: 3 of its 3 images trained the model")


def test_the_claim_names_how_many_images_a_bad_one_needs_and_how_to_give_them():
    """'give --verify-data at least 49' was said after a bad image too (78 are needed then), and
    by cmunext-check, which has no --verify-data."""
    from cmunext_edge.core.agreement import distribution, images_needed
    assert [images_needed(k, "int8") for k in (0, 1, 2)] == [49, 78, 103]
    for k in (1, 2):
        assert clopper_pearson_upper(k, images_needed(k, "int8")) <= 0.06 < clopper_pearson_upper(k, images_needed(k, "int8") - 1)
    one_bad = distribution(np.r_[np.ones(44), 0.5])
    said = gate({"distribution": one_bad}, "int8")["claim"]
    assert "give --verify-data at least 78 held-out images" in said and "49 would do with none" in said, said
    said = gate({"distribution": one_bad}, "int8", more_images="a re-bundle (cmunext-bundle --n-images N)")["claim"]
    assert "give a re-bundle (cmunext-bundle --n-images N) at least 78" in said and "--verify-data" not in said


def test_bundle_of_another_model_needs_its_own_images(ckpt_s, tmp_path):
    pytest.importorskip("onnxruntime")
    from cmunext_edge.device.bundle import BundleError, make_bundle
    from cmunext_edge.export.pipeline import export
    art = export(ckpt_s, target="onnx", out=tmp_path, verify=False, log=lambda m: None).artifact
    with pytest.raises(BundleError, match="not exported from a shipped model.*--images"):
        make_bundle(art, tmp_path / "b", archive=False)
    res = make_bundle(art, tmp_path / "b", images=SAMPLES, n_images=2, archive=False)
    assert res.manifest["images"]["n"] == 2


def test_nan_logits_fail_the_gate_and_never_read_as_agreement():
    rng = np.random.default_rng(3)
    ref = _logits(60, rng)
    out = ref.copy()
    out[5][ref[5] < 0] = np.nan              # NaN only off the mask: thresholded masks still match
    comp = Comparator()
    comp.add(out, ref, [f"img{i}" for i in range(60)])
    s = comp.summary()
    assert math.isnan(s["max_abs_logit_delta"]) and s["nonfinite_images"] == 1
    assert s["nonfinite_image_names"] == ["img5"]
    assert s["mask_dice_agreement"] < 1.0 and s["distribution"]["worst_image"] == "img5"
    decision = gate(s, "fp32")
    assert not decision["passed"] and not decision["verified"]
    assert "1 of 60 images have NaN or infinite logits (first: img5)" in decision["failure"]
    nan_ref = Comparator()                   # a NaN reference (e.g. NaN weights) fails as well
    nan_ref.add(ref[:2], np.full_like(ref[:2], np.nan))
    assert "NaN or infinite" in gate(nan_ref.summary(), "int8")["failure"]
    clean = Comparator()
    clean.add(ref, ref)
    summary = {**clean.summary(), "max_abs_logit_delta": float("nan")}   # a record with a NaN delta
    assert "max |delta logit| is NaN" in gate(summary, "fp32")["failure"]
    assert clean.summary()["nonfinite_images"] == 0 and gate(clean.summary(), "fp32")["passed"]


def test_near_misses_are_reported_but_do_not_gate():
    """Both masks empty but the artifact's largest logit just under the threshold (the benign (304)
    case on emulated ARM): reported as a near miss with both logits; a far-off empty pair or a
    real disagreement is not one, and the gate's decision is unchanged."""
    from cmunext_edge.export.verify import compare, format_figures
    ref = np.full((3, 1, 8, 8), -3.0, np.float32)
    out = ref.copy()
    out[0, 0, 2, 2] = -0.006                 # near miss: masks agree (both empty)
    out[1, 0, 2, 2] = -1.0                   # farther than NEAR_MISS_LOGIT: nothing to report
    comp = Comparator()
    comp.add(out, ref, ["near", "far", "same"])
    s = comp.summary()
    assert s["mask_dice_agreement"] == 1.0 and s["n_near_misses"] == 1
    assert s["near_misses"] == [{"image": "near", "class": 0, "max_logit": -0.006, "reference_max_logit": -3.0}]
    assert gate(s, "int8")["passed"] == gate({**s, "n_near_misses": 0, "near_misses": []}, "int8")["passed"]
    drawn = out.copy()
    drawn[0, 0, 2, 2] = 0.5                  # a drawn pixel is a disagreement, not a near miss
    other = Comparator()
    other.add(drawn, ref, ["near", "far", "same"])
    assert other.summary()["n_near_misses"] == 0 and other.summary()["distribution"]["n_bad"] == 1
    line = format_figures(compare(out, ref, None, "int8", ["near", "far", "same"]))
    assert "1 near miss(es)" in line and "near -0.006 (PyTorch -3.00)" in line
    assert "near miss" not in format_figures(compare(ref, ref, None, "int8", ["a", "b", "c"]))
    from cmunext_edge.cli.check import summary as check_line          # the device check says it too
    from cmunext_edge.device.check import _agreement
    agr = _agreement(out, ref, ["near", "far", "same"])
    assert agr["n_near_misses"] == 1 and agr["near_misses"][0]["image"] == "near"
    report = {"bundle": {"backend": "openvino", "precision": "int8"}, "signature": "unsigned",
              "agreement": {**agr, "verified": False, "claim": "few images"}}
    assert "1 near miss(es): both masks empty, device's largest logit within 0.25 of the threshold " \
           "(first: near -0.006)" in check_line(report)
    assert "near miss" not in check_line({**report, "agreement": {**_agreement(ref, ref), "claim": "-"}})


def test_bench_agreement_on_training_images_is_not_called_verified(shipped_onnx, busi, tmp_path, capsys):
    """cmunext-bench --data of (renamed) training images recorded agreement.verified True. Now the
    row's claim says the images are not held out, from the reference model's split.json; a near copy
    (here one resized by 3%) counts too, and the claim says so (it said they all trained the model)."""
    from cmunext_edge.cli import bench as bench_cli
    train = json.loads(SPLIT.read_text())["train"][:3]
    data = _dataset(tmp_path / "trainren", {f"copy_{k}": (busi / "images" / f"{n}.png", busi / "masks" / "0" / f"{n}.png")
                                            for k, n in enumerate(train)})
    import cv2
    for sub in ("images", "masks/0"):           # copy_0 becomes a near copy: another size, other pixels
        f = data / sub / "copy_0.png"
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(f), cv2.resize(img, (img.shape[1] * 97 // 100, img.shape[0] * 97 // 100),
                                       interpolation=cv2.INTER_AREA if sub == "images" else cv2.INTER_NEAREST))
    assert bench_cli.main([str(shipped_onnx), "--data", str(data), "--reference", "cmunext-s-busi", "--iters", "1", "--warmup", "0",
                           "--throughput-time", "0", "--json", str(tmp_path / "b.json")]) == 0
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert row["agreement"]["verified"] is False and row["agreement"]["claim"].startswith(
        "not held out: 3 of its 3 images trained the model"), row["agreement"]
    out = " ".join(capsys.readouterr().out.split())          # the notes are wrapped to the terminal
    assert f"AGREEMENT DATA ({row['label']}): not held out: 3 of its 3 images trained the model or are near " \
           f"copies of its training images" in out, out


def test_verify_data_checked_against_the_training_list_is_recorded_held_out(shipped_onnx):
    """--verify-data without --split was recorded held_out null even when the model's training
    list was known and none of the images was in it (by name or fingerprint): now true."""
    from cmunext_edge.artifacts.manifest import manifest_entry
    data = manifest_entry(shipped_onnx)["verification"]["data"]
    assert data["training_list"] and data["overlap"] == {"calibration": [], "training": []}
    assert data["held_out"] is True


def test_a_resized_jpeg_copy_of_a_training_image_counts_as_seen(tmp_path):
    """A near copy (half size, JPEG q50, renamed) of a training image is a training image for every
    held-out judgment; a held-out image is not; distinct BUSI scans stay apart."""
    import cv2
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.data.fingerprint import NEAR_COPY_BITS, Seen, image_fingerprint, lookalike_hash
    from cmunext_edge.data.model_split import training_images
    from cmunext_edge.export.verify_data import overlaps, plan_verification
    from cmunext_edge.fileio import sha256_file
    from cmunext_edge.resources import resolve_weights
    busi = ROOT.parent / "shared" / "data" / "busi-train" / "images"
    split = json.loads(SPLIT.read_text())
    train = cv2.imread(str(busi / f"{split['train'][0]}.png"))
    held = cv2.imread(str(HELDOUT / "images" / sorted(p.name for p in (HELDOUT / "images").iterdir())[0]))
    (tmp_path / "images").mkdir()
    copy = cv2.resize(train, (train.shape[1] // 2, train.shape[0] // 2))
    cv2.imwrite(str(tmp_path / "images" / "renamed.jpg"), copy, [cv2.IMWRITE_JPEG_QUALITY, 50])
    cv2.imwrite(str(tmp_path / "images" / "fresh.png"), held)
    assert training_images(discover(tmp_path), SPLIT) == {"renamed"}
    plan = plan_verification(tmp_path, None, sha256_file(resolve_weights("cmunext-s-busi")))
    prints = {"renamed": image_fingerprint(cv2.imread(str(tmp_path / "images" / "renamed.jpg"))),
              "fresh": image_fingerprint(held)}
    assert overlaps(["renamed", "fresh"], [], plan, prints) == {"calibration": [], "training": ["renamed"]}
    assert Seen.of([image_fingerprint(train)]).holds(prints["renamed"])
    other = cv2.imread(str(busi / f"{split['train'][1]}.png"))
    assert (int(lookalike_hash(train), 16) ^ int(lookalike_hash(other), 16)).bit_count() > NEAR_COPY_BITS


def test_a_not_held_out_claim_keeps_the_too_few_images_reason():
    from cmunext_edge.core.agreement import withdraw_verified
    record = {"passed": True, "verified": False, "claim": "only 12 images: give at least 49"}
    withdraw_verified(record, ("not held out", "3 of its 12 images trained the model"), "verify on others")
    assert record["claim"].startswith("not held out: 3 of its 12") and record["claim"].endswith(
        "; and only 12 images: give at least 49")


def test_int8_of_another_model_without_calib_says_what_calibrated_it(trained, tmp_path):
    pytest.importorskip("nncf")
    from cmunext_edge.checkpoints.weights import load_checkpoint, save_safetensors
    sd = {k: (v * 1.001 if v.is_floating_point() else v) for k, v in load_checkpoint(trained).state_dict.items()}
    mine = save_safetensors(sd, tmp_path / "mine.safetensors")          # not a shipped model
    _, _, logs = _plan_sets(mine, target="openvino", precision="int8", out=tmp_path, calib_size=2, verify_size=2)
    assert any(m.startswith("warning: no --calib: the INT8 model is calibrated on the bundled BUSI") for m in logs)
    _, _, logs = _plan_sets(trained, target="openvino", precision="int8", out=tmp_path, calib_size=2, verify_size=2)
    assert not any("no --calib" in m for m in logs)                      # the shipped model: its own domain
