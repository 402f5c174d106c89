"""Ray Data batch job on a local Ray instance (num_cpus=2): same masks as cmunext-predict,
resumable, bad files reported, a killed actor still leaves every image accounted for."""
import json
import os
import shutil
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from cmunext_edge.cli.predict import main as predict_main
from cmunext_edge.data.discovery import discover

ray = pytest.importorskip("ray")
pytest.importorskip("onnxruntime")
from cmunext_edge.scale.ray_batch import PARTS, run_ray_job  # noqa: E402

from conftest import SAMPLES  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def onnx_model(onnx_trained):
    """The session's verified dynamic-batch ONNX of the shipped model (conftest)."""
    return onnx_trained.artifact


def masks(folder):
    return {p.name: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((folder / "masks").iterdir())}


def notes(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("note: ")]


def test_ray_cli_gives_the_masks_and_scores_of_cmunext_predict(local_ray, onnx_model, tmp_path):
    common = [str(SAMPLES), "--weights", str(onnx_model), "--quiet", "--batch-size", "4"]
    assert predict_main(common + ["--out", str(tmp_path / "one"), "--summary-json", str(tmp_path / "a.json")]) == 0
    assert predict_main(common + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "2",
                                  "--summary-json", str(tmp_path / "b.json")]) == 0
    one, par = masks(tmp_path / "one"), masks(tmp_path / "ray")
    assert len(one) == 16 and one.keys() == par.keys()
    assert all(np.array_equal(one[k], par[k]) for k in one)
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert b["n_images"] == 16 and b["mean_dice"] == pytest.approx(a["mean_dice"], abs=1e-6)
    assert (tmp_path / "ray" / "scores.csv").read_text().count("\n") == 17
    assert len(list((tmp_path / "ray" / "overlays").iterdir())) == 16


def test_ray_engine_notes_an_export_that_was_not_verified_like_the_local_job(local_ray, onnx_model, tmp_path,
                                                                              capsys):
    """The Ray engine printed no 'export verification' note: an artifact exported with --no-verify
    (here: the session's ONNX with its manifest entry's record removed) ran with no word of it."""
    art = tmp_path / "art" / onnx_model.name
    art.parent.mkdir()
    shutil.copy2(onnx_model, art)
    manifest = json.loads((onnx_model.parent / "manifest.json").read_text())
    manifest["artifacts"][art.name]["verification"] = None
    (art.parent / "manifest.json").write_text(json.dumps(manifest))
    common = [str(SAMPLES / "images" / "benign (100).png"), "--weights", str(art), "--quiet"]
    said = []
    for engine in ("local", "ray"):
        assert predict_main(common + ["--out", str(tmp_path / engine), "--engine", engine]) == 0
        said.append(notes(capsys.readouterr().out))
    assert "note: export verification: NOT verified at export (--no-verify)" in said[0], said[0]
    assert said[1] == said[0]


def test_rerun_processes_only_missing_images_and_reports_bad_files(local_ray, onnx_model, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SAMPLES / "images", src)
    (src / "broken.png").write_bytes(b"not a png")
    samples = discover(src)
    out = tmp_path / "out"
    first = run_ray_job(onnx_model, samples, out, batch_size=4)
    assert len(first.rows) == 16 and [s["path"] for s in first.skipped] == [str(src / "broken.png")]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    gone = sorted(stamps)[:5]
    for name in gone:
        (out / "masks" / name).unlink()
        (out / PARTS / (name[:-4] + ".json")).unlink()
    logs = []
    second = run_ray_job(onnx_model, samples, out, batch_size=4, log=logs.append)
    assert "resuming: 11 of 17" in logs[0]
    assert len(second.rows) == 16 and len(second.skipped) == 1
    after = {p.name: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    assert after.keys() == stamps.keys()
    assert sorted(n for n in after if after[n] != stamps.get(n)) == gone     # only the missing ones redone


def _kill_first_actor_when(out, at_least, killed):
    import psutil
    deadline = time.time() + 60
    while time.time() < deadline and not killed:
        parts = out / PARTS
        if parts.is_dir() and len(list(parts.iterdir())) >= at_least:
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "SegmentActor" in " ".join(proc.cmdline()):
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.append(proc.pid)
                        return
                except psutil.Error:
                    continue
        time.sleep(0.05)


def test_killed_actor_mid_run_still_accounts_for_every_image(local_ray, onnx_model, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):     # 64 images
        for p in (SAMPLES / "images").iterdir():
            shutil.copyfile(p, src / f"{i}_{p.name}")
    samples, out, killed = discover(src), tmp_path / "out", []
    killer = threading.Thread(target=_kill_first_actor_when, args=(out, 8, killed), daemon=True)
    killer.start()
    result = run_ray_job(onnx_model, samples, out, batch_size=2)
    killer.join()
    assert killed, "no actor was found to kill"
    assert len(result.rows) == 64 and not result.skipped
    assert len(list((out / "masks").iterdir())) == 64


def test_missing_artifact_fails_before_starting(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.onnx: no such artifact"):
        run_ray_job(tmp_path / "none.onnx", discover(SAMPLES), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_missing_artifact(tmp_path, capsys):
    code = predict_main([str(SAMPLES), "--weights", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "o"),
                         "--engine", "ray"])
    assert code == 2 and "no such artifact" in capsys.readouterr().err


def test_parts_of_another_artifact_are_not_reused(tmp_path):
    from cmunext_edge.scale.ray_batch import _claim, _done
    from cmunext_edge.data.discovery import Sample
    a, b, out = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "out"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    (out / PARTS).mkdir(parents=True)
    samples = [Sample("x", tmp_path / "x.png")]
    _claim(out, a, None)
    (out / PARTS / "x.json").write_text(json.dumps({"name": "x"}))
    _claim(out, a, None)
    assert _done(out, samples) == {"x": {"name": "x"}}
    logs = []
    _claim(out, b, logs.append)
    assert _done(out, samples) == {} and "another artifact" in logs[0]


def test_ray_engine_segments_a_dicom_folder_like_the_local_job(local_ray, tmp_path, capsys):
    """DICOM through --engine ray: every frame of the cine loop, the same masks and valid SEGs as the
    local job, a structured report and a truncated file reported once each, as by the local job
    (exit 1), and the rest done."""
    pytest.importorskip("highdicom")
    from pydicom.data import get_testdata_file
    from cmunext_edge.data.dicom_sample import write_ultrasound_dicoms
    src = tmp_path / "dicom"
    write_ultrasound_dicoms(src)
    shutil.rmtree(src / "png")
    shutil.copy(get_testdata_file("test-SR.dcm"), src / "report.dcm")
    shutil.copy(src / "us_rgb.dcm", tmp_path / "us_rgb.dcm")
    (src / "cut.dcm").write_bytes((tmp_path / "us_rgb.dcm").read_bytes()[:5000])   # pixel data cut short
    common = [str(src), "--quiet", "--batch-size", "4"]
    reported = {}
    for engine in ("one", "ray"):
        capsys.readouterr()
        assert predict_main(common + ["--out", str(tmp_path / engine)] + ["--engine", "ray"] * (engine == "ray")) == 1
        reported[engine] = sorted(line.split(":", 2)[1].strip() for line in capsys.readouterr().err.splitlines()
                                  if line.startswith("skipped:"))
    assert reported["one"] == reported["ray"] == [str(src / "cut.dcm"), str(src / "report.dcm")], reported
    one, par = masks(tmp_path / "one"), masks(tmp_path / "ray")
    assert len(one) == 7 and one.keys() == par.keys()
    assert all(np.array_equal(one[k], par[k]) for k in one)
    segs = sorted(p.name for p in (tmp_path / "ray" / "seg").iterdir())
    assert segs == sorted(p.name for p in (tmp_path / "one" / "seg").iterdir()) and len(segs) == 5


def test_actors_apply_the_jobs_pixel_limit(local_ray, onnx_model, tmp_path):
    """--max-pixels reaches the actors: an image above it is skipped there, not decoded."""
    sizes = {p.name: cv2.imread(str(p)).shape[:2] for p in (SAMPLES / "images").iterdir()}
    limit = sorted(h * w for h, w in sizes.values())[8]          # about half of the samples are above it
    above = sorted(n[:-4] for n, (h, w) in sizes.items() if h * w > limit)
    result = run_ray_job(onnx_model, discover(SAMPLES), tmp_path / "out", batch_size=4, max_pixels=limit)
    assert above and sorted(s["name"] for s in result.skipped) == above
    assert all("exceeds the limit" in s["error"] and "not decoded" in s["error"] for s in result.skipped)
    assert len(result.rows) == 16 - len(above)


def _actor_batch(samples) -> dict:
    """A Ray Data batch (numpy columns) of `samples`, as the job hands it to an actor."""
    from cmunext_edge.scale.ray_batch import ITEM_KEYS, _item
    items = [_item(s) for s in samples]
    return {key: np.array([item[key] for item in items], dtype=object) for key in ITEM_KEYS}


@pytest.mark.parametrize("fails", ["third image file", "records"])
def test_an_actor_on_a_full_disk_reports_each_image_and_leaves_none_half_done(onnx_model, tmp_path, monkeypatch,
                                                                               fails):
    """A full disk in an actor failed the whole batch in Ray's words (RayTaskError(UserCodeException)
    ..., retried, then every image 'not processed after 3 attempts') and left the outputs written
    before it on disk for images counted as not done. Now each image not written is reported with
    the disk's reason, and an image on disk has its record (part) too, or no outputs at all."""
    import errno
    from cmunext_edge.predict import job
    from cmunext_edge.scale import ray_batch
    samples, out = discover(SAMPLES)[:3], tmp_path / "out"
    actor = ray_batch.SegmentActor(str(onnx_model), str(out))
    full = OSError(errno.ENOSPC, "No space left on device")
    if fails == "third image file":             # mask and overlay of the first image, then the disk is full
        real, calls = job.write_png, []
        monkeypatch.setattr(job, "write_png", lambda path, img: real(path, img) if len(calls.append(0) or calls) <= 2
                            else (_ for _ in ()).throw(full))
    else:                                       # every PNG written, no record can be
        monkeypatch.setattr(ray_batch, "atomic_path", lambda path: (_ for _ in ()).throw(full))
    answer = actor(_actor_batch(samples))
    errors = dict(zip(answer["name"], answer["error"]))
    assert sorted(errors) == sorted(s.name for s in samples)
    done = [name for name, error in errors.items() if not error]
    assert all("No space left on device" in errors[s.name] and str(s.image) in errors[s.name]
               for s in samples if s.name not in done), errors
    assert done == ([samples[0].name] if fails == "third image file" else [])
    on_disk = sorted(p.stem for p in out.glob("*/*.png"))
    assert on_disk == sorted(done * 2) and sorted(p.stem for p in (out / PARTS).glob("*.json")) == done
