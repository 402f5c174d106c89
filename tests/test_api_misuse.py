"""Reliability, round four: what a device integrator's mistakes broke in the API and the CLIs, as tests.

One HxWx3 array handed to segment_batch was split into pixel rows (473 'images'), a negative
batch size returned nothing, an empty gray array reached OpenCV, a folder was "no such file",
cmunext-compare showed an edited report as passing, cmunext-check extracted a hostile archive
before refusing it, and --split errors did not name the split file."""
import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmunext_edge import EdgeSegmenter
from cmunext_edge.cli import check as check_cli
from cmunext_edge.cli import compare as compare_cli
from cmunext_edge.cli import info as info_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.core.preprocess import ImageReadError
from cmunext_edge.resources import SAMPLES_DIR

from test_reliability import one_error_line, onnx_art, run_cli  # noqa: F401  (onnx_art: a fixture)

IMAGE = sorted((SAMPLES_DIR / "images").glob("*.png"))[0]
REPORTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "devices_arm49_2026-12-05_reports"


@pytest.fixture(scope="module")
def seg(onnx_art):
    with EdgeSegmenter(onnx_art) as s:
        yield s


@pytest.mark.parametrize("images,kwargs,says", [
    ("one_array", {}, "for one image call segment()"),
    (str(IMAGE), {}, "got one"),
    (IMAGE, {}, "got one"),
    ("two", {"batch_size": -1}, "batch_size must be a whole number from 1"),
    ("two", {"batch_size": 0}, "batch_size must be a whole number from 1"),
    ("two", {"batch_size": "2"}, "batch_size must be a whole number from 1"),
    ("two", {"batch_size": True}, "batch_size must be a whole number from 1"),
    ("two", {"channel_order": "xyz"}, "channel_order must be 'bgr' or 'rgb'"),
    (42, {}, "takes a sequence of images, got int"),
    ("mapping", {}, "got a dict: pass a list"),       # was: its keys read as paths ("a: no such file")
    ("set", {}, "got a frozenset: pass a list"),      # was: segmented in an arbitrary order
])
def test_segment_batch_refuses_what_it_would_misread(seg, images, kwargs, says):
    img = cv2.imread(str(IMAGE))
    images = {"one_array": img, "two": [img, img], "mapping": {"a": img},
              "set": frozenset([str(IMAGE)])}.get(images, images) if isinstance(images, str) else images
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        seg.segment_batch(images, **kwargs)


def test_a_stacked_array_is_a_batch_with_the_same_masks(seg):
    img = cv2.imread(str(IMAGE))
    stacked = seg.segment_batch(np.stack([img, img[:, ::-1]]), batch_size=2)
    listed = [seg.segment(img), seg.segment(np.ascontiguousarray(img[:, ::-1]))]
    assert len(stacked) == 2
    for a, b in zip(stacked, listed):
        assert a.mask.shape == img.shape[:2] and np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("shape, says", [((0, 10), r"empty image of shape \(0, 10\)"),
                                         ((0, 10, 1), r"empty image of shape \(0, 10, 1\)"),
                                         ((10, 0, 3), r"empty image of shape \(10, 0, 3\)"),
                                         ((5, 5, 2), r"must be HxW, HxWx1, HxWx3 or HxWx4, got shape \(5, 5, 2\)")])
def test_empty_and_odd_arrays_are_image_errors_not_opencv_asserts(seg, shape, says):
    with pytest.raises(ImageReadError, match=says):
        seg.segment(np.zeros(shape, np.uint8))


def test_paths_that_are_not_image_files_say_what_they_are(seg, tmp_path):
    with pytest.raises(ImageReadError, match="a folder, not an image file"):
        seg.segment(tmp_path)
    with pytest.raises(ImageReadError, match="an empty string is not an image path"):
        seg.segment("")
    with pytest.raises(ImageReadError, match="no such file"):
        seg.segment(tmp_path / "missing.png")


def test_a_file_whose_header_reads_but_pixels_do_not_says_so(seg, tmp_path):
    tiff = tmp_path / "float.tiff"
    cv2.imwrite(str(tiff), np.full((40, 30), 0.5, np.float32))         # valid, but not a format OpenCV decodes
    cut = tmp_path / "cut.png"
    cut.write_bytes(IMAGE.read_bytes()[:400])                            # header intact, pixels cut
    for path, size in ((tiff, "30x40"), (cut, "323x473")):
        with pytest.raises(ImageReadError, match=f"its header gives {size}, but its pixels could not be decoded"):
            seg.segment(path)


@pytest.mark.parametrize("value", ["x", -1, 0, 2.5, True])
def test_max_pixels_is_checked_when_the_segmenter_is_made(onnx_art, value):
    with pytest.raises(ValueError, match="max_pixels must be a positive whole number"):
        EdgeSegmenter(onnx_art, max_pixels=value)


def test_an_array_above_max_pixels_is_refused_like_a_file(seg):
    """A broadcast view of 20000 x 20000 costs 3 bytes, but its mask and probability would take
    gigabytes: refused as an image above the limit, before any copy; below it, segmented."""
    big = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))
    with pytest.raises(ImageReadError, match="20000x20000 pixels is above the limit"):
        seg.segment(big)
    with pytest.raises(ImageReadError, match="above the limit"):
        seg.segment_batch([np.zeros((64, 64, 3), np.uint8), big])
    assert seg.segment(np.zeros((300, 400, 3), np.uint8)).mask.shape == (300, 400)


def test_a_closed_segmenter_says_so(onnx_art):
    s = EdgeSegmenter(onnx_art)
    s.close()
    with pytest.raises(RuntimeError, match="was closed"):
        s.segment(cv2.imread(str(IMAGE)))
    with pytest.raises(RuntimeError, match="was closed"):     # was "call load() before infer()"
        s.self_test()
    with pytest.raises(RuntimeError, match="was closed"):     # was: the file read first ("cannot read ...")
        s.segment_frames(IMAGE.parent / "missing.dcm")
    assert s.describe()["closed"] is True


def test_close_from_another_thread_lets_the_running_inference_finish(onnx_art):
    """close() during a segment_batch on another thread broke it with "'NoneType' object has no
    attribute 'run'": close now waits for the running inference, and later chunks say "was closed"."""
    import threading
    s = EdgeSegmenter(onnx_art)
    image, outcome = cv2.imread(str(IMAGE)), {}
    started = threading.Event()
    real_infer = s.backend.infer

    def infer_then_close(batch):           # the real inference, with close() called from a thread meanwhile
        started.set()
        closer.start()
        out = real_infer(batch)
        outcome["closed_during"] = s._closed
        return out
    closer = threading.Thread(target=s.close)
    s.backend.infer = infer_then_close
    first = s.segment_batch([image], batch_size=1)
    closer.join()
    assert started.is_set() and first[0].mask.any() and outcome["closed_during"] is False
    with pytest.raises(RuntimeError, match="was closed"):
        s.segment_batch([image, image], batch_size=1)


def _edited_report(tmp_path, **changes) -> Path:
    rep = json.loads((REPORTS / "host_ov-int8.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            rep[section][field] = value
        else:
            rep[section] = value
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(rep))
    return path


def test_compare_shows_the_genuine_report(capsys):
    rc, out, _ = run_cli(compare_cli.main, [REPORTS / "host_ov-int8.json"], capsys)
    assert rc == 0 and "| pass |" in out


@pytest.mark.parametrize("changes,says", [
    ({"passed": "no"}, "passed is 'no', not bool"),
    ({"agreement": None}, "it holds no agreement figure"),
    ({"checks": []}, "its checks do not all hold"),
    ({"dice__device": "abc"}, "dice is 'abc', not a number"),
    ({"label": 5}, "device is 5, not str"),
])
def test_compare_refuses_an_edited_report_rather_than_show_it_passing(tmp_path, capsys, changes, says):
    rc, out, err = run_cli(compare_cli.main, [_edited_report(tmp_path, **changes)], capsys)
    assert rc == 2 and says in one_error_line(err, "cmunext-compare") and "| pass |" not in out, err


def _archive(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"{}"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


@pytest.mark.parametrize("members,says", [
    ([_file("b/bundle.json"), _file("/tmp/evil.txt")], "points outside its folder"),
    ([_file("b/bundle.json"), _file("b/../../evil.txt")], "points outside its folder"),
    ([_file("b/bundle.json"), _link("b/link", "/etc")], "is a link or special file"),
    ([_file("b/bundle.json"), _file("c/other.json")], "holds exactly one folder"),
])
def test_check_refuses_a_hostile_archive_before_extracting_anything(tmp_path, capsys, members, says):
    archive = _archive(tmp_path / "x.bundle.tar.gz", members)
    rc, _, err = run_cli(check_cli.main, [archive], capsys)
    assert rc == 2 and says in one_error_line(err, "cmunext-check"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bundle.tar.gz"]     # nothing extracted


def test_check_names_a_bundle_that_is_not_one(tmp_path, capsys):
    not_gzip = tmp_path / "plain.tar.gz"
    not_gzip.write_bytes(b"this is not an archive")
    listed = _archive(tmp_path / "list.tar.gz", [_file("b/bundle.json", b"[]")])
    cases = ((tmp_path / "missing", "no such bundle folder or .tar.gz"),
             (not_gzip, f"{not_gzip}: not a readable bundle archive"),
             (listed, "not a cmunext-edge device bundle"))
    for path, says in cases:
        rc, _, err = run_cli(check_cli.main, [path], capsys)
        assert rc == 2 and says in one_error_line(err, "cmunext-check"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.tar.gz", "plain.tar.gz"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("split,says", [
    (lambda d: _write(d / "empty.json", ""), "not readable as JSON"),
    (lambda d: d, "a folder, not a file"),
    (lambda d: d / "missing.txt", "no such file"),
    (lambda d: _write(d / "none.json", '{"val": []}'), "names no image"),
    (lambda d: _write(d / "comments.txt", "# nothing\n"), "names no image"),
])
def test_split_errors_name_the_split_file(tmp_path, capsys, split, says):
    path = split(tmp_path)
    rc, _, err = run_cli(predict_cli.main, [SAMPLES_DIR, "--split", path, "--out", tmp_path / "o"], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and f"split file {path}" in line and says in line, err
    assert not (tmp_path / "o").exists()


def test_info_refuses_size_for_an_artifact_and_names_an_empty_file(onnx_art, tmp_path, capsys):
    rc, _, err = run_cli(info_cli.main, [onnx_art, "--size", "512", "512"], capsys)
    assert rc == 2 and "--size applies to checkpoints" in one_error_line(err, "cmunext-info")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    rc, _, err = run_cli(info_cli.main, [empty], capsys)
    assert rc == 2 and "an empty file (0 bytes)" in one_error_line(err, "cmunext-info")


@pytest.mark.parametrize("value", ["abc", "-5", " ", "1e3"])
def test_serve_answers_a_bad_content_length_with_400(value):
    from cmunext_edge.scale.serve import RequestError, _declared_length
    with pytest.raises(RequestError, match="is not a number of bytes") as exc:
        _declared_length({"content-length": value})
    assert exc.value.status == 400
    assert _declared_length({"content-length": "12"}) == 12 and _declared_length({}) is None     # none declared


def test_a_sigterm_whose_exception_a_callback_dropped_still_stops_the_export(capsys):
    """Python runs a signal handler inside weakref callbacks too, where its exception is dropped: an
    export once went on to publish after 'Exception ignored ... ExportInterrupted' (seen in CI)."""
    import os
    import signal
    import weakref
    from cmunext_edge.export.staging import ExportInterrupted, sigterm_raises

    class Thing:
        pass

    def callback(_ref):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10000):          # the handler runs here, inside the callback
            pass

    with sigterm_raises() as guard:
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing                                   # the callback's exception is dropped by Python
        assert guard.received and ref() is None
        with pytest.raises(ExportInterrupted):
            guard.check()                           # ... and raised again before publishing
    assert "Exception ignored" not in capsys.readouterr().err
    with pytest.raises(ExportInterrupted):         # a CLI's guard raises it at the end of its block
        with sigterm_raises(reraise_at_exit=True):
            thing = Thing()
            ref = weakref.ref(thing, callback)
            del thing
