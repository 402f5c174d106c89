"""Hostile and unlucky inputs to cmunext-export found by an audit (one test per finding)."""
import os
import shutil

import pytest

from conftest import SAMPLES


def _tiny_dataset(root, names):
    """An official-layout dataset (images/ + masks/0/) of bundled samples under the given file names
    (bytes: possibly not UTF-8)."""
    images, masks = root / "images", root / "masks" / "0"
    images.mkdir(parents=True), masks.mkdir(parents=True)
    sources = sorted((SAMPLES / "images").iterdir())
    for source, name in zip(sources, names):
        shutil.copyfile(source, os.path.join(os.fsencode(images), name))
        shutil.copyfile(SAMPLES / "masks" / "0" / source.name, os.path.join(os.fsencode(masks), name))
    return root


def test_images_with_non_utf8_file_names_can_calibrate_and_verify(tmp_path):
    """A file name that is not UTF-8 (bytes 0xff 0xfe on Linux) stopped the export with "'utf-8' codec
    can't encode characters ... surrogates not allowed": the set's digest encoded the name strictly."""
    from cmunext_edge.core.preprocess import PreprocessSpec
    from cmunext_edge.export.calibration import make_calibration_set
    data = _tiny_dataset(tmp_path / "ds", [b"img\xff\xfe0.png", b"img\xff\xfe1.png", b"plain.png"])
    spec = PreprocessSpec(height=64, width=64)
    first = make_calibration_set(data, spec, size=None)
    assert len(first) == 3 and sum(m is not None for m in first.masks) == 3
    assert make_calibration_set(data, spec, size=None).sha256 == first.sha256     # still deterministic


def _busi_subset(busi, root, names):
    (root / "images").mkdir(parents=True), (root / "masks" / "0").mkdir(parents=True)
    for name in names:
        shutil.copyfile(busi / "images" / f"{name}.png", root / "images" / f"{name}.png")
        shutil.copyfile(busi / "masks" / "0" / f"{name}.png", root / "masks" / "0" / f"{name}.png")
    return root


def test_verification_leaves_out_every_training_and_calibration_image_while_others_remain(trained, busi, tmp_path):
    """--calib DS --verify-data DS with equal sizes drew the very calibration sample to verify on, and kept
    it (every image overlapped, so none was left out) while DS held images that neither trained nor
    calibrated the model; and a re-sample after leaving out the first sample's training images drew new
    training images ("3 left out, verifying on the others", then "14 of the 16 ... are training images")."""
    pytest.importorskip("nncf")
    import json
    from conftest import ROOT
    from test_agreement import _plan_sets
    split = json.loads((ROOT / "models" / "cmunext-s-busi.split.json").read_text())
    val = split["val"][:6]          # a part of the validation list: the export does not take the split itself
    data = _busi_subset(busi, tmp_path / "ds", split["train"][:10] + val)
    calib, verify, logs = _plan_sets(trained, target="openvino", precision="int8", out=tmp_path / "o", calib=data,
                                     verify_data=data, calib_size=3, verify_size=3)
    calibrated, verified = {s.name for s in calib.samples}, {s.name for s in verify.samples}
    assert verified and verified <= set(val) - calibrated, (verified, calibrated)
    assert verify.overlap["calibration"] == [] and verify.overlap["training"] == []
    assert not any("training images of this model" in m or "also calibrated" in m for m in logs), logs
    _, verify, logs = _plan_sets(trained, target="onnx", out=tmp_path / "o", verify_data=data, verify_size=3)
    assert {s.name for s in verify.samples} <= set(val) and len(verify) == 3
    assert verify.overlap["training"] == [] and any("left out, verifying on the others" in m for m in logs)


def test_a_video_file_as_verify_data_is_refused_without_telling_to_give_the_video_file(tmp_path, capsys):
    """`--verify-data clip.mp4` said "a video: not read when a folder holds images (give the video file
    itself ...)": the video file itself was what was given."""
    from cmunext_edge.cli import export as export_cli
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    rc = export_cli.main(["--weights", "cmunext-s-busi", "--target", "onnx", "--verify-data", str(video),
                          "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "only cmunext-predict reads video" in err, err
    assert "give the video file" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("long_name", ["--name", "weights"])
def test_an_artifact_name_too_long_for_the_file_system_is_a_usage_error_before_any_work(long_name, tmp_path, capsys):
    """A 300-character --name (or a weights file whose name makes such a default name) was found
    only when the staging folder was made, after the verification set was read: "could not write the
    artifact ([Errno 36] File name too long ...)"."""
    from cmunext_edge.cli import export as export_cli
    from conftest import ROOT
    weights = ROOT / "models" / "cmunext-s-busi.safetensors"
    if long_name == "weights":
        weights = tmp_path / ("w" * 240 + ".safetensors")
        shutil.copyfile(ROOT / "models" / "cmunext-s-busi.safetensors", weights)
    argv = ["--weights", str(weights), "--target", "onnx", "--out", str(tmp_path / "out")]
    rc = export_cli.main(argv + (["--name", "x" * 300] if long_name == "--name" else []))
    err = capsys.readouterr().err
    assert rc == 2 and "give a shorter --name" in err and len(err.strip().splitlines()) == 1, err
    assert "verification set" not in err and not (tmp_path / "out").exists()


def test_an_export_at_another_size_than_the_model_trained_at_is_warned_about(tmp_path, capsys):
    """The shipped model exported at --imgsz 128 reached ground-truth Dice 0.31 against 0.75 at 256,
    and nothing said that agreement with PyTorch at 128 cannot show it."""
    pytest.importorskip("onnx")
    from cmunext_edge.cli import export as export_cli
    base = ["--weights", "cmunext-s-busi", "--target", "onnx", "--no-verify"]
    assert export_cli.main([*base, "--imgsz", "128", "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr()
    assert "trained at 256x256 and is exported at --imgsz 128" in said.out + said.err, said
    assert export_cli.main([*base, "--imgsz", "256", "--out", str(tmp_path / "b")]) == 0
    said = capsys.readouterr()
    assert "is exported at --imgsz" not in said.out + said.err
