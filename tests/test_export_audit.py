"""Reliability, round six (export): what an audit of cmunext-export's option combinations found.

Verified on images that trained or calibrated the model (a --split of training names was even
recorded as held out); INT8 with --batch 2 failed as "unexpected"; --bundle for a user's model
exited 2 after publishing the artifact; options the target ignores were silently ignored; a
re-export left the previous artifact's signature beside it (then refused as "changed after
signing"); --json stdout was not JSON for INT8; a refused export left its empty --out folder;
--strict-device was checked only after the build."""
import json
from pathlib import Path
import subprocess
import sys

import pytest

from cmunext_edge.cli import export as export_cli
from cmunext_edge.resources import models_dir

from test_reliability import one_error_line, run_cli

pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.mark.parametrize("argv,says", [
    (["--target", "auto", "--fp16"], "--fp16 does not apply to --target auto"),
    (["--target", "auto", "--imgsz", "320"], "--imgsz does not apply to --target auto"),
    (["--target", "auto", "--no-verify"], "it verifies every candidate"),
    (["--target", "onnx", "--threads", "2"], "--threads applies to --target auto only"),
    (["--target", "ov", "--candidates", "ov-fp32"], "--candidates applies to --target auto only"),
    (["--target", "ort", "--int8", "--batch", "2"], "calibration runs one image at a time"),
    (["--target", "onnx", "--no-verify", "--split", "x.txt"], "--no-verify skips verification"),
    (["--target", "ov", "--device", "NPU", "--strict-device"], "--strict-device refuses to verify elsewhere"),
    # --target auto drew its images with seed 0 and never read --strict-device: both were silently ignored
    (["--target", "auto", "--seed", "5"], "--seed does not apply to --target auto"),
    (["--target", "auto", "--strict-device"], "--strict-device does not apply to --target auto"),
])
def test_options_the_request_cannot_honour_are_refused_before_any_work(argv, says, tmp_path, capsys):
    pytest.importorskip("openvino")
    rc, _, err = run_cli(export_cli.main, ["--weights", "cmunext-s-busi", *argv, "--out", tmp_path / "o"], capsys)
    assert rc == 2 and says in one_error_line(err, "cmunext-export"), err
    assert not (tmp_path / "o").exists()


def test_triton_refuses_options_it_would_ignore(onnx_trained, tmp_path, capsys):
    rc, _, err = run_cli(export_cli.main, ["--weights", onnx_trained.artifact, "--target", "triton", "--imgsz", "320",
                                           "--out", tmp_path / "repo"], capsys)
    assert rc == 2 and "--imgsz does not apply to --target triton" in one_error_line(err, "cmunext-export")


def test_bundle_of_a_users_model_is_refused_before_the_export(tmp_path, capsys):
    own = tmp_path / "run" / "best.pth"
    own.parent.mkdir()
    from cmunext_edge.checkpoints.weights import load_checkpoint, save_official_pth
    sd = load_checkpoint(models_dir() / "cmunext-s-busi.safetensors").state_dict
    sd["Conv_1x1.bias"] = sd["Conv_1x1.bias"] * 1.0001                 # not the shipped weights any more
    save_official_pth(sd, own)
    rc, _, err = run_cli(export_cli.main, ["--weights", own, "--target", "onnx", "--bundle", "--out", tmp_path / "o"],
                         capsys)
    assert rc == 2 and "cmunext-bundle ARTIFACT --images" in one_error_line(err, "cmunext-export")
    assert not (tmp_path / "o").exists()


def test_verification_on_training_images_is_not_verified(busi, tmp_path, capsys):
    train = json.loads((models_dir() / "cmunext-s-busi.split.json").read_text())["train"][:60]
    names = tmp_path / "train60.txt"
    names.write_text("\n".join(train))
    rc, out, err = run_cli(export_cli.main, ["--weights", "cmunext-s-busi", "--target", "onnx", "--verify-data", busi,
                                             "--split", names, "--out", tmp_path / "o"], capsys)
    assert rc == 0 and "NOT verified: not held out: 60 of its 60 images trained the model" in err, err
    entry = next(iter(json.loads((tmp_path / "o" / "manifest.json").read_text())["artifacts"].values()))
    v = entry["verification"]
    assert v["passed"] and v["verified"] is False and v["unverified"] == "not held out"
    assert v["data"]["held_out"] is False and len(v["data"]["overlap"]["training"]) == 60


def test_renamed_training_or_calibration_images_are_not_taken_for_held_out_ones(busi, tmp_path, capsys):
    import shutil
    from cmunext_edge.resources import SAMPLES_DIR
    train = json.loads((models_dir() / "cmunext-s-busi.split.json").read_text())["train"][:12]
    renamed = tmp_path / "renamed"
    for sub in ("images", "masks/0"):
        (renamed / sub).mkdir(parents=True)
        for k, name in enumerate(train):          # the same pixels under new names
            shutil.copy(busi / sub / f"{name}.png", renamed / sub / f"scan{k:03d}.png")
    rc, _, err = run_cli(export_cli.main, ["--weights", "cmunext-s-busi", "--target", "onnx", "--verify-data", renamed,
                                           "--out", tmp_path / "o"], capsys)
    assert rc == 0 and "12 of its 12 images trained the model" in err, err
    calib = tmp_path / "calib_renamed"
    for sub in ("images", "masks/0"):
        (calib / sub).mkdir(parents=True)
        for p in sorted((SAMPLES_DIR / sub).glob("*.png")):
            shutil.copy(p, calib / sub / f"c_{p.name}")
    rc, _, err = run_cli(export_cli.main, ["--weights", "cmunext-s-busi", "--target", "ort", "--int8", "--calib",
                                           SAMPLES_DIR, "--verify-data", calib, "--out", tmp_path / "o2"], capsys)
    assert "16 of the 16 verification images also calibrated the INT8 model" in err, err
    if rc == 0:        # passed its gate: said (and recorded) as not verified
        assert "NOT verified" in err, err
        entry = next(iter(json.loads((tmp_path / "o2" / "manifest.json").read_text())["artifacts"].values()))
        assert entry["verification"]["verified"] is False, entry["verification"]
    else:              # refused by its agreement gate on this CPU: exit 2, one line, nothing published
        assert rc == 2 and "disagrees with PyTorch FP32" in one_error_line(err, "cmunext-export"), err
        assert not list((tmp_path / "o2").glob("*.onnx"))


def test_calibration_spares_the_models_validation_images_for_verification(busi, tmp_path, capsys):
    """Before: --calib DS sampled DS's validation images too, and verification on DS then had to
    leave those out (fewer held-out images). Now calibration takes the model's other images; and
    ONNX Runtime, which reads at most 16 of them, records only those 16 as calibration images (it
    listed all 20 drawn, and said 'calibration set: 20 images')."""
    import shutil
    split = json.loads((models_dir() / "cmunext-s-busi.split.json").read_text())
    train, val = split["train"][:20], split["val"][:6]
    data = tmp_path / "ds"
    for sub in ("images", "masks/0"):
        (data / sub).mkdir(parents=True)
        for name in train + val:
            shutil.copy(busi / sub / f"{name}.png", data / sub / f"{name}.png")
    rc, _, err = run_cli(export_cli.main, ["--weights", "cmunext-s-busi", "--target", "ort", "--int8", "--calib", data,
                                           "--calib-size", "20", "--verify-data", data, "--out", tmp_path / "o"], capsys)
    assert rc in (0, 1) and "6 images of --calib are the model's validation images" in err, err
    assert "calibration set: 16 images" in err and "calibrates on at most 16: 16 of the 20 drawn" in err, err
    entry = next(iter(json.loads((tmp_path / "o" / "manifest.json").read_text())["artifacts"].values()))
    calibrated = {Path(f["path"] if isinstance(f, dict) else f).stem for f in entry["calibration"]["files"]}
    from cmunext_edge.data.discovery import seeded_sample
    from cmunext_edge.export.calibration import calibration_samples
    drawn = calibration_samples(data, 20, 0, models_dir() / "cmunext-s-busi.split.json")
    assert calibrated == {s.name for s in seeded_sample(drawn, 16, 0)} and calibrated < set(train), calibrated
    assert entry["calibration"]["size"] == 16 and entry["calibration"]["drawn"] == 20, entry["calibration"]
    v = entry["verification"]
    left_out = set(v["data"]["overlap"]["left_out"])       # the training images, and a near copy of one
    assert set(train) <= left_out and not v["data"]["overlap"]["calibration"], v
    assert v["n_images"] == len(set(val) - left_out) >= 5, v


def test_a_name_given_with_the_targets_suffix_is_not_doubled(tmp_path):
    from cmunext_edge.export.pipeline import export
    res = export("cmunext-s-busi", target="onnx", out=tmp_path, name="model.onnx", verify_size=8)
    assert res.artifact.name == "model.onnx" and "model.onnx" in json.loads((tmp_path / "manifest.json").read_text())[
        "artifacts"]


def test_a_refused_export_removes_the_out_folder_it_made(tmp_path):
    from cmunext_edge.export.pipeline import export

    def interrupt_at_build(message):
        if message.startswith("building"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        export("cmunext-s-busi", target="onnx", out=tmp_path / "new" / "deep", log=interrupt_at_build)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()                                   # a folder that was there stays
    with pytest.raises(KeyboardInterrupt):
        export("cmunext-s-busi", target="onnx", out=tmp_path / "kept", log=interrupt_at_build)
    assert (tmp_path / "kept").is_dir()


def test_a_re_export_that_fails_to_publish_leaves_the_previous_artifact(tmp_path, monkeypatch):
    from cmunext_edge.export import pipeline
    out = tmp_path / "o"
    first = pipeline.export("cmunext-s-busi", target="onnx", out=out, verify_size=8)
    art, manifest = first.artifact, out / "manifest.json"
    before = {p.name: p.read_bytes() for p in (art, manifest)}

    def manifest_fails(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pipeline, "write_manifest", manifest_fails)       # after the new file replaced the old
    with pytest.raises(OSError):
        pipeline.export("cmunext-s-busi", target="onnx", out=out, verify_size=8, opset=18)   # other bytes, same name
    assert {p.name: p.read_bytes() for p in (art, manifest)} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)                      # no staging left


def test_a_re_export_without_a_key_removes_the_old_signature(keys, tmp_path, capsys):
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    out = tmp_path / "o"
    base = ["--weights", "cmunext-s-busi", "--target", "onnx", "--out", out, "--verify-size", "8"]
    assert run_cli(export_cli.main, [*base, "--sign-key", keys["release"][0]], capsys)[0] == 0
    art = out / "cmunext-s-busi_fp32.onnx"
    assert (out / f"{art.name}.sig").is_file()
    rc, _, err = run_cli(export_cli.main, [*base, "--opset", "18"], capsys)       # other bytes, same name
    assert rc == 0 and f"removed {art.name}.sig" in err, err
    assert not (out / f"{art.name}.sig").exists()
    EdgeSegmenter(art).close()                                   # loads: nothing stale beside it


def test_json_stdout_is_json_alone_for_an_int8_export(tmp_path):
    pytest.importorskip("onnxruntime")
    r = subprocess.run([sys.executable, "-m", "cmunext_edge.cli.export", "--weights", "cmunext-s-busi", "--target",
                        "ort", "--int8", "--calib-size", "8", "--no-verify", "--json", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["precision"] == "int8"          # ONNX Runtime's calibration lines went to stderr
    assert "Collecting tensor data" in r.stderr


def test_the_verification_line_counts_the_images_with_masks():
    from cmunext_edge.export.verify import format_figures
    f = {"precision": "fp32", "n_images": 60, "n_ground_truth": 30, "mask_dice_agreement": 1.0,
         "required_agreement": 0.999, "max_abs_logit_delta": 0.0, "dice_vs_ground_truth": 0.8,
         "dice_vs_ground_truth_pytorch": 0.8, "distribution": {}, "runtime": {"precision": "fp32"}}
    assert "Dice vs ground truth (30 images with masks) 0.8000" in format_figures(f)



def _own_dataset(busi, folder, n_inherited: int = 6):
    """A user's dataset: `n_inherited` of the shipped model's training images, renamed, and the 16
    bundled (held-out) samples, official layout."""
    import shutil
    from cmunext_edge.resources import SAMPLES_DIR
    for sub in ("images", "masks/0"):
        (folder / sub).mkdir(parents=True)
    train = json.loads((models_dir() / "cmunext-s-busi.split.json").read_text())["train"][:n_inherited]
    for k, name in enumerate(train):
        shutil.copy(busi / "images" / f"{name}.png", folder / "images" / f"case_{k:02d}.png")
        shutil.copy(busi / "masks" / "0" / f"{name}.png", folder / "masks" / "0" / f"case_{k:02d}.png")
    for image in (SAMPLES_DIR / "images").glob("*.png"):
        shutil.copy(image, folder / "images" / image.name)
        shutil.copy(SAMPLES_DIR / "masks" / "0" / image.name, folder / "masks" / "0" / image.name)
    return folder


def test_a_fine_tune_inherits_its_init_models_training_images(busi, tmp_path, capsys, monkeypatch):
    """A model fine-tuned with --init cmunext-s-busi had seen the shipped model's training images
    too, but its split.json knew only its own: an export verified on 'validation' images that had
    trained the init model, recorded held out. Now split.json records the init model and its
    training fingerprints, training names the validation images among them, and an export, a
    bundle made from another folder and a --no-verify artifact's bundle all leave them out."""
    from cmunext_edge.cli import bundle as bundle_cli
    from cmunext_edge.cli import train as train_cli
    data = _own_dataset(busi, tmp_path / "data")
    run = tmp_path / "run"
    rc, out, err = run_cli(train_cli.main, [data, "--init", "cmunext-s-busi", "--epochs", "1", "--val-fraction", "0.5",
                                            "--batch-size", "4", "--out", run], capsys)
    assert rc == 0, err
    split = json.loads((run / "split.json").read_text())
    shipped = json.loads((models_dir() / "cmunext-s-busi.split.json").read_text())
    assert split["init"]["split"] == str((models_dir() / "cmunext-s-busi.split.json").resolve())
    assert set(shipped["train_fingerprints"]) <= set(split["train_fingerprints"])
    inherited_val = sorted(n for n in split["val"] if n.startswith("case_"))
    assert inherited_val, split["val"]                 # seed 42 puts three of them in validation
    assert f"{len(inherited_val)} of the {len(split['val'])} validation images trained the --init model" in out + err
    said = out + err
    rc, out, err = run_cli(export_cli.main, ["--weights", run / "best.pth", "--target", "onnx", "--verify-data", data,
                                             "--out", tmp_path / "o"], capsys)
    assert rc == 0, err
    entry = next(iter(json.loads((tmp_path / "o" / "manifest.json").read_text())["artifacts"].values()))
    overlap = entry["verification"]["data"]["overlap"]     # left out of verification: the others remain
    assert overlap["left_out"] == inherited_val and overlap["training"] == [], overlap
    assert not set(entry["verification"]["source"]["files"]) & {f"{n}.png" for n in inherited_val}
    assert f"{inherited_val[0]!r}" in said and "init.validation_images_it_trained_on" in said
    assert "left out, verifying on the others" in out + err
    assert split["init"]["validation_images_it_trained_on"] == inherited_val
    assert entry["source"]["split"] == str((run / "split.json").resolve())
    monkeypatch.chdir(tmp_path / "o")            # bundled from elsewhere: the recorded split is absolute
    rc, out, err = run_cli(bundle_cli.main, [next((tmp_path / "o").glob("*.onnx")), "--images", data, "--out",
                                             tmp_path / "b", "--no-archive"], capsys)
    trained = len(split["train"]) + len(inherited_val)        # its own training images and the init model's
    assert rc == 0 and f"{trained} training image(s) of the model" in out, out + err
    refs = json.loads(next((tmp_path / "b").glob("*.bundle/bundle.json")).read_text())["references"]
    assert sorted(r["name"] for r in refs) == sorted(set(split["val"]) - set(inherited_val))
    rc, _, err = run_cli(export_cli.main, ["--weights", run / "best.pth", "--target", "onnx", "--no-verify",
                                           "--out", tmp_path / "o2"], capsys)     # no verification record:
    entry = next(iter(json.loads((tmp_path / "o2" / "manifest.json").read_text())["artifacts"].values()))
    assert rc == 0 and entry["source"]["split"] == str((run / "split.json").resolve())   # a bundle still finds it


def test_a_checkpoint_whose_training_images_are_unknown_is_not_called_verified(ckpt_s, tmp_path, capsys):
    """No split.json beside the checkpoint: the export could not know whether --verify-data had
    trained the model, yet called it verified. Now: passed, 'held-out status unknown'; a --split the
    user names is their statement that those images are held out."""
    from cmunext_edge.resources import SAMPLES_DIR
    for extra, unverified, held_out in (([], "held-out status unknown", None),
                                        (["--split", SAMPLES_DIR / "samples.txt"], "too few images", True)):
        out_dir = tmp_path / ("o" + str(len(extra)))
        rc, _, err = run_cli(export_cli.main, ["--weights", ckpt_s, "--target", "onnx", "--verify-data", SAMPLES_DIR,
                                               *extra, "--out", out_dir], capsys)
        assert rc == 0, err
        v = next(iter(json.loads((out_dir / "manifest.json").read_text())["artifacts"].values()))["verification"]
        assert v["passed"] and v["verified"] is False and v["unverified"] == unverified, v["claim"]
        assert v["data"]["held_out"] is held_out


def test_verifying_on_calib_counts_only_the_images_that_calibrated(busi, tmp_path, capsys):
    """No --verify-data for a user's model: the INT8 artifact is verified on the images drawn from
    --calib. ONNX Runtime calibrated on 16 of the 20 drawn (its manifest's calibration.files), but the
    claim said '20 of its 20 images calibrated the INT8 model' and overlap.calibration listed none.
    (The model predicts nothing, so its INT8 artifact passes its gate on any CPU.)"""
    pytest.importorskip("onnxruntime")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    shipped = models_dir() / "cmunext-s-busi.safetensors"
    tensors = load_file(shipped)
    tensors["Conv_1x1.bias"] = tensors["Conv_1x1.bias"] - 100.0       # every logit far below 0
    with safe_open(shipped, "pt") as f:
        meta = f.metadata()
    weights = tmp_path / "mine.safetensors"
    save_file(tensors, weights, metadata=meta)
    calib = tmp_path / "calib"
    names = sorted(p.stem for p in (busi / "images").glob("*.png"))[:20]
    for sub in ("images", "masks/0"):
        (calib / sub).mkdir(parents=True)
        for k, name in enumerate(names):
            (calib / sub / f"c{k:02d}.png").write_bytes((busi / sub / f"{name}.png").read_bytes())
    rc, _, err = run_cli(export_cli.main, ["--weights", weights, "--target", "ort", "--int8", "--calib", calib,
                                           "--calib-size", 20, "--out", tmp_path / "o"], capsys)
    assert rc == 0, err
    entry = next(iter(json.loads((tmp_path / "o" / "manifest.json").read_text())["artifacts"].values()))
    v, files = entry["verification"], entry["calibration"]["files"]
    assert len(files) == 16 and v["n_images"] == 20, (files, v["n_images"])
    assert "16 of its 20 images calibrated the INT8 model" in v["claim"] and v["verified"] is False, v["claim"]
    assert sorted(v["data"]["overlap"]["calibration"]) == sorted(Path(f).stem for f in files)
    assert "16 of its 20 images calibrated" in err, err
