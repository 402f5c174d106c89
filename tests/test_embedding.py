"""What a device-application developer embedding EdgeSegmenter in Python ran into, as tests:
constructor arguments of the wrong type reached pathlib ("expected str, bytes or os.PathLike object,
not int") or were taken as truthy (verify="no" meant verify); stream() took batch_size=0 as 1 and
max_frames=-1 as "no frames", and opened the camera of a closed segmenter before refusing it."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmunext_edge import EdgeSegmenter
from cmunext_edge.artifacts.signing import new_key_pair, trust_policy
from cmunext_edge.resources import resolve_weights


@pytest.mark.parametrize("artifact", [5, b"cmunext-s-busi", ["cmunext-s-busi"]])
def test_weights_of_the_wrong_type_are_a_type_error_naming_them(artifact):
    with pytest.raises(TypeError, match=r"weights must be a file path or a shipped model name .*got "):
        EdgeSegmenter(artifact)


@pytest.mark.parametrize("keys,says", [
    (5, "trusted_keys must be a public key file"),
    (b"release.pub.pem", "trusted_keys must be a public key file"),
    ({"key": "release.pub.pem"}, "trusted_keys must be a public key file"),
    ([5], "each key must be a path to a .pub.pem file, got int"),
])
def test_trusted_keys_of_the_wrong_type_are_a_type_error_naming_them(keys, says):
    with pytest.raises(TypeError, match=says):
        EdgeSegmenter(trusted_keys=keys)


def test_trusted_keys_take_paths_of_every_kind(tmp_path):
    _, pub = new_key_pair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    for given in (str(pub), pub, [pub], (str(pub),), iter([pub])):
        assert trust_policy(given) == [Path(pub)]


@pytest.mark.parametrize("flag", ["verify", "strict_device"])
@pytest.mark.parametrize("value", ["no", "False", 0, None])
def test_verify_and_strict_device_must_be_booleans(flag, value):
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got {value!r}"):
        EdgeSegmenter(**{flag: value})


def test_resolve_weights_keeps_paths_and_names():
    assert resolve_weights(Path("x.onnx")) == Path("x.onnx")
    assert resolve_weights(None).name == "cmunext-s-busi.safetensors"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("kwargs,says", [
    ({"batch_size": 0}, "batch_size must be a whole number from 1"),      # was taken as 1
    ({"batch_size": "2"}, "batch_size must be a whole number from 1"),    # was a TypeError in video.py
    ({"max_frames": -1}, "max_frames must be a positive whole number"),   # was 0 frames, silently
    ({"max_frames": 1.5}, "max_frames must be a positive whole number"),  # was 2 frames
])
def test_stream_checks_its_arguments_when_called(video, kwargs, says):
    with EdgeSegmenter() as seg:
        with pytest.raises(ValueError, match=says):
            seg.stream(video, **kwargs)
        assert [i for i, _, _ in seg.stream(video, batch_size=2)] == [0, 1, 2]


def test_stream_of_a_closed_segmenter_is_refused_before_the_source_opens(video):
    seg = EdgeSegmenter()
    seg.close()
    with pytest.raises(RuntimeError, match="was closed"):
        seg.stream(video)          # refused at the call, not at the first frame


@pytest.mark.parametrize("dtype,says", [
    (np.float32, r"from \[0, 1\] with \(img \* 255\)"),
    (np.float64, r"from \[0, 255\] with img.round\(\)"),
    (bool, "a boolean array is a mask, not an image"),
    (np.int16, r"np.clip\(img, 0, 255\)"),
])
def test_an_array_of_another_dtype_says_how_to_convert_it(dtype, says):
    with EdgeSegmenter() as seg:
        with pytest.raises(ValueError, match=f"must be uint8 or uint16, got .*{says}"):
            seg.segment(np.ones((32, 32, 3), dtype))
        hint = (np.ones((32, 32, 3), np.float32) * 0.5 * 255).round().astype(np.uint8)   # the hint, followed
        assert seg.segment(hint).mask.shape == (32, 32)


@pytest.fixture(scope="module")
def ov_ir(tmp_path_factory):
    pytest.importorskip("openvino")
    from cmunext_edge.export.pipeline import export
    from cmunext_edge.resources import resolve_weights as shipped
    return export(shipped(None), target="openvino", out=tmp_path_factory.mktemp("ov_ir"), verify=False).artifact


@pytest.mark.parametrize("asked", ["f16", "bf16", "f32"])
def test_an_openvino_inference_precision_other_than_asked_is_a_reported_fallback(ov_ir, asked):
    """On an x86 CPU without FP16 arithmetic OpenVINO runs f16 as bf16 (and bf16 as f32 without
    native BF16): describe() said precision bf16 with fallback None."""
    with EdgeSegmenter(ov_ir, inference_precision=asked) as seg:
        d = seg.describe()
    ran = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[d["inference_precision"]]
    if ran == asked:
        assert d["fallback"] is None
    else:
        assert d["fallback"] == f"requested inference_precision {asked}, CPU ran {ran}"


def test_info_of_an_artifact_names_the_extra_scale_as_for_a_checkpoint(ov_ir, capsys):
    """A C integrator re-implementing the preprocessing from `cmunext-info ART` missed the official
    second division by 255: only the checkpoint's line named it."""
    from cmunext_edge.cli.info import main
    assert main([str(ov_ir)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("preprocess"))
    assert "extra scale 0.00392157," in line


def test_an_array_refused_in_a_batch_is_named_by_its_index():
    """One float array among nine said only "must be uint8 or uint16": not which of the nine."""
    good = np.zeros((20, 20), np.uint8)
    images = [good] * 5 + [good.astype(np.float32)] + [good] * 3
    with EdgeSegmenter() as seg:
        with pytest.raises(ValueError, match=r"^image 5 \(0-based\) of the 9: image arrays must be uint8"):
            seg.segment_batch(images, batch_size=4)
        with pytest.raises(ValueError, match=r"^image arrays must be uint8"):      # one image: no index
            seg.segment(good.astype(np.float32))
        with pytest.raises(ValueError, match=r"^image 1 \(0-based\) of the 2: array of 20x20 pixels is above"):
            EdgeSegmenter(max_pixels=300).segment_batch([good[:10, :10], good])
