"""Hostile input and the exit-code contract (issue 12): bounded memory, nothing lost, upfront
output checks, declared backend options, damaged manifests, export value checks."""
import errno
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmunext_edge.cli import bench as bench_cli
from cmunext_edge.cli import export as export_cli
from cmunext_edge.cli import info as info_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.core.image_limits import ImageSizeError, check_dimensions
from cmunext_edge.core.preprocess import ImageReadError, load_image
from cmunext_edge.resources import SAMPLES_DIR

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "cmunext-s-busi.safetensors"
SAMPLE = sorted((SAMPLES_DIR / "images").glob("*.png"))[0]


def big_gray_png(path, width, height):
    """A valid, highly compressed all-black grayscale PNG of any size (never held in memory)."""
    comp, chunks, row = zlib.compressobj(9), [], b"\x00" * (width + 1)
    for _ in range(height):
        chunks.append(comp.compress(row))
    chunks.append(comp.flush())

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(chunks))
                     + chunk(b"IEND", b""))
    return path


def _run(main, argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:          # argparse: a bad option value is a usage error (exit 2)
        rc = exc.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return rc, out.out, out.err


# --- bounded memory -------------------------------------------------------------------------
def test_oversized_image_is_refused_from_its_header(tmp_path):
    big = big_gray_png(tmp_path / "big.png", 8000, 6000)          # 48 MP, about 60 KB on disk
    assert big.stat().st_size < 200_000
    assert check_dimensions(big, None) == (8000, 6000)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        load_image(big)
    assert load_image(big_gray_png(tmp_path / "ok.png", 64, 48)).shape == (48, 64, 3)


def test_a_count_just_over_the_limit_never_reads_equal_to_it():
    from cmunext_edge.core.image_limits import ImageTooLargeError, check_pixels
    for size, limit, says in [((320, 240, 3), 200_000, "0.23 megapixels exceeds the limit of 0.2 megapixels"),
                              ((40001, 1000, 1), 40_000_000, "40.001 megapixels exceeds the limit of 40 megapixels"),
                              ((8000, 6000, 1), 40_000_000, "48.0 megapixels exceeds the limit of 40.0 megapixels")]:
        with pytest.raises(ImageTooLargeError, match=says):
            check_pixels(*size, max_pixels=limit)


@pytest.mark.parametrize("fmt", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_header_sizes_match_the_decoder(tmp_path, fmt):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(fmt, img)
    assert ok
    path = tmp_path / f"x{fmt}"
    path.write_bytes(buf.tobytes())
    assert check_dimensions(path) == (53, 37)
    with pytest.raises(ImageSizeError):
        check_dimensions(path, max_pixels=100)


def test_oversized_and_unknown_files_are_skipped_in_predict(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLE, src / "good.png")
    big_gray_png(src / "big.png", 9000, 9000)
    (src / "fake.png").write_bytes(b"GIF89a" + b"\0" * 20)
    rc, _, err = _run(predict_cli.main, [src, "--out", tmp_path / "o", "--summary-json", tmp_path / "s.json"],
                      capsys)
    assert rc == 1 and "megapixels exceeds" in err and "not a supported image format" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_images"] == 1 and len(summary["skipped"]) == 2
    rc, _, err = _run(predict_cli.main, [src / "big.png", "--out", tmp_path / "o2", "--max-pixels",
                                         "100000000", "--no-overlay"], capsys)
    assert rc == 0 and (tmp_path / "o2" / "masks" / "big.png").is_file()


# --- nothing lost ---------------------------------------------------------------------------
def test_same_name_different_extension_both_kept(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLE, src / "dup.png")
    cv2.imwrite(str(src / "dup.jpg"), cv2.flip(cv2.imread(str(SAMPLE)), 1))
    rc, out, _ = _run(predict_cli.main, [src, "--out", tmp_path / "o"], capsys)
    assert rc == 0 and "2 images segmented" in out
    masks = sorted(p.name for p in (tmp_path / "o" / "masks").iterdir())
    assert masks == ["dup.jpg.png", "dup.png.png"]
    a, b = (cv2.imread(str(tmp_path / "o" / "masks" / m)) for m in masks)
    assert not np.array_equal(a, b)


def test_broken_symlinks_are_reported(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLE, src / "good.png")
    os.symlink(src / "missing.png", src / "dangling.png")
    os.symlink(src / "loop_b.png", src / "loop_a.png")
    os.symlink(src / "loop_a.png", src / "loop_b.png")
    os.symlink(src / "gone", src / "brokenlink")                 # no image suffix: reported all the same
    os.symlink(src / "gone.txt", src / "sp ace.txt")
    rc, _, err = _run(predict_cli.main, [src, "--out", tmp_path / "o", "--no-overlay"], capsys)
    assert rc == 1 and err.count("broken symbolic link") == 5, err
    assert "brokenlink: not processed" in err and "sp ace.txt: not processed" in err


def test_full_disk_stops_cleanly_and_summary_matches_disk(tmp_path, monkeypatch):
    from cmunext_edge.predict import job as predict_job
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    real, calls = predict_job.write_png, []

    def filling(path, image):
        calls.append(path)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, image)
    monkeypatch.setattr(predict_job, "write_png", filling)
    samples = discover(SAMPLES_DIR)
    result = predict_job.run_job(EdgeSegmenter(), samples, tmp_path / "o", batch_size=2)
    assert result.stopped and "No space left" in result.stopped
    on_disk = {p.stem for p in (tmp_path / "o" / "masks").iterdir()}
    assert on_disk == {r["name"] for r in result.rows} and len(on_disk) == 2   # the third lost its overlay
    assert {p.stem for p in (tmp_path / "o" / "overlays").iterdir()} == on_disk
    assert len(result.rows) + len(result.skipped) == len(samples)
    assert all("not processed" in s["error"] or "No space" in s["error"] for s in result.skipped)


def test_output_problems_are_found_before_any_work(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, says in ((["--out", afile], f"--out {afile} exists and is not a folder"),
                       (["--out", afile / "sub"], f"--out {afile / 'sub'} cannot be made: {afile} is not a folder"),
                       (["--out", tmp_path / "o", "--summary-json", afile / "x.json"],
                        f"--summary-json folder {afile} exists and is not a folder"),
                       (["--out", tmp_path / "o", "--summary-json", tmp_path], f"--summary-json {tmp_path} is a folder")):
        rc, out, err = _run(predict_cli.main, [SAMPLE, *argv], capsys)
        assert rc == 2 and err == f"cmunext-predict: error: {says}\n" and out == "", (argv, out, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]          # nothing made, nothing segmented


def test_read_only_out_is_refused_upfront(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:           # root writes into a folder of mode 0o555: a read-only mount instead
        from test_reliability import _mount_tmpfs
        _mount_tmpfs(ro, "ro,size=1m")
    else:
        ro.chmod(0o555)
    try:
        rc, out, err = _run(predict_cli.main, [SAMPLE, "--out", ro / "o"], capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("cmunext-predict: error: --out") \
            and "not writable" in lines[0] and "segmented" not in out, (out, err)
        assert not (ro / "o").exists()
    finally:
        if os.geteuid() == 0:
            import subprocess
            subprocess.run(["umount", "-l", str(ro)], capture_output=True)


# --- checkpoints with other channel / class counts --------------------------------------------
def test_one_channel_checkpoint_refused_with_reason_and_two_classes_work(tmp_path, capsys):
    pytest.importorskip("torch")
    from cmunext_edge.core.model import build_model
    from cmunext_edge.checkpoints.weights import save_official_pth
    one = save_official_pth(build_model("cmunext-s", 1, 1), tmp_path / "one.pth")
    rc, _, err = _run(predict_cli.main, [SAMPLE, "--weights", one, "--out", tmp_path / "o1"], capsys)
    assert rc == 2 and "1 input channel" in err
    two = save_official_pth(build_model("cmunext-s", 3, 2), tmp_path / "two.pth")
    rc, _, _ = _run(predict_cli.main, [SAMPLE, "--weights", two, "--out", tmp_path / "o2"], capsys)
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "o2" / "masks").iterdir()) == [
        f"{SAMPLE.stem}_class0.png", f"{SAMPLE.stem}_class1.png"]


def test_info_refuses_an_unknown_preprocess_key(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    from cmunext_edge.core.preprocess import get_preset
    from cmunext_edge.checkpoints.weights import load_checkpoint
    sd = load_checkpoint(SHIPPED).state_dict
    spec = json.loads(get_preset("official").to_json())
    spec["bogus"] = 1
    path = tmp_path / "extra.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, str(path),
              metadata={"preprocess": json.dumps(spec)})
    rc, _, err = _run(info_cli.main, [path], capsys)
    assert rc == 2 and "bogus" in err


# --- backend options ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, expect", [("@thread=2", "valid options"), ("@bogus_option=1", "valid options"),
                                            ("@precision=fp64", "invalid value")])
def test_unknown_or_invalid_backend_option_is_an_error(suffix, expect, capsys):
    rc, _, err = _run(bench_cli.main, [f"{SHIPPED}{suffix}", "--iters", "1"], capsys)
    assert rc == 2 and expect in err and ("threads" in err or "fp32" in err)


def test_bench_iters_zero_and_bad_hint(tmp_path, capsys):
    rc, _, err = _run(bench_cli.main, [SHIPPED, "--iters", "0"], capsys)
    assert rc == 2 and "--iters" in err
    rc, _, err = _run(bench_cli.main, [str(tmp_path / "m.xml") + "@hint=fast"], capsys)
    assert rc == 2 and "hint" in err and "latency" in err


def test_unknown_device_is_an_error_for_every_backend(capsys):
    from cmunext_edge.runtime.base import BackendError
    from cmunext_edge.runtime.registry import check_request
    for name in ("model.pth", "model.onnx", "model.xml", "model.engine"):
        with pytest.raises(BackendError, match="unknown device"):
            check_request(name, "tpu")
    rc, _, err = _run(predict_cli.main, [SAMPLE, "--device", "tpu", "--out", "/tmp/never-written-x"], capsys)
    assert rc == 2 and "unknown device" in err


# --- export ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, expect", [(["--batch", "0"], "argument --batch: 0 is out of range"),
                                          (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
                                          (["--imgsz", "250"], "argument --imgsz: 250 is not a multiple of 16"),
                                          (["--calib-size", "-5"], "argument --calib-size: -5 is out of range")])
def test_export_value_errors_exit_2_before_work(tmp_path, capsys, argv, expect):
    rc, _, err = _run(export_cli.main, ["--weights", SHIPPED, "--target", "onnx", "--out", tmp_path / "e",
                                        *argv], capsys)
    assert rc == 2 and err.startswith(f"cmunext-export: error: {expect}") and err.count("\n") == 1, err
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


def test_export_empty_calibration_folder_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(export_cli.main, ["--weights", SHIPPED, "--target", "onnx", "--out", tmp_path / "e",
                                        "--verify-data", tmp_path / "empty"], capsys)
    assert rc == 2 and "no images" in err


@pytest.mark.parametrize("content", ['{"format": "cmunext-edge export manifest", "artifacts": {"a.onnx": {',
                                     '{"artifacts": []}', "[]", "[" * 100000])    # the last: RecursionError in json
def test_damaged_manifest_is_refused_and_kept(tmp_path, capsys, content):
    out = tmp_path / "e"
    out.mkdir()
    (out / "manifest.json").write_text(content)
    rc, _, err = _run(export_cli.main, ["--weights", SHIPPED, "--target", "onnx", "--out", out], capsys)
    assert rc == 2 and "manifest.json is damaged" in err
    assert (out / "manifest.json").read_text() == content
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_exports_at_once_into_one_folder_keep_every_manifest_entry(tmp_path):
    import subprocess
    import sys
    script = ("import sys; from pathlib import Path; from cmunext_edge.export.manifest import write_manifest\n"
              "for i in range(60):\n"
              "    write_manifest(Path(sys.argv[1]), f'{sys.argv[2]}{i}.onnx', {'files': [], 'n': i})\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag]) for tag in "ab"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    entries = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    assert len(entries) == 120 and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_stale_staging_is_cleared(tmp_path):
    from cmunext_edge.export.staging import OWNER_FILE, clear_stale_staging
    import tempfile
    import time

    def staging(stem):                                 # named as an export names its staging folders
        return Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".staging", dir=tmp_path))
    dead = staging("m_fp32")
    (dead / OWNER_FILE).write_text("999999999")        # no such process
    live = staging("m_fp32")
    (live / OWNER_FILE).write_text(str(os.getpid()))
    empty, unowned = staging("m_int8"), staging("m_int8")      # a process killed before owner.pid
    (unowned / "model.onnx").write_bytes(b"x")
    users = tmp_path / ".my-results.staging"           # a user's own folder, however old, is never ours
    users.mkdir()
    (users / "notes.txt").write_text("precious")
    mimic = tmp_path / ".my-results.abcdefgh.staging"  # named like ours but without owner.pid, not empty
    mimic.mkdir()
    (mimic / "notes.txt").write_text("precious")
    old = time.time() - 7200
    for folder in (users, mimic, empty, unowned):
        os.utime(folder, (old, old))
    assert sorted(clear_stale_staging(tmp_path)) == sorted([dead, empty])
    assert live.is_dir() and not dead.exists() and not empty.exists() and unowned.is_dir()
    assert (users / "notes.txt").read_text() == (mimic / "notes.txt").read_text() == "precious"


def test_sigterm_during_export_leaves_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "e"
    proc = subprocess.Popen([sys.executable, "-m", "cmunext_edge.cli.export", "--weights", str(SHIPPED),
                             "--target", "onnx", "--out", str(out), "--calib-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".*.staging")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "export finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "SIGTERM" in err and "Traceback" not in err, err
    assert not out.exists()                   # nothing left: not even the --out folder the export made


def test_control_characters_in_file_names_cannot_forge_output_lines(tmp_path, capsys):
    """A newline, carriage return or escape sequence in a file name is printed escaped: one record per
    line, no raw control character on the terminal; --name refuses them (exit 2)."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLE, src / "a\nskipped: forged\x1b[2K.png")
    (src / "b\rx.txt").write_text("not an image")
    rc, out, err = _run(predict_cli.main, [src, "--out", tmp_path / "o", "--no-overlay"], capsys)
    assert rc == 1, err
    text = out + err
    assert "\x1b" not in text and "\r" not in text, text
    assert not [ln for ln in text.splitlines() if ln.startswith("skipped: forged")], text
    assert "a\\nskipped: forged\\x1b[2K" in out and "b\\rx.txt: not processed" in err, (out, err)
    from cmunext_edge.cli import export as export_cli
    rc, _, err = _run(export_cli.main, ["--weights", "cmunext-s-busi", "--target", "onnx", "--name", "a\nb",
                                        "--out", tmp_path / "e"], capsys)
    assert rc == 2 and "control characters" in err and "\n" not in err.strip() and not (tmp_path / "e").exists()


def test_file_names_that_are_not_utf8_are_segmented_not_a_crash(tmp_path):
    """OpenCV's file functions crash (SIGSEGV) on a name Python holds as surrogate escapes: such an
    image (with its ground truth), a video and an output folder named so go through (a video's
    overlay.mp4 too, and in a folder of videos the sub-folder named after such a video: was exit 2,
    "OpenCV cannot write there", after decoding), in a child process so that a crash fails this test
    instead of the suite."""
    import subprocess
    import sys
    bad = os.fsdecode(b"bad\xffname")
    data = tmp_path / "ds"
    (data / "images").mkdir(parents=True)
    (data / "masks" / "0").mkdir(parents=True)
    shutil.copyfile(SAMPLE, data / "images" / f"{bad}.png")
    shutil.copyfile(SAMPLES_DIR / "masks" / "0" / SAMPLE.name, data / "masks" / "0" / f"{bad}.png")
    clip = tmp_path / f"{bad}.avi"
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 80))
    for i in range(3):
        writer.write(cv2.resize(cv2.imread(str(SAMPLE)), (96, 80)))
    writer.release()
    os.replace(tmp_path / "clip.avi", clip)

    def predict(*args):
        return subprocess.run([sys.executable, "-m", "cmunext_edge.cli.predict", *map(str, args), "--quiet"],
                              capture_output=True, text=True, errors="replace")
    images = predict(data, "--out", tmp_path / f"out{bad}")
    assert images.returncode == 0, images.stderr
    assert (tmp_path / f"out{bad}" / "masks" / f"{bad}.png").is_file()
    assert "bad\\udcffname," in (tmp_path / f"out{bad}" / "scores.csv").read_text()   # escaped, still UTF-8
    video = predict(clip, "--out", tmp_path / "video")
    assert video.returncode == 0, video.stderr
    assert len(list((tmp_path / "video" / "masks").iterdir())) == 3
    there = predict(clip, "--out", tmp_path / f"video{bad}")   # OpenCV's writer gets a link to the folder
    assert there.returncode == 0, there.stderr
    assert sorted(os.listdir(tmp_path / f"video{bad}")) == ["masks", "overlay.mp4", "video_summary.json"]
    folder = tmp_path / "videos"                              # its sub-folder is named after the video
    folder.mkdir()
    shutil.copyfile(clip, folder / clip.name)
    shutil.copyfile(clip, folder / "plain.avi")
    both = predict(folder, "--out", tmp_path / "both", "--mask-video")
    assert both.returncode == 0, both.stderr
    assert (tmp_path / "both" / bad / "mask.mp4").is_file() and (tmp_path / "both" / bad / "overlay.mp4").is_file()


def test_a_manifest_nested_too_deeply_is_damaged_not_unexpected(onnx_trained, tmp_path, capsys):
    """Before: a manifest.json of 100000 '[' beside an artifact ended cmunext-predict with 'unexpected
    RecursionError' (json's recursion limit); now it is read as any damaged manifest ('[]'): named
    as damaged, no entry used, the files checked against the content hash the export embedded."""
    art = tmp_path / onnx_trained.artifact.name
    shutil.copyfile(onnx_trained.artifact, art)
    (tmp_path / "manifest.json").write_text("[" * 100000)
    from cmunext_edge.fileio import loads_json
    with pytest.raises(ValueError, match="nested too deeply"):
        loads_json("[" * 100000)
    for main, argv in ((predict_cli.main, [SAMPLE, "--weights", art, "--out", tmp_path / "o"]), (info_cli.main, [art])):
        rc, out, err = _run(main, argv, capsys)
        assert rc == 0 and "unexpected" not in out + err and "Recursion" not in out + err, (out, err)
        assert "manifest.json is damaged: not readable JSON (JSON nested too deeply" in out, out
