"""Reliability, round two (issue 22): each attack that broke the contract, as a test.

The contract: exit 2 with one line and no traceback where nothing was done; exit 1 with every
input accounted for where some were; summaries that match the disk."""
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmunext_edge.cli import bench as bench_cli
from cmunext_edge.cli import bundle as bundle_cli
from cmunext_edge.cli import check as check_cli
from cmunext_edge.cli import compare as compare_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.cli import serve as serve_cli
from cmunext_edge.cli import train as train_cli
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS, ImageTooLargeError, check_dimensions, check_pixels
from cmunext_edge.resources import SAMPLES_DIR

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "cmunext-s-busi.safetensors"
SAMPLE = sorted((SAMPLES_DIR / "images").glob("*.png"))[0]


def run_cli(main, argv, capsys):
    """(exit code, stdout, stderr) of a CLI called in-process; a usage error is exit 2 too."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return rc, out.out, out.err


def one_error_line(err: str, prog: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def onnx_art(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from cmunext_edge.export.pipeline import export
    out = tmp_path_factory.mktemp("reliab_art")
    return export(SHIPPED, target="onnx", out=out, verify=False).artifact


def flipped_copy(art: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in (art, art.parent / "manifest.json"):
        shutil.copy(f, folder / f.name)
    data = bytearray((folder / art.name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / art.name).write_bytes(bytes(data))
    return folder / art.name


# --- silent wrong results ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from cmunext_edge.checkpoints.weights import load_checkpoint, save_official_pth
    sd = dict(load_checkpoint(SHIPPED).state_dict)
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[name] = sd[name].clone()
    sd[name].view(-1)[0] = float("nan")               # a single NaN weight
    return save_official_pth(sd, tmp_path_factory.mktemp("nan") / "one_nan.pth"), torch


def test_nan_weights_are_refused_at_load_predict_and_export(nan_checkpoint, tmp_path, capsys):
    from cmunext_edge.checkpoints.weights import CheckpointError, load_checkpoint
    path, _ = nan_checkpoint
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)
    rc, _, err = run_cli(predict_cli.main, [SAMPLE, "--weights", path, "--out", tmp_path / "p"], capsys)
    assert rc == 2 and "NaN or infinite" in one_error_line(err, "cmunext-predict")
    assert not list((tmp_path / "p").rglob("*.png"))
    from cmunext_edge.cli import export as export_cli
    rc, _, err = run_cli(export_cli.main, ["--weights", path, "--target", "onnx", "--out", tmp_path / "e"], capsys)
    assert rc == 2 and "NaN or infinite" in one_error_line(err, "cmunext-export")
    assert not (tmp_path / "e").exists() or not list((tmp_path / "e").iterdir())


def test_all_nan_safetensors_is_refused(nan_checkpoint, tmp_path):
    _, torch = nan_checkpoint
    from cmunext_edge.checkpoints.weights import CheckpointError, load_checkpoint, save_safetensors
    sd = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
          for k, v in load_checkpoint(SHIPPED).state_dict.items()}
    path = save_safetensors(sd, tmp_path / "all_nan.safetensors")
    with pytest.raises(CheckpointError, match="tensor"):
        load_checkpoint(path)


def test_finite_weights_whose_outputs_overflow_give_no_mask(nan_checkpoint, tmp_path, capsys):
    """Weights scaled by 1e38 are finite (the load check passes) but every logit is +-inf: EdgeSegmenter
    refuses to make a mask from them and cmunext-predict reports each image, writes nothing, exits 2."""
    _, torch = nan_checkpoint
    from cmunext_edge.checkpoints.weights import load_checkpoint, save_safetensors
    from cmunext_edge.core.preprocess import NonFiniteOutputError
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    sd = dict(load_checkpoint(SHIPPED).state_dict)
    sd["Conv_1x1.weight"] = sd["Conv_1x1.weight"] * 1e38
    path = save_safetensors(sd, tmp_path / "overflow.safetensors")
    with pytest.raises(NonFiniteOutputError, match="NaN or infinite values for 1 of 1"):
        EdgeSegmenter(path).segment(str(SAMPLE))
    rc, _, err = run_cli(predict_cli.main, [SAMPLE, "--weights", path, "--out", tmp_path / "p"], capsys)
    assert rc == 2 and "NaN or infinite values" in err and "no input could be segmented" in err, err
    assert not list((tmp_path / "p").rglob("*.png"))
    clip = tmp_path / "clip.avi"                       # the video path: the reason, not "could not be read"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 80))
    for _ in range(3):
        writer.write(cv2.resize(cv2.imread(str(SAMPLE)), (96, 80)))
    writer.release()
    rc, _, err = run_cli(predict_cli.main, [clip, "--weights", path, "--out", tmp_path / "v"], capsys)
    assert rc == 2 and "frame 0: " in err and "NaN or infinite values" in err, err
    assert "no frame was segmented" in err and "could be read" not in err, err
    assert not (tmp_path / "v" / "masks").exists()


def test_manifest_with_empty_file_list_does_not_turn_the_hash_check_off(onnx_art, tmp_path):
    from cmunext_edge.artifacts.integrity import IntegrityError
    from cmunext_edge.runtime.registry import verify_artifact
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    art = flipped_copy(onnx_art, tmp_path / "m")
    manifest = json.loads((art.parent / "manifest.json").read_text())
    manifest["artifacts"][art.name]["files"] = []
    (art.parent / "manifest.json").write_text(json.dumps(manifest))
    report = verify_artifact(art)
    assert not report.ok and "does not list" in report.message()
    with pytest.raises(IntegrityError):
        EdgeSegmenter(art)


def test_every_file_not_processed_is_reported(tmp_path, capsys):
    src = tmp_path / "mixed"
    src.mkdir()
    shutil.copy(SAMPLE, src / "scan.png")
    for name in ("clip.mp4", "series.dcm", "anim.gif", "notes.txt"):
        (src / name).write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    rc, _, err = run_cli(predict_cli.main, [src, "--out", out, "--summary-json", out / "s.json", "--quiet"], capsys)
    assert rc == 1                                   # one image done, four inputs not: reported
    for name, words in (("clip.mp4", "a video"), ("series.dcm", "DICOM"), ("anim.gif", "GIF"),
                        ("notes.txt", "not a supported image format")):
        assert any(name in ln and words in ln for ln in err.splitlines() if ln.startswith("skipped:")), (name, err)
    summary = json.loads((out / "s.json").read_text())
    assert summary["n_images"] == 1 and len(summary["skipped"]) == 4


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_named_not_opened(tmp_path, capsys):
    import os
    src = tmp_path / "with_fifo"
    src.mkdir()
    shutil.copy(SAMPLE, src / "scan.png")
    os.mkfifo(src / "pipe.png")                      # opening it would block the job forever
    out = tmp_path / "out"
    rc, _, err = run_cli(predict_cli.main, [src, "--out", out, "--summary-json", out / "s.json", "--quiet"], capsys)
    assert rc == 1 and any("pipe.png" in ln and "not a regular file" in ln for ln in err.splitlines()), err
    assert json.loads((out / "s.json").read_text())["n_images"] == 1
    rc, _, err = run_cli(predict_cli.main, [src / "pipe.png", "--out", tmp_path / "o2"], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and "not a regular file" in line and not (tmp_path / "o2").exists()


def test_engine_ray_without_ray_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)              # import ray now fails, installed or not
    out = tmp_path / "out"
    rc, printed, err = run_cli(predict_cli.main, [SAMPLE, "--engine", "ray", "--out", out], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and "cmunext-edge[ray]" in line and not out.exists() and "engine: ray" not in printed


@pytest.mark.parametrize("name", ["m.onnx", "m.xml", "m.safetensors"])
def test_a_folder_named_like_a_model_is_named_as_a_folder(tmp_path, capsys, name):
    (tmp_path / name).mkdir()
    rc, _, err = run_cli(predict_cli.main, [SAMPLE, "--weights", tmp_path / name, "--out", tmp_path / "o"], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and "a folder, not a model file" in line and not (tmp_path / "o").exists(), line


def test_the_pages_after_the_first_of_a_multi_page_tiff_are_reported(tmp_path, capsys):
    """Multi-page TIFF, animated WebP and animated PNG are read as their first image: the other pages
    or frames are reported as not processed; single-image files of the same formats are not."""
    src = tmp_path / "tiffs"
    src.mkdir()
    img = cv2.imread(str(SAMPLE))
    assert cv2.imwritemulti(str(src / "multi.tiff"), [img, img[::-1], img[:, ::-1]])
    cv2.imwrite(str(src / "one.tiff"), img)
    cv2.imwrite(str(src / "one.webp"), img)
    expected = ["multi.tiff: pages 2-3 of 3 not processed"]
    if hasattr(cv2, "imwriteanimation"):            # OpenCV >= 4.11 writes animations
        for name in ("anim.webp", "anim.png"):
            animation = cv2.Animation()
            animation.frames, animation.durations = [img, img[::-1]], [100, 100]
            assert cv2.imwriteanimation(str(src / name), animation)
            expected.append(f"{name}: frames 2-2 of 2 not processed")
    out = tmp_path / "out"
    rc, _, err = run_cli(predict_cli.main, [src, "--out", out, "--summary-json", out / "s.json", "--quiet"], capsys)
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped:")]
    assert rc == 1 and len(skipped) == len(expected), err
    assert all(any(e in ln for ln in skipped) for e in expected), err
    summary = json.loads((out / "s.json").read_text())
    assert summary["n_images"] == len(expected) + 2 and len(summary["skipped"]) == len(expected)


def test_a_sub_folder_holding_images_is_named_not_silently_left_out(tmp_path, capsys):
    src = tmp_path / "study"
    (src / "png").mkdir(parents=True)
    (src / ".cache").mkdir()
    (src / "empty").mkdir()
    shutil.copy(SAMPLE, src / "scan.png")
    shutil.copy(SAMPLE, src / "png" / "inner.png")
    shutil.copy(SAMPLE, src / ".cache" / "hidden.png")
    out = tmp_path / "out"
    rc, printed, err = run_cli(predict_cli.main, [src, "--out", out, "--summary-json", out / "s.json", "--quiet"],
                               capsys)
    assert rc == 0 and json.loads((out / "s.json").read_text())["n_images"] == 1   # a note, not a failure
    notes = [ln for ln in (printed + err).splitlines() if "sub-folder" in ln]
    assert len(notes) == 1 and "png" in notes[0] and "1 image file(s), not read" in notes[0], notes
    (src / "scan.png").unlink()                      # only the sub-folder holds images: say where they are
    rc, _, err = run_cli(predict_cli.main, [src, "--out", tmp_path / "out2", "--quiet"], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and "no images found" in line and "sub-folder" in line and "png" in line


def test_a_lone_dicom_file_without_the_extra_names_it(tmp_path, capsys, monkeypatch):
    import sys
    dcm = tmp_path / "x.dcm"
    dcm.write_bytes(b"\x00" * 200)
    monkeypatch.setitem(sys.modules, "pydicom", None)          # import pydicom now fails
    rc, _, err = run_cli(predict_cli.main, [dcm, "--out", tmp_path / "o"], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and "DICOM" in line and "cmunext-edge[dicom]" in line


def jpeg_with_app_segments(path: Path, app_bytes: int) -> Path:
    ok, buf = cv2.imencode(".jpg", cv2.imread(str(SAMPLE)))
    data, app, left = buf.tobytes(), b"", app_bytes
    while left > 0:                                   # APP1 segments of at most 65533 payload bytes
        n = min(left, 65533)
        app += b"\xff\xe1" + struct.pack(">H", n + 2) + b"Exif\x00\x00" + bytes(n - 6)
        left -= n
    path.write_bytes(data[:2] + app + data[2:])
    return path


def test_jpeg_with_120_kb_of_app_segments_is_sized_from_its_header(tmp_path):
    path = jpeg_with_app_segments(tmp_path / "exif.jpg", 120_000)
    img = cv2.imread(str(path))
    assert img is not None and check_dimensions(path) == (img.shape[1], img.shape[0])
    from cmunext_edge.core.preprocess import load_image
    assert load_image(path).shape[:2] == img.shape[:2]


def test_one_pixel_limit_for_frames_and_series():
    check_pixels(4000, 3000, 1)
    with pytest.raises(ImageTooLargeError, match="frames"):
        check_pixels(512, 512, 200, what="series")         # a DICOM cine of 52 MP: refused
    from cmunext_edge.scale import serve as serve_mod
    assert not hasattr(serve_mod, "MAX_PIXELS")            # serve uses the one limit
    assert DEFAULT_MAX_PIXELS == 40_000_000


# --- memory bounded by batch size and workers ---------------------------------------------------
class _CountingSegmenter:
    """A fake segmenter that records how many decoded images are alive at once."""
    max_pixels = DEFAULT_MAX_PIXELS

    def __init__(self, real, counter):
        self.real, self.counter, self.spec = real, counter, real.spec

    def segment_batch(self, images, batch_size):
        import time
        self.counter["peak"] = max(self.counter["peak"], self.counter["decoded"] - self.counter["done"])
        time.sleep(0.02)                                   # slower than decoding: read-ahead would pile up
        out = self.real.segment_batch(images, batch_size=batch_size)
        self.counter["done"] += len(images)
        return out


@pytest.mark.parametrize("workers", [1, 2])
def test_read_ahead_is_bounded_by_batch_size_and_workers(tmp_path, monkeypatch, workers):
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.predict import job
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    src = tmp_path / "many"
    src.mkdir()
    for k in range(60):
        shutil.copy(SAMPLE, src / f"img{k:03d}.png")
    counter = {"decoded": 0, "done": 0, "peak": 0}
    real_load = job.load_image

    def counting_load(path, max_pixels, **kw):
        counter["decoded"] += 1
        return real_load(path, max_pixels, **kw)
    monkeypatch.setattr(job, "load_image", counting_load)
    segs = [_CountingSegmenter(EdgeSegmenter(SHIPPED), counter) for _ in range(workers)]
    result = job.run_job(segs, discover(src), tmp_path / "out", batch_size=2, write_overlays=False)
    assert len(result.rows) == 60 and not result.skipped
    # (workers + 1) batches of 2 at most (+1: an image counted as it starts decoding), not ~60
    assert counter["peak"] <= (workers + 1) * 2 + 1, counter


def test_a_reader_that_fails_unexpectedly_stops_the_job_instead_of_hanging(tmp_path, monkeypatch):
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.predict import job
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    src = tmp_path / "few"
    src.mkdir()
    for k in range(5):
        shutil.copy(SAMPLE, src / f"img{k}.png")
    real_load, calls = job.load_image, []

    def failing_load(path, max_pixels, **kw):
        calls.append(path)
        if len(calls) == 4:
            raise RuntimeError("decoder bug")
        return real_load(path, max_pixels, **kw)
    monkeypatch.setattr(job, "load_image", failing_load)
    result = job.run_job(EdgeSegmenter(SHIPPED), discover(src), tmp_path / "out", batch_size=2,
                         write_overlays=False)
    assert "reading the inputs failed (RuntimeError: decoder bug)" in result.stopped
    assert len(result.rows) == 2                              # the batch handed over before the failure
    assert len(result.rows) + len(result.skipped) == 5        # every image accounted for


def test_an_interrupt_while_waiting_for_the_last_batch_still_waits_for_it():
    """Ctrl-C/SIGTERM landing while the dispatcher waits for the running batch (after the reader is
    done) must not leave that batch's worker inside the runtime: at interpreter exit such a thread
    aborted the process (`terminate called without an active exception`, exit 134, not 130/143).
    A real SIGINT (not _thread.interrupt_main, which waits for the blocking call to return), in a
    process of its own (conftest.run_with_sigint): it lands while _dispatch waits for `work`."""
    from conftest import run_with_sigint
    rc, out = run_with_sigint("""
        import os, queue, threading, time
        from cmunext_edge.predict import job
        q, stop, lock, state = queue.Queue(), threading.Event(), threading.Lock(), {"done": False}
        q.put(["batch"])
        q.put(StopIteration)

        def work(batch):
            time.sleep(1.0)
            state["done"] = True
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            job._dispatch([object()], q, work, None, lock, stop)
            raise SystemExit("no KeyboardInterrupt")
        except KeyboardInterrupt:
            pass
        assert state["done"], "the interrupt returned while a batch was still running"
        assert stop.is_set()
        print("ok")
    """)
    assert rc == 0 and out.strip().endswith("ok"), out


# --- faults and accounting ------------------------------------------------------------------------
def test_summary_counts_exactly_the_images_on_disk_when_the_disk_fills(tmp_path, monkeypatch, capsys):
    import errno
    from cmunext_edge.predict import job
    src = tmp_path / "imgs"
    src.mkdir()
    for k in range(6):
        shutil.copy(SAMPLE, src / f"img{k}.png")
    real, calls = job.write_png, {"n": 0}

    def filling(path, image):
        calls["n"] += 1
        if calls["n"] > 9:                             # 4 mask+overlay pairs, then one mask, then full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, image)
    monkeypatch.setattr(job, "write_png", filling)
    out = tmp_path / "out"
    rc, _, err = run_cli(predict_cli.main, [src, "--out", out, "--batch-size", "8", "--summary-json",
                                            tmp_path / "s.json", "--quiet"], capsys)
    pairs = {p.stem for p in (out / "masks").glob("*.png")} & {p.stem for p in (out / "overlays").glob("*.png")}
    assert rc == 1 and len(pairs) == 4
    assert {p.stem for p in (out / "masks").glob("*.png")} == pairs           # no mask without overlay
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_images"] == 4 and len(summary["skipped"]) == 2 and "stopped" in err


def _mount_tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
    return path


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(name, options):
        mounted.append(_mount_tmpfs(tmp_path / name, options))
        return mounted[-1]
    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_full_small_filesystem_summary_matches_the_disk(tmp_path, tmpfs, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    img = cv2.resize(cv2.imread(str(SAMPLE)), (900, 900))
    noise = np.random.default_rng(0).integers(0, 256, img.shape, dtype=np.uint8)
    for k in range(12):
        cv2.imwrite(str(src / f"img{k:02d}.png"), cv2.addWeighted(img, 0.5, noise, 0.5, k))
    out = tmpfs("small", "size=2m")
    rc, _, err = run_cli(predict_cli.main, [src, "--out", out, "--quiet"], capsys)
    masks = {p.stem for p in (out / "masks").glob("*.png")}
    overlays = {p.stem for p in (out / "overlays").glob("*.png")}
    assert rc == (1 if masks else 2) and masks == overlays, err    # complete pairs only; none: nothing done
    counted = int(err.split(" images segmented")[0].split()[-1]) if " images segmented" in err else None
    line = next(ln for ln in (err + "\n").splitlines() if "stopped early" in ln)
    if masks:
        assert f"the {len(masks)} images counted above" in line and counted in (None, len(masks))
    else:                                           # nothing done: the one error line says both
        assert line == one_error_line(err, "cmunext-predict") and "no input could be segmented" in line


def _two_images(folder: Path) -> Path:
    folder.mkdir()
    for k in range(2):
        shutil.copy(SAMPLE, folder / f"img{k}.png")
    return folder


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_full_disk_is_refused_before_work_naming_out(tmp_path, monkeypatch, capsys, engine):
    """Before: the pre-flight's probe made an empty file, which a full disk still allows, so the
    job started and failed on every image; with --engine ray the one line was '[Errno 28] No space
    left on device', naming no folder. Now the probe writes data, and the disk's being full is
    found before any work, naming --out (Ray is not started)."""
    import errno
    from cmunext_edge import fileio

    def full(folder):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fileio, "write_probe", full)
    out = tmp_path / "out"
    rc, out_text, err = run_cli(predict_cli.main, [_two_images(tmp_path / "imgs"), "--out", out, "--engine", engine], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and f"--out {out} cannot be written: its disk is full (No space left on device)" in line, err
    assert not out.exists() and "engine: ray" not in out_text


def test_a_full_tmpfs_is_refused_before_work_by_both_engines(tmp_path, tmpfs, capsys):
    """The same on a real full filesystem; and Ray's job, should the disk fill after the pre-flight,
    names the folder it could not write to (it said only '[Errno 28] No space left on device')."""
    from cmunext_edge.scale.ray_batch import run_ray_job
    from cmunext_edge.predict.job import OutputError
    from cmunext_edge.data.discovery import discover
    disk = tmpfs("full", "size=64k")
    with open(disk / "filler", "wb", buffering=0) as fh:
        with pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 4096)
    src = _two_images(tmp_path / "imgs")
    for engine in ("local", "ray"):
        rc, _, err = run_cli(predict_cli.main, [src, "--out", disk / "o", "--engine", engine], capsys)
        assert rc == 2 and f"--out {disk / 'o'} cannot be written: its disk is full" in one_error_line(
            err, "cmunext-predict"), err
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    with pytest.raises(OutputError, match=f"cannot write to {disk / 'o'} \\(No space left on device\\)"):
        run_ray_job(SHIPPED, discover(src), disk / "o")        # past the pre-flight: fails before Ray starts


def test_video_into_a_read_only_mount_is_refused_before_work(tmp_path, tmpfs, capsys):
    clip = tmp_path / "c.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for _ in range(3):
        writer.write(np.zeros((64, 64, 3), np.uint8))
    writer.release()
    ro = tmpfs("ro", "ro,size=1m")
    rc, _, err = run_cli(predict_cli.main, [clip, "--out", ro / "o"], capsys)
    assert rc == 2 and "--out" in one_error_line(err, "cmunext-predict") and "not writable" in err


def _clip(path: Path, frames: int, size=(320, 240)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    base = cv2.resize(cv2.imread(str(SAMPLE)), size)
    noise = np.random.default_rng(1).integers(0, 256, base.shape, dtype=np.uint8)
    for k in range(frames):                       # noisy frames: the overlay video does not compress away
        writer.write(cv2.addWeighted(base, 0.5, np.roll(noise, 7 * k, axis=1), 0.5, 0))
    writer.release()
    return path


def test_video_onto_a_full_disk_accounts_for_what_is_on_it(tmp_path, tmpfs, capsys):
    clip = _clip(tmp_path / "long.mp4", 60)
    out = tmpfs("tiny", "size=300k") / "v"
    rc, _, err = run_cli(predict_cli.main, [clip, "--out", out, "--weights", "cmunext-s-busi"], capsys)
    assert rc == 1 and "nothing was done" not in err and "Traceback" not in err, err
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped:")]
    assert skipped and all(str(out) in ln for ln in skipped), skipped     # each line names its file
    assert not list(out.glob(".*part*")) and not list(out.glob("masks/.*"))   # no half-written file
    for video in out.glob("*.mp4"):                # a published video holds all of its frames
        assert cv2.VideoCapture(str(video)).isOpened()
    summary_file = out / "video_summary.json"
    if summary_file.exists():                      # when the disk left room for it, it matches the disk
        summary = json.loads(summary_file.read_text())
        assert summary["frames_written"] <= len(list(out.glob("masks/*.png")))
        assert ("overlay" in summary["outputs"]) == (out / "overlay.mp4").exists()
        assert summary["problems"] or summary["stopped"] or summary["incomplete"]


def test_sigterm_mid_video_writes_its_summary(tmp_path):
    import signal
    import time
    clip = _clip(tmp_path / "long.mp4", 400)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cmunext_edge.cli.predict", str(clip), "--out", str(out),
                             "--weights", "cmunext-s-busi", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("masks/*.png"))) < 5:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err and "SIGTERM" in err, err
    assert "skipped: terminated (SIGTERM)" in err, err            # the "each below" its line announced
    errors = [ln for ln in err.splitlines() if ln.startswith("cmunext-predict: error:")]
    assert len(errors) == 1 and "stopped early: terminated (SIGTERM)" in errors[0], err   # one line, not a second
    assert "nothing more was done" not in err, err                 # "...; nothing more was done" after it
    summary = json.loads((out / "video_summary.json").read_text())
    masks = len(list(out.glob("masks/*.png")))
    assert 5 <= summary["frames_written"] == masks < 400
    assert summary["stopped"] == "terminated (SIGTERM)", summary.get("stopped")   # the record says why it ended
    from cmunext_edge.predict.video import video_frame_count
    assert video_frame_count(out / "overlay.mp4") == masks and not list(out.glob(".*"))


def test_sigterm_mid_predict_is_handled_like_ctrl_c(tmp_path):
    import signal
    import time
    src = tmp_path / "imgs"
    src.mkdir()
    big = cv2.resize(cv2.imread(str(SAMPLE)), (1200, 1200))
    for k in range(60):
        cv2.imwrite(str(src / f"img{k:02d}.png"), big)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cmunext_edge.cli.predict", str(src), "--out", str(out),
                             "--batch-size", "2", "--summary-json", str(tmp_path / "s.json"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("overlays/*.png"))) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the job finished before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    masks = {p.stem for p in (out / "masks").glob("*.png")}
    assert proc.returncode == 143 and "Traceback" not in err and "SIGTERM" in err, err
    assert masks == {p.stem for p in (out / "overlays").glob("*.png")} and 0 < len(masks) < 60
    errors = [ln for ln in err.splitlines() if ln.startswith("cmunext-predict: error:")]
    assert len(errors) == 1 and "stopped early: terminated (SIGTERM)" in errors[0], err   # as Ctrl-C: one line
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_images"] == len(masks) and len(summary["skipped"]) == 60 - len(masks)


# --- pre-flight before Ray / Serve ------------------------------------------------------------
def _no_ray(monkeypatch):
    from cmunext_edge.scale import serve as serve_mod

    def started(*a, **k):
        raise AssertionError("Ray/Serve was started although the pre-flight should have refused")
    monkeypatch.setattr(serve_mod, "start", started)


def test_serve_refuses_a_flipped_artifact_and_a_busy_port_before_ray(onnx_art, tmp_path, monkeypatch, capsys):
    import socket
    _no_ray(monkeypatch)
    rc, _, err = run_cli(serve_cli.main, [flipped_copy(onnx_art, tmp_path / "f")], capsys)
    assert rc == 2 and "refused" in one_error_line(err, "cmunext-serve")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _, err = run_cli(serve_cli.main, [onnx_art, "--port", port], capsys)
    assert rc == 2 and "already in use" in one_error_line(err, "cmunext-serve")
    rc, _, err = run_cli(serve_cli.main, [tmp_path / "missing.onnx"], capsys)
    assert rc == 2 and "no such" in one_error_line(err, "cmunext-serve")


@pytest.mark.parametrize("argv", [["--replicas", "0"], ["--port", "70000"], ["--max-batch", "-1"],
                                  ["--batch-wait-ms", "nan"], ["--max-bytes", "0"], ["--threads", "0"]])
def test_serve_bad_arguments_exit_2(argv, monkeypatch, capsys):
    _no_ray(monkeypatch)
    rc, _, err = run_cli(serve_cli.main, ["model.onnx", *argv], capsys)
    assert rc == 2 and f"argument {argv[0]}: " in one_error_line(err, "cmunext-serve") and err.count("\n") == 1, err


def test_predict_engine_ray_refuses_a_flipped_artifact_before_ray(onnx_art, tmp_path, monkeypatch, capsys):
    from cmunext_edge.cli import predict_ray as ray_predict

    def started(*a, **k):
        raise AssertionError("Ray was started")
    monkeypatch.setattr(ray_predict, "predict_with_ray", started)
    rc, _, err = run_cli(predict_cli.main, [SAMPLE, "--weights", flipped_copy(onnx_art, tmp_path / "f"),
                                            "--engine", "ray", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "refused" in one_error_line(err, "cmunext-predict")


def _png_bomb(side: int) -> bytes:
    import zlib
    comp, row, chunks = zlib.compressobj(9), b"\x00" * (side + 1), []
    for _ in range(side):
        chunks.append(comp.compress(row))
    chunks.append(comp.flush())

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(chunks)) + chunk(b"IEND", b""))


def test_serve_refuses_a_png_bomb_without_decoding_it(monkeypatch):
    from cmunext_edge.scale import serve as serve_mod
    bomb = _png_bomb(20000)                       # 400 megapixels, ~400 KB
    assert len(bomb) < 1 << 20

    def no_decode(*a, **k):
        raise AssertionError("the body was decoded")
    monkeypatch.setattr(serve_mod.cv2, "imdecode", no_decode)
    with pytest.raises(serve_mod.RequestError) as exc:
        serve_mod.decode_body(bomb)
    assert exc.value.status == 413 and "20000x20000" in str(exc.value)
    header_only = bomb[:33]                       # a header claiming 100000x100000
    header_only = header_only[:16] + struct.pack(">II", 100000, 100000) + header_only[24:]
    with pytest.raises(serve_mod.RequestError) as exc:
        serve_mod.decode_body(header_only)
    assert exc.value.status == 413


# --- the exit-code contract: bad arguments and nothing-done in every CLI ----------------------
def test_bundle_errors_exit_2_with_one_line(onnx_art, tmp_path, capsys):
    for argv, words in (([tmp_path / "missing.onnx"], "no such artifact"),
                        ([SHIPPED, "--out", tmp_path / "b"], "not an exported artifact"),
                        ([flipped_copy(onnx_art, tmp_path / "f"), "--out", tmp_path / "b"], "refused"),
                        ([onnx_art, "--n-images", "0"], "argument --n-images: 0 is out of range")):
        rc, out, err = run_cli(bundle_cli.main, argv, capsys)
        assert rc == 2 and words in one_error_line(err, "cmunext-bundle") and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


def test_compare_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    wrong = tmp_path / "list.json"
    wrong.write_text("[1, 2]")
    for path, words in ((tmp_path / "none.json", "no such report"), (bad, "not a JSON file"),
                        (wrong, "not a cmunext-check device report")):
        rc, _, err = run_cli(compare_cli.main, [path], capsys)
        assert rc == 2 and words in one_error_line(err, "cmunext-compare")
    # with a good report among them, each bad one is skipped and named; the table is made (exit 1)
    good = next(Path(__file__).resolve().parents[1].glob("benchmarks/results/devices_*_reports/host_*.json"))
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**json.loads(good.read_text()), "checks": []}))     # "passed" with no checks
    rc, out, err = run_cli(compare_cli.main, [tmp_path / "none.json", good, bad, wrong, edited], capsys)
    skipped = [line for line in err.splitlines() if line.startswith("cmunext-compare: skipped ")]
    assert rc == 1 and len(skipped) == 4, err
    assert all(any(w in line for line in skipped) for w in ("no such report", "not a JSON file",
                                                            "not a cmunext-check device report", "edited device report"))
    assert len([line for line in out.splitlines() if line.startswith("| ") and "---" not in line]) == 2   # header + 1


@pytest.mark.parametrize("argv", [["--iters", "0"], ["--warmup", "-1"], ["--images", "0"]])
def test_check_bad_arguments_exit_2(argv, tmp_path, capsys):
    rc, _, err = run_cli(check_cli.main, [tmp_path, *argv], capsys)
    assert rc == 2 and f"argument {argv[0]}: {argv[1]} is out of range" in one_error_line(err, "cmunext-check"), err
    assert err.count("\n") == 1 and not list(tmp_path.iterdir())        # no report written


def test_check_on_a_folder_that_is_not_a_bundle_exits_2(tmp_path, capsys):
    rc, _, err = run_cli(check_cli.main, [tmp_path], capsys)
    assert rc == 2 and "not a bundle" in one_error_line(err, "cmunext-check")


@pytest.mark.parametrize("argv", [["--epochs", "-1"], ["--batch-size", "0"], ["--val-fraction", "2"],
                                  ["--lr", "0"], ["--img-size", "100"]])
def test_train_bad_numbers_exit_2_and_leave_nothing(argv, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli(train_cli.main, [SAMPLES_DIR, "--out", out, *argv], capsys)
    assert rc == 2 and f"argument {argv[0]}: {argv[1]} " in one_error_line(err, "cmunext-train"), err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("argv", [["--batch-sizes", "0"], ["--batch-sizes", "4,-1"], ["--streams", "0"],
                                  ["--max-images", "0"], ["--min-time", "-1"]])
def test_bench_bad_numbers_exit_2(argv, capsys):
    rc, out, err = run_cli(bench_cli.main, [SHIPPED, *argv], capsys)
    bad = argv[1].split(",")[-1]                          # "4,-1": the value refused is -1
    assert rc == 2 and f"argument {argv[0]}: {bad} is out of range" in one_error_line(err, "cmunext-bench"), err
    assert err.count("\n") == 1 and out == ""


def test_bench_nothing_measured_exits_2(onnx_art, tmp_path, capsys):
    quick = ["--iters", "1", "--warmup", "0", "--throughput-time", "0", "--matmul-time", "0", "--quiet"]
    rc, out, err = run_cli(bench_cli.main, [onnx_art, "--device", "NPU", "--strict-device", *quick], capsys)
    assert rc == 2 and "onnxruntime: unknown device 'NPU'" in one_error_line(err, "cmunext-bench"), err
    assert "p50" not in out
    rc, _, err = run_cli(bench_cli.main, [flipped_copy(onnx_art, tmp_path / "f"), *quick], capsys)
    assert rc == 2 and "nothing was measured" in err and "refused" in err


def test_export_to_a_missing_npu_says_so_and_strict_refuses(tmp_path, capsys):
    ov = pytest.importorskip("openvino")
    if "NPU" in ov.Core().available_devices:
        pytest.skip("this machine has an NPU")
    from cmunext_edge.cli import export as export_cli
    base = ["--weights", SHIPPED, "--target", "openvino", "--device", "NPU", "--no-verify"]
    rc, _, err = run_cli(export_cli.main, [*base, "--strict-device", "--out", tmp_path / "s"], capsys)
    assert rc == 2 and "NPU" in one_error_line(err, "cmunext-export")
    assert not list((tmp_path / "s").glob("*.xml"))
    rc, out, err = run_cli(export_cli.main, [*base, "--out", tmp_path / "f"], capsys)
    assert rc == 0 and "requested NPU, ran on CPU" in err
    nxt = out.split("next:")[1]
    assert "--device NPU" not in nxt and "cmunext-bench" in nxt


def test_sigterm_during_serve_start_up_leaves_no_ray_process(onnx_art):
    """The one Ray test here: SIGTERM a few seconds into start-up; every process the server
    started (Ray's GCS, raylet, agents, workers) must be gone after it exits."""
    pytest.importorskip("ray.serve")
    psutil = pytest.importorskip("psutil")
    import signal
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cmunext_edge.cli.serve", str(onnx_art), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me, seen, deadline = psutil.Process(proc.pid), {}, time.time() + 120
    while time.time() < deadline and proc.poll() is None:     # wait until Ray's processes run
        for child in me.children(recursive=True):
            try:
                seen[child.pid] = child
            except psutil.Error:
                pass
        if len(seen) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(seen) >= 3, "Ray did not start, or the server finished first"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err and "SIGTERM" in err, err
    gone, alive = psutil.wait_procs(list(seen.values()), timeout=30)
    assert not alive, [" ".join(p.cmdline()[:3]) for p in alive if p.is_running()]


def test_training_onto_a_full_disk_says_what_it_kept(tmp_path, tmpfs, capsys):
    """torch.save and safetensors report a full disk as RuntimeError / SafetensorError: cmunext-train
    names the write that failed and what --out holds (whole files only, no temporary ones), exit 1 when
    a checkpoint of a finished epoch is kept, else 2; never an "unexpected" error."""
    pytest.importorskip("torch")
    from cmunext_edge.checkpoints.weights import load_checkpoint
    from cmunext_edge.cli import train as train_cli
    out = tmpfs("train", "size=3m") / "run"
    rc, _, err = run_cli(train_cli.main, [SAMPLES_DIR, "--out", out, "--epochs", "3", "--img-size", "32",
                                          "--batch-size", "4"], capsys)
    line = one_error_line(err, "cmunext-train")
    assert "unexpected" not in line and "training stopped" in line, line
    assert "disk full" in line or "No space left" in line, line
    kept = sorted(p.name for p in out.iterdir())
    assert not [n for n in kept if n.startswith(".")], kept          # no temporary file left
    if rc == 1:
        assert "keeps" in line and any(n in kept for n in ("best.safetensors", "best.pth", "last.pt")), (line, kept)
        for name in ("best.safetensors", "best.pth"):
            if name in kept:
                assert load_checkpoint(out / name).state_dict      # whole, loadable
    else:
        assert rc == 2 and "no checkpoint was written" in line, line


@pytest.mark.parametrize("cli", ["predict", "check", "bundle", "serve", "bench", "export"])
@pytest.mark.parametrize("device", ["tpu", "", "cpux"])
def test_a_device_name_no_backend_knows_is_a_usage_error(cli, device, tmp_path, capsys):
    """A typo in --device is exit 2 with one line before anything runs or is written (cmunext-check
    used to run and write a FAILED report; cmunext-bench ran --device '' as if it were a device)."""
    import importlib
    main = importlib.import_module(f"cmunext_edge.cli.{cli}").main
    argv = {"export": ["--weights", "cmunext-s-busi", "--target", "onnx", "--out", str(tmp_path / "o")],
            "predict": [str(tmp_path), "--out", str(tmp_path / "o")]}.get(cli, [str(tmp_path / "x")])
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--device", device])
    err = capsys.readouterr().err
    said = "is an empty list" if (cli, device) == ("bench", "") else "no backend knows it"
    assert exc.value.code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
