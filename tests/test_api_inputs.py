"""What a device app hands EdgeSegmenter besides a str/Path or an array: any os.PathLike is read as the
path it is (a PurePath was "expected an image path or a numpy array, got PurePosixPath"), and bytes or a
PIL image are refused saying how to pass them; segment_frames and stream refuse an argument of the
wrong kind with their own error (a TypeError from os.fspath, and "OpenCV cannot open this video file"
with the array printed, before)."""
from pathlib import PurePosixPath

import cv2
import numpy as np
import pytest

from cmunext_edge import EdgeSegmenter
from cmunext_edge.core.preprocess import ImageReadError
from cmunext_edge.resources import SAMPLES_DIR

IMAGE = sorted((SAMPLES_DIR / "images").glob("*.png"))[0]


class _PathLike:
    """A path object of the caller's own (what os.fspath accepts)."""

    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


@pytest.fixture(scope="module")
def seg():
    with EdgeSegmenter() as s:
        yield s


@pytest.fixture(scope="module")
def expected_mask(seg):
    return seg.segment(IMAGE).mask


@pytest.mark.parametrize("make", [lambda p: PurePosixPath(p), lambda p: _PathLike(str(p)),
                                  lambda p: _PathLike(str(p).encode())], ids=["PurePosixPath", "str", "bytes"])
def test_any_path_like_is_read_as_its_path(seg, expected_mask, make):
    result = seg.segment(make(IMAGE))
    assert np.array_equal(result.mask, expected_mask) and result.source == str(IMAGE)
    batch = seg.segment_batch([make(IMAGE), IMAGE])
    assert all(np.array_equal(r.mask, expected_mask) for r in batch)
    with pytest.raises(ValueError, match="got one"):        # one path-like is one image, not a sequence
        seg.segment_batch(make(IMAGE))


def test_bytes_say_how_to_pass_a_path_or_encoded_data(seg):
    with pytest.raises(ImageReadError, match=r"got bytes; a file path goes in as str .* cv2\.imdecode"):
        seg.segment(str(IMAGE).encode())
    with pytest.raises(ImageReadError, match=r"got bytearray; .* cv2\.imdecode"):
        seg.segment(bytearray(IMAGE.read_bytes()))


def test_a_pil_image_says_how_to_pass_it(seg, expected_mask):
    Image = pytest.importorskip("PIL.Image")
    img = Image.open(IMAGE)
    with pytest.raises(ImageReadError, match=r"a PIL image is RGB: pass np\.asarray\(img\.convert\('RGB'\)\) "
                                             r"with channel_order='rgb'"):
        seg.segment(img)
    hinted = seg.segment(np.asarray(img.convert("RGB")), channel_order="rgb")     # the hint gives the same mask
    assert np.array_equal(hinted.mask, expected_mask)


@pytest.mark.parametrize("source", [np.zeros((8, 8), np.uint8), None, 3.5])
def test_segment_frames_refuses_what_is_not_dicom_by_kind(seg, source):
    with pytest.raises(ImageReadError, match="segment_frames takes a DICOM file path or a pydicom Dataset, got"):
        seg.segment_frames(source)


def test_segment_frames_checks_batch_size_before_reading(seg, tmp_path):
    # a missing file would say "no such file"; the bad batch size is found first, before any frame is read
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        seg.segment_frames(tmp_path / "missing.dcm", batch_size=0)


@pytest.mark.parametrize("source", [np.zeros((8, 8), np.uint8), None, True, -1, 2.0, b"clip.mp4"])
def test_stream_refuses_what_is_no_video_source(seg, source):
    with pytest.raises(ValueError, match="stream takes a video file path, a camera index"):
        seg.stream(source)


def test_stream_still_takes_its_sources(seg, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(2):
        writer.write(cv2.imread(str(IMAGE))[:48, :64])
    writer.release()
    for source in (video, str(video), PurePosixPath(video)):
        assert [i for i, _, _ in seg.stream(source)] == [0, 1]
    assert callable(getattr(seg.stream(0), "__next__", None))      # a camera index: opened on the first next()


@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("hw", [(256, 256), (300, 200)])
def test_mask_and_probability_are_row_major_at_every_size(classes, hw):
    """At network size (no resize) a several-class probability and mask were a transposed view of the
    CxHxW logits: the values right, the memory planar, so a buffer handed to C code read them wrong."""
    from cmunext_edge.core.preprocess import get_preset
    logits = np.random.default_rng(0).normal(size=(classes, 256, 256)).astype(np.float32)
    prob, mask = get_preset("official").postprocess(logits, hw)
    assert prob.flags.c_contiguous and mask.flags.c_contiguous
    expected = 1.0 / (1.0 + np.exp(-logits.transpose(1, 2, 0)))
    if hw == (256, 256):
        assert np.allclose(prob, expected[..., 0] if classes == 1 else expected)


def test_a_several_class_result_at_network_size_is_row_major(three_class):
    with EdgeSegmenter(three_class["checkpoint"]) as seg:
        image = cv2.resize(cv2.imread(str(IMAGE)), (256, 256))
        result = seg.segment(image)
        assert result.mask.shape == (256, 256, 3)
        assert result.mask.flags.c_contiguous and result.probability.flags.c_contiguous
        assert np.array_equal(np.frombuffer(result.mask.tobytes(order="A"), bool).reshape(256, 256, 3), result.mask)


def test_from_artifact_refuses_none_rather_than_run_the_shipped_checkpoint():
    # from_artifact(os.environ.get("CART_MODEL")) with the variable unset ran the research checkpoint
    # through PyTorch instead of the verified artifact, and said nothing
    with pytest.raises(ValueError, match="from_artifact needs the artifact's path, got None"):
        EdgeSegmenter.from_artifact(None)


def test_a_batch_option_a_static_ir_cannot_take_is_reported(ckpt_s, tmp_path):
    """`batch=4` on an IR exported with a static batch of 1 was accepted and silently not applied."""
    pytest.importorskip("openvino")
    from cmunext_edge.export.pipeline import export
    ir = export(ckpt_s, target="ov", out=tmp_path, imgsz=128, calib_size=4).artifact
    with EdgeSegmenter(ir, batch=4) as seg:
        described = seg.describe()
        assert described["input_shape"][0] == 1
        assert "requested batch 4, ran 1: this IR's batch is static" in described["fallback"]
    with EdgeSegmenter(ir, batch=1) as seg:           # what it runs anyway: nothing to report
        assert seg.describe()["fallback"] is None


def test_the_pytorch_threads_option_sets_pytorchs_thread_count():
    """`EdgeSegmenter(threads=1)` on a checkpoint was accepted and ignored (PyTorch ran on every core)."""
    torch = pytest.importorskip("torch")
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with EdgeSegmenter(threads=1) as seg:
            assert torch.get_num_threads() == 1
            assert seg.segment(np.zeros((40, 40), np.uint8)).mask.shape == (40, 40)
    finally:
        torch.set_num_threads(before)
