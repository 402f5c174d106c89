"""Reliability, round three: what a hostile-input audit of the issue-22 work still broke, as tests.

Upper bounds on counts (a typo like threads=99999 exhausted memory before any work), report files
that never replace a device or FIFO, output paths checked before a long run, one line (never
"unexpected ..., report it") for damaged inputs of info/compare/bundle/check and for a damaged
resume state, skipped lines that name their file, and one bad evaluation image that no longer
stops a bench."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmunext_edge.cli import bench as bench_cli
from cmunext_edge.cli import bundle as bundle_cli
from cmunext_edge.cli import check as check_cli
from cmunext_edge.cli import compare as compare_cli
from cmunext_edge.cli import info as info_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.cli import train as train_cli
from cmunext_edge.fileio import atomic_path
from cmunext_edge.resources import SAMPLES_DIR

from test_reliability import one_error_line, onnx_art, run_cli  # noqa: F401  (onnx_art: a fixture)

SAMPLES = sorted((SAMPLES_DIR / "images").glob("*.png"))


@pytest.mark.parametrize("main,argv,says", [
    (bench_cli.main, ["cmunext-s-busi@threads=99999"], "expected an integer in [1, 1024]"),
    (predict_cli.main, [SAMPLES_DIR, "--out", "o", "--workers", "100000"], "must lie in [1, 1024]"),
    (predict_cli.main, [SAMPLES_DIR, "--out", "o", "--batch-size", "1000000"], "must lie in [1, 1024]"),
    (train_cli.main, [SAMPLES_DIR, "--out", "t", "--seed", str(10 ** 23)], "must lie in [0, 4294967295]"),
    (train_cli.main, [SAMPLES_DIR, "--out", "t", "--threads", "5000"], "must lie in [0, 1024]"),
])
def test_counts_have_an_upper_bound(main, argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(main, argv, capsys)
    prog = "cmunext-" + main.__module__.rsplit(".", 1)[1]
    assert rc == 2 and says in one_error_line(err, prog) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []                       # nothing written, no split.json


def test_a_report_never_replaces_a_device_or_fifo(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="not a regular file"):
        with atomic_path(fifo) as tmp:
            tmp.write_text("{}")
    rc, _, err = run_cli(predict_cli.main, [SAMPLES[0], "--out", tmp_path / "o", "--summary-json", fifo], capsys)
    assert rc == 2 and "exists and is not a regular file" in one_error_line(err, "cmunext-predict")
    assert fifo.is_fifo() and not (tmp_path / "o").exists()     # refused before anything, folder not made


def test_output_paths_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(bench_cli.main, ["cmunext-s-busi", "--json", afile / "r.json"], capsys)
    assert rc == 2 and "--json folder" in one_error_line(err, "cmunext-bench") and "p50" not in out
    rc, _, err = run_cli(predict_cli.main, [SAMPLES[0], "--out", ""], capsys)
    assert rc == 2 and "--out is empty" in one_error_line(err, "cmunext-predict") and err.count("\n") == 1, err
    from cmunext_edge.cli import export as export_cli
    rc, _, err = run_cli(export_cli.main, ["--weights", "cmunext-s-busi", "--target", "onnx", "--out", afile], capsys)
    assert rc == 2 and "exists and is not a folder" in one_error_line(err, "cmunext-export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("sub", ["masks", "overlays"])
def test_an_output_sub_folder_that_is_a_file_is_refused_before_the_work(sub, tmp_path, capsys):
    """Before: --out/masks a file, every image was skipped after its inference ('[Errno 17] File
    exists' once per image). Now one line before any model loads, exit 2, the file kept."""
    out = tmp_path / "o"
    out.mkdir()
    (out / sub).write_text("mine")
    rc, printed, err = run_cli(predict_cli.main, [SAMPLES[0], "--out", out], capsys)
    line = one_error_line(err, "cmunext-predict")
    assert rc == 2 and f"--out sub-folder {out / sub} exists and is not a folder" in line and "model:" not in printed
    assert sorted(p.name for p in out.iterdir()) == [sub] and (out / sub).read_text() == "mine"


def test_a_damaged_or_hostile_resume_state_is_one_line_and_never_runs(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, write in (("evil", lambda p: torch.save({"model": Evil()}, p)), ("empty", lambda p: p.write_bytes(b"")),
                        ("cut", lambda p: p.write_bytes(b"PK\x03\x04" + bytes(200)))):
        out = tmp_path / name
        out.mkdir()
        write(out / "last.pt")
        rc, _, err = run_cli(train_cli.main, [SAMPLES_DIR, "--out", out, "--epochs", "1"], capsys)
        line = one_error_line(err, "cmunext-train")
        assert rc == 2 and "cannot resume from it" in line and "unexpected" not in line, err
        assert "weights_only" not in err                             # never torch's advice to turn safety off
    assert not marker.exists()
    fresh = tmp_path / "fresh"                                       # the hostile file as --init: nothing made
    rc, _, err = run_cli(train_cli.main, [SAMPLES_DIR, "--out", fresh, "--epochs", "1", "--init",
                                          tmp_path / "evil" / "last.pt"], capsys)
    assert rc == 2 and "refused to unpickle" in one_error_line(err, "cmunext-train") and not fresh.exists()
    assert not marker.exists()


def test_info_names_a_damaged_file_and_a_modified_artifact(onnx_art, tmp_path, capsys):
    garbage = tmp_path / "g.onnx"
    garbage.write_bytes(b"garbage")
    bad_xml = tmp_path / "b.xml"
    bad_xml.write_text("<xml")
    for path, says in ((garbage, "not a readable ONNX file"), (bad_xml, "not a readable OpenVINO IR file")):
        rc, _, err = run_cli(info_cli.main, [path], capsys)
        assert rc == 2 and says in one_error_line(err, "cmunext-info") and "unexpected" not in err
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in (onnx_art, onnx_art.parent / "manifest.json"):
        shutil.copy(f, copy / f.name)
    assert run_cli(info_cli.main, [copy / onnx_art.name], capsys)[0] == 0
    data = bytearray((copy / onnx_art.name).read_bytes())
    data[len(data) // 2] ^= 1
    (copy / onnx_art.name).write_bytes(bytes(data))
    rc, out, err = run_cli(info_cli.main, [copy / onnx_art.name], capsys)
    assert rc == 1 and "MODIFIED OR DAMAGED" in out and "manifest.json" in one_error_line(err, "cmunext-info")


def test_a_garbage_ir_is_one_line_without_openvino_frontend_noise(tmp_path):
    pytest.importorskip("openvino")
    (tmp_path / "m.xml").write_text("<xml")
    r = subprocess.run([sys.executable, "-m", "cmunext_edge.cli.predict", str(SAMPLES[0]), "--out",
                        str(tmp_path / "o"), "--weights", str(tmp_path / "m.xml"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "not an OpenVINO IR" in r.stderr and "tensorflow" not in r.stderr.lower()


def test_compare_bundle_and_check_name_user_errors_as_such(tmp_path, capsys):
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({"format": "cmunext-edge device report", "label": "x"}))
    rc, _, err = run_cli(compare_cli.main, [edited], capsys)
    assert rc == 2 and "incomplete or edited device report" in one_error_line(err, "cmunext-compare")
    rc, _, err = run_cli(bundle_cli.main, [tmp_path / "missing.onnx"], capsys)
    assert rc == 2 and one_error_line(err, "cmunext-bundle") == (
        f"cmunext-bundle: error: {tmp_path / 'missing.onnx'}: no such artifact (give the exported .onnx, .xml "
        f"or .engine)"), err
    archive = tmp_path / "cut.bundle.tar.gz"
    with tarfile.open(tmp_path / "full.tar.gz", "w:gz") as tar:
        for p in SAMPLES[:4]:
            tar.add(p, arcname=f"b/{p.name}")
    archive.write_bytes((tmp_path / "full.tar.gz").read_bytes()[:2000])
    rc, _, err = run_cli(check_cli.main, [archive], capsys)
    line = one_error_line(err, "cmunext-check")
    assert rc == 2 and f"{archive}: not a readable bundle archive (damaged, truncated or not a .tar.gz" in line, err
    assert "unexpected" not in line


def test_a_skipped_line_names_its_file(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLES[0], src / "good.png")
    cv2.imwrite(str(src / "float.tiff"), np.full((40, 40), 0.5, np.float32))
    rc, _, err = run_cli(predict_cli.main, [src, "--out", tmp_path / "o", "--quiet"], capsys)
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped:")]
    assert rc == 1 and len(skipped) == 1 and str(src / "float.tiff") in skipped[0], err


def test_one_bad_evaluation_image_does_not_stop_the_bench(tmp_path, capsys):
    data = tmp_path / "ds"
    (data / "images").mkdir(parents=True)
    (data / "masks" / "0").mkdir(parents=True)
    for p in SAMPLES[:2]:
        shutil.copy(p, data / "images" / p.name)
        shutil.copy(SAMPLES_DIR / "masks" / "0" / p.name, data / "masks" / "0" / p.name)
    (data / "images" / "junk.png").write_bytes(b"junk")
    shutil.copy(SAMPLES[2], data / "images" / "unpaired.png")                  # an image without a mask
    rc, out, err = run_cli(bench_cli.main, ["cmunext-s-busi", "--iters", "1", "--warmup", "0", "--batch-sizes", "1",
                                            "--throughput-time", "0", "--matmul-time", "0", "--data", data,
                                            "--json", tmp_path / "r.json", "--quiet"], capsys)
    # measured, but not on every input: exit 1, the file named, the report says what was left out
    assert rc == 1 and f"skipped evaluation image: {data / 'images' / 'junk.png'}" in err, err
    assert "1 of the 3 --data images have no mask (e.g. 'unpaired')" in err, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows"][0]["dice"] is not None and report["rows"][0]["n_dice_images"] == 2
    assert report["rows"][0]["n_agreement_images"] == 3 and "junk.png" in report["skipped"][0]


def test_a_manifest_never_makes_the_loader_read_another_path(onnx_art, tmp_path):
    from cmunext_edge.artifacts.integrity import precheck
    copy = tmp_path / "m"
    copy.mkdir()
    for f in (onnx_art, onnx_art.parent / "manifest.json"):
        shutil.copy(f, copy / f.name)
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in ("/etc/passwd", "../m/" + onnx_art.name):
        manifest["artifacts"][onnx_art.name]["files"].append({"name": name, "sha256": "0" * 64})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = precheck(copy / onnx_art.name)
    assert not report.ok and "'/etc/passwd', which is not a file beside the artifact" in report.message()
    assert "'../m/" in report.message()


def test_one_bad_latency_image_does_not_stop_the_bench(tmp_path, capsys):
    images = tmp_path / "lat"
    images.mkdir()
    shutil.copy(SAMPLES[0], images / SAMPLES[0].name)
    (images / "junk.png").write_bytes(b"junk")
    rc, out, err = run_cli(bench_cli.main, ["cmunext-s-busi", "--iters", "1", "--warmup", "0", "--batch-sizes", "1",
                                            "--throughput-time", "0", "--matmul-time", "0", "--images", images,
                                            "--quiet"], capsys)
    assert rc == 1 and f"skipped latency image: {images / 'junk.png'}" in err, (out, err)
    import re                                     # measured all the same: the row has a p50 in ms
    assert re.search(r"pytorch/cpu/fp32\s+cpu\s+\d+\.\d+\s", out) and "p50 ms" in out, out
    (images / SAMPLES[0].name).unlink()
    rc, out, err = run_cli(bench_cli.main, ["cmunext-s-busi", "--iters", "1", "--images", images, "--quiet"], capsys)
    assert rc == 2 and "none of its 1 latency images could be read" in err, err
