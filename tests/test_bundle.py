"""Device bundles and cmunext-check: a bundle of the shipped model passes on this machine; a flipped
byte, an edited preprocessing value or outputs that disagree with the host fail with one clear line
and a non-zero exit; reports merge into one table. Slow: a fresh venv without torch; the ARM matrix."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cmunext_edge.device.bundle import (
    MANIFEST, REFERENCE, file_table, make_bundle, read_bundle, write_manifest)
from cmunext_edge.cli import check as check_cli
from cmunext_edge.device.compare import compare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pristine(onnx_trained, tmp_path_factory):
    return make_bundle(onnx_trained.artifact, tmp_path_factory.mktemp("bundles"), n_images=3)


@pytest.fixture
def bundle(pristine, tmp_path):
    """A private copy of the module's bundle, free to tamper with."""
    return Path(shutil.copytree(pristine.folder, tmp_path / pristine.folder.name))


def _check(folder, capsys, *extra):
    rc = check_cli.main([str(folder), "--iters", "2", "--warmup", "1", "--quiet", *extra])
    return rc, capsys.readouterr()


def _rehash(folder: Path) -> None:
    """What a careful tamperer would do: make bundle.json agree with the edited files."""
    _, manifest = read_bundle(folder)
    manifest["files"] = file_table(folder)
    write_manifest(folder, manifest)


def test_bundle_holds_artifact_contract_references_and_runtime_only_requirements(pristine):
    folder, manifest = pristine.folder, pristine.manifest
    assert manifest["artifact"] == "artifact/cmunext-s-busi_fp32.onnx" and manifest["backend"] == "onnxruntime"
    lines = (folder / "requirements.txt").read_text().splitlines()
    top = lines[:lines.index(next(line for line in lines if line.startswith("#")))]
    assert [r.split("==")[0] for r in top] == ["numpy", "opencv-python-headless", "onnxruntime"]
    reqs = [line for line in lines if not line.startswith("#")]
    assert all("==" in r for r in reqs) and len(reqs) > len(top)      # the dependencies pinned too
    assert not any("torch" in r or "openvino" in r for r in reqs)
    assert json.loads((folder / "preprocess.json").read_text())["height"] == 256
    assert json.loads((folder / "selftest.json").read_text())["mask_bits"]
    assert len(manifest["references"]) == 3
    ref = np.load(folder / REFERENCE)
    assert ref["logits"].shape == (3, 1, 256, 256) and ref["inputs"].shape == (3, 3, 256, 256)
    assert set(manifest["files"]) == set(file_table(folder)) and "artifact/cmunext-s-busi_fp32.onnx" in manifest["files"]
    with tarfile.open(pristine.archive) as tf:
        assert f"{folder.name}/{MANIFEST}" in tf.getnames()


def test_core_wheel_installs_the_check_and_records_its_files(pristine):
    wheel = pristine.folder / pristine.manifest["wheel"]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read("cmunext_edge-0.1.0.dist-info/RECORD").decode()
        entry_points = zf.read("cmunext_edge-0.1.0.dist-info/entry_points.txt").decode()
    assert {"cmunext_edge/cli/check.py", "cmunext_edge/device/check.py", "cmunext_edge/runtime/base.py",
            "cmunext_edge/export/pipeline.py"} <= names
    assert not any(n.endswith(".safetensors") or "__pycache__" in n for n in names)
    declared = dict(line.split(" = ") for line in entry_points.splitlines()[1:])
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert "cmunext-check" in declared and all(project[k] == v for k, v in declared.items()), declared
    assert len(record.strip().splitlines()) == len(names)


def test_check_passes_on_this_machine_and_writes_the_report(bundle, capsys):
    rc, out = _check(bundle, capsys, "--label", "test host")
    assert rc == 0, out.err
    assert "PASSED (test host)" in out.out
    report = json.loads((bundle / "device_report.json").read_text())
    assert report["passed"] and report["first_failure"] is None
    assert [c["name"] for c in report["checks"]] == ["signature", "files", "sbom", "preprocessing_contract",
                                                     "selftest", "host_inputs", "device_preprocessing", "latency"]
    assert report["signature"] == "unsigned" and not report["sbom"]["missing"] and not report["sbom"]["different"]
    assert report["ran"]["precision"] == "fp32" and report["selftest"]["passed"]
    assert report["agreement"]["mask_dice_mean"] >= 0.999 and report["agreement"]["images"] == 3
    assert abs(report["dice"]["device"] - report["dice"]["host"]) < 0.01
    assert report["end_to_end"]["input_values_differing"] == 0.0     # same machine, same OpenCV
    assert report["latency_ms"]["n"] == 2 and report["device"]["versions"]["onnxruntime"]


def test_check_can_use_fewer_images(bundle, capsys):
    assert _check(bundle, capsys, "--images", "1")[0] == 0
    report = json.loads((bundle / "device_report.json").read_text())
    assert report["agreement"]["images"] == 1 and report["end_to_end"]["images"] == 1


@pytest.mark.parametrize("step, desc, after", [("host_inputs", "host inputs", 2),
                                               ("device_preprocessing", "device preprocessing", 1)])
def test_sigterm_mid_check_writes_a_partial_report_never_a_pass(bundle, capsys, monkeypatch, step, desc, after):
    """A check stopped by SIGTERM (e.g. `timeout` on a slow, emulated device) exits 143 and keeps
    what it measured: the steps done and the images of the interrupted step that finished."""
    from cmunext_edge.cli.common import Terminated
    from cmunext_edge.progress import Progress
    update = Progress.update

    def stop_after(self, n=1, postfix=None):
        update(self, n, postfix)
        if self.desc == desc and self.n == after:
            raise Terminated("terminated (SIGTERM)")
    monkeypatch.setattr(Progress, "update", stop_after)
    rc = check_cli.main([str(bundle), "--iters", "1", "--warmup", "0", "--progress"])
    err = capsys.readouterr().err
    assert rc == 143, err
    assert f"interrupted during {step}; partial report:" in err and "PASSED" not in err
    report = json.loads((bundle / "device_report.json").read_text())
    assert report["interrupted"]["step"] == step and not report["passed"]
    assert [c["name"] for c in report["checks"]][-1] == ("selftest" if step == "host_inputs" else "host_inputs")
    key = "agreement" if step == "host_inputs" else "end_to_end"
    part = report[key]
    assert part["interrupted"] and not part["verified"]
    assert part["images"] == after and part["images_planned"] == 3 and part["mask_dice_mean"] >= 0.999
    if step == "device_preprocessing":      # the finished step keeps its full record and the Dice its images
        assert report["agreement"]["images"] == 3 and "interrupted" not in report["agreement"]
        assert report["dice"]["device"] > 0 and "latency_ms" not in report


def test_check_runs_where_torch_cannot_be_imported(bundle):
    from test_no_torch import run_without_torch
    done = run_without_torch("check", bundle, "--iters", "1", "--images", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout and "Traceback" not in done.stderr


def test_check_accepts_the_archive(pristine, tmp_path, capsys):
    tar = Path(shutil.copy(pristine.archive, tmp_path))
    rc, out = _check(tar, capsys)
    assert rc == 0, out.err
    assert (tmp_path / pristine.folder.name / "device_report.json").is_file()


def test_flipped_byte_in_the_artifact_fails_with_one_clear_line(bundle, capsys):
    onnx = bundle / "artifact" / "cmunext-s-busi_fp32.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    rc, out = _check(bundle, capsys)
    assert rc == 1
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "tampered" in lines[0] and "cmunext-s-busi_fp32.onnx sha256 mismatch" in lines[0]
    report = json.loads((bundle / "device_report.json").read_text())
    assert not report["passed"] and [c["name"] for c in report["checks"]] == ["signature", "files"]


def test_edited_preprocessing_value_fails_even_when_the_manifest_is_rehashed(bundle, capsys):
    path = bundle / "preprocess.json"
    spec = json.loads(path.read_text())
    spec["mean"][0] = 0.5
    path.write_text(json.dumps(spec))
    rc, out = _check(bundle, capsys)
    assert rc == 1 and "preprocess.json sha256 mismatch" in out.err
    _rehash(bundle)
    rc, out = _check(bundle, capsys)
    assert rc == 1 and len(out.err.strip().splitlines()) == 1
    assert "preprocessing contract in preprocess.json differs from the one embedded in the artifact (mean" in out.err


def test_edited_manifest_and_outputs_that_disagree_with_the_host_fail(bundle, capsys):
    original = (bundle / MANIFEST).read_text()
    manifest = json.loads(original)
    manifest["thresholds"]["min_agreement"] = 0.0
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    rc, out = _check(bundle, capsys)
    assert rc == 1 and "bundle.json was modified" in out.err
    (bundle / MANIFEST).write_text(original)
    ref = np.load(bundle / REFERENCE)["logits"]
    np.savez_compressed(bundle / REFERENCE, logits=-ref, inputs=np.load(bundle / REFERENCE)["inputs"])
    _rehash(bundle)
    rc, out = _check(bundle, capsys)
    assert rc == 1 and "outputs disagree with the export host: mask Dice agreement" in out.err


@pytest.mark.parametrize("where", ["absolute", "dotdot", "unlisted"])
def test_an_artifact_path_outside_the_bundle_is_refused_even_when_rehashed(bundle, tmp_path, capsys, where):
    """bundle.json's "artifact" pointed at a file outside the bundle (or at one it does not list), with
    bundle.json.sha256 recomputed as a tamperer would: the check fails at the file step, before any
    runtime opens a file, and names it."""
    outside = tmp_path / "elsewhere" / "q.onnx"
    outside.parent.mkdir()
    manifest = json.loads((bundle / MANIFEST).read_text())
    shutil.copy(bundle / manifest["artifact"], outside)
    manifest["artifact"] = {"absolute": str(outside),
                            "dotdot": os.path.relpath(outside, bundle),
                            "unlisted": "artifact/other.onnx"}[where]
    if where == "unlisted":
        shutil.copy(outside, bundle / "artifact" / "other.onnx")
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    (bundle / "bundle.json.sha256").write_text(
        hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest() + "  bundle.json\n")
    rc, out = _check(bundle, capsys)
    assert rc == 1 and "bundle tampered or damaged" in out.err and "names the artifact" in out.err, out.err
    report = json.loads((bundle / "device_report.json").read_text())
    ran = [c["name"] for c in report["checks"]]
    assert report["passed"] is False and "files" in ran and "preprocessing_contract" not in ran, ran


def test_device_preprocessing_is_judged_apart_from_the_runtime(bundle, capsys):
    """Images that preprocess differently on the device (here: re-encoded one grey level darker)
    leave the runtime check on the host's inputs intact, are measured, and a Dice drop beyond the
    budget fails end to end."""
    import cv2
    _, manifest = read_bundle(bundle)
    for row in manifest["references"]:
        img = cv2.imread(str(bundle / row["image"]))
        cv2.imwrite(str(bundle / row["image"]), cv2.subtract(img, 1))
    _rehash(bundle)
    assert _check(bundle, capsys)[0] == 0
    report = json.loads((bundle / "device_report.json").read_text())
    assert report["agreement"]["mask_dice_mean"] >= 0.999
    assert report["end_to_end"]["input_values_differing"] > 0.5
    for row in manifest["references"]:                  # now the device "sees" blank images
        cv2.imwrite(str(bundle / row["image"]), np.zeros((64, 64, 3), np.uint8))
    _rehash(bundle)
    rc, out = _check(bundle, capsys)
    assert rc == 1 and "below the host's" in out.err and "with this device's preprocessing" in out.err
    report = json.loads((bundle / "device_report.json").read_text())
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["device_preprocessing"]


def test_not_a_bundle_is_a_usage_error(tmp_path, capsys):
    rc, out = _check(tmp_path, capsys)
    assert rc == 2 and "not a bundle" in out.err


def test_openvino_bundle_carries_the_weights_file(trained, tmp_path, capsys):
    pytest.importorskip("openvino")
    from cmunext_edge.export.pipeline import export
    art = export(trained, target="openvino", precision="fp32", out=tmp_path / "ov", calib_size=4, log=lambda m: None).artifact
    res = make_bundle(art, tmp_path / "b", n_images=2, archive=False)
    assert {"artifact/cmunext-s-busi_fp32.xml", "artifact/cmunext-s-busi_fp32.bin"} <= set(res.manifest["files"])
    assert "openvino==" in (res.folder / "requirements.txt").read_text() and res.archive is None
    rc, out = _check(res.folder, capsys)
    assert rc == 0, out.err


def test_a_bundle_of_another_artifact_with_the_same_stem_is_never_replaced(pristine, onnx_trained, tmp_path, capsys):
    """m.onnx's bundle is in --out; bundling m.xml (same stem, same bundle name) is refused before any
    work (exit 2, one line) and leaves the ONNX bundle as it was; bundling m.onnx again replaces it."""
    from cmunext_edge.cli import bundle as bundle_cli
    out = tmp_path / "b"
    shutil.copytree(pristine.folder, out / pristine.folder.name)
    before = (out / pristine.folder.name / MANIFEST).read_bytes()
    ov = tmp_path / "ov" / "cmunext-s-busi_fp32.xml"
    ov.parent.mkdir()
    ov.write_text("<net/>")                         # refused on its name, before the file is ever read
    ov.with_suffix(".bin").write_bytes(b"")
    capsys.readouterr()
    assert bundle_cli.main([str(ov), "--out", str(out), "--no-archive"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a bundle of cmunext-s-busi_fp32.onnx" in err, err
    assert (out / pristine.folder.name / MANIFEST).read_bytes() == before
    assert [p.name for p in out.iterdir()] == [pristine.folder.name]
    res = make_bundle(onnx_trained.artifact, out, n_images=2, archive=False)
    assert res.folder == out / pristine.folder.name and res.manifest["images"]["n"] == 2


def test_compare_merges_reports_into_one_table(bundle, tmp_path, capsys):
    assert _check(bundle, capsys)[0] == 0
    host = json.loads((bundle / "device_report.json").read_text())
    emulated = {**host, "label": "Cortex-A72", "emulated": "QEMU user mode, QEMU_CPU=cortex-a72",
                "passed": False, "first_failure": "self-test FAILED: made up for the table"}
    cut = {**host, "label": "Neoverse-N1", "passed": False, "first_failure": None,
           "interrupted": {"step": "host_inputs", "seconds": 3600.0}}
    paths = []
    for name, rep in (("host", host), ("arm", emulated), ("cut", cut)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(rep))
    res = compare(paths, tmp_path / "devices")
    md = res["markdown"]
    assert md.count("cmunext-s-busi_fp32.onnx (onnxruntime fp32)") == 3
    assert "interrupted during host_inputs (partial)" in md
    # 3 images, none bad: the 95% bound is 1 - 0.05^(1/3) (one-sided Clopper-Pearson), too few for the claim
    assert f"0/3 ({100 * (1 - 0.05 ** (1 / 3)):.1f}%) few" in md
    from cmunext_edge.device.compare import _tail
    failed = {"n": 49, "n_bad": 1, "bad_share_upper95": 0.0932}
    assert _tail(failed, False, 49) == "1/49 (9.3%)"     # enough images, gate failed: not "few"
    assert _tail(failed, True, 49) == "1/49 (9.3%)" and _tail({**failed, "n": 20}, False, 49).endswith(" few")
    assert "Cortex-A72 *(emulated)*" in md
    assert "emulated: measured under instruction-set emulation" in md and "FAIL: self-test FAILED" in md
    assert json.loads((tmp_path / "devices.json").read_text())["rows"][0]["ran_precision"] == "fp32"
    with pytest.raises(ValueError, match="not a cmunext-check device report"):
        compare([tmp_path / "devices.json"])


@pytest.mark.slow
def test_fresh_venv_without_torch_passes_the_check(pristine, tmp_path):
    """What the device does: a new venv, the bundle's requirements and wheel, then cmunext-check."""
    folder = Path(shutil.copytree(pristine.folder, tmp_path / pristine.folder.name))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "-r", "requirements.txt", pristine.manifest["wheel"]]
    subprocess.run(pip, cwd=folder, check=True)
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode
    done = subprocess.run([str(venv / "bin" / "cmunext-check"), ".", "--iters", "2"], cwd=folder,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout


ARM_ROOT = Path(os.environ.get("CMUNEXT_ARM_ROOT", Path.home() / ".cache/cmunext-edge/arm64-bookworm"))


@pytest.mark.slow
def test_arm_matrix_when_its_root_is_cached(pristine, tmp_path):
    """The emulated ARM matrix (one bundle, both CPUs); skipped unless the arm64 root is cached."""
    if os.geteuid() != 0 or not (ARM_ROOT / "usr/bin/python3").exists():
        pytest.skip(f"ARM matrix skipped: no cached arm64 root with python3 at {ARM_ROOT} (or not root); "
                    "build it with benchmarks/devices/arm_matrix.sh")
    work = tmp_path / "work"
    shutil.copytree(pristine.folder, work / "bundles" / pristine.folder.name)
    env = {**os.environ, "CMUNEXT_DEVICE_WORK": str(work), "CMUNEXT_ARM_NO_BUILD": "1", "CMUNEXT_ARM_ITERS": "1"}
    subprocess.run([str(ROOT / "benchmarks/devices/arm_matrix.sh")], env=env, check=True, timeout=3600)
    summary = (work / "reports" / "summary.txt").read_text().split("\n")
    assert sum(line.startswith("rc=0 ") for line in summary) == 2, summary


def test_bundle_never_verifies_on_the_artifacts_calibration_images_when_others_exist():
    """Issue 21: verification images disjoint from calibration; the INT8 artifact's manifest names
    its calibration images and the bundle leaves them out (all of them when nothing else is there)."""
    from cmunext_edge.device.bundle import _pick_samples, _used
    from cmunext_edge.resources import SAMPLES_DIR

    def rows(picked):
        return [{"name": s.name} for s in picked]
    every, pool = _pick_samples(SAMPLES_DIR, 16)
    calib = [s.image.name for s in every[:5]]
    picked, pool = _pick_samples(SAMPLES_DIR, 16, calibration=calib)
    left = _used(pool, rows(picked), [])
    assert len(every) == 16 and len(picked) == 11 and pool["without_mask_not_used"] == 0
    assert left["calibration_not_used"] == 5 and left["without_mask_not_used"] == 0 and left["calibration_overlap"] == 0
    assert not {s.image.name for s in picked} & set(calib)
    picked, pool = _pick_samples(SAMPLES_DIR, 16, calibration=[s.image.name for s in every])
    left = _used(pool, rows(picked), [])
    assert len(picked) == 16 and left["calibration_overlap"] == 16 and left["calibration_not_used"] == 0


def test_bundle_says_which_verification_images_it_used_and_left_out(onnx_trained, tmp_path, capsys):
    """Images without a mask were dropped silently: the bundle now counts and prints them."""
    from cmunext_edge.cli import bundle as bundle_cli
    from cmunext_edge.resources import SAMPLES_DIR
    data = tmp_path / "ds"
    shutil.copytree(SAMPLES_DIR, data)
    shutil.copy(next((data / "images").glob("*.png")), data / "images" / "no_mask.png")
    assert bundle_cli.main([str(onnx_trained.artifact), "--images", str(data), "--n-images", "4", "--out", str(tmp_path / "b"),
                            "--no-archive"]) == 0
    out = capsys.readouterr().out
    assert f"verification images: 4 of {data}; 1 without a mask not used" in out, out
    manifest = json.loads(next((tmp_path / "b").glob("*.bundle/bundle.json")).read_text())
    assert manifest["images"]["without_mask_not_used"] == 1 and manifest["images"]["n"] == 4


def test_unreadable_ground_truth_names_the_users_file_and_leaves_nothing(onnx_trained, tmp_path, capsys):
    """A corrupt mask among the verification images: exit 2, one line naming the dataset's own file
    (not the bundle's staging copy of it), and no bundle folder left behind."""
    from cmunext_edge.cli import bundle as bundle_cli
    from cmunext_edge.resources import SAMPLES_DIR
    data = tmp_path / "ds"
    shutil.copytree(SAMPLES_DIR, data)
    masks = sorted((data / "masks" / "0").glob("*.png"))
    for m in masks:
        m.write_bytes(m.read_bytes()[:100])              # every mask truncated: whichever is sampled fails
    rc = bundle_cli.main([str(onnx_trained.artifact), "--images", str(data), "--n-images", "2",
                          "--out", str(tmp_path / "b"), "--no-archive"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "ground truth unusable" in err and str(data / "masks" / "0") in err and "staging" not in err, err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())



def test_an_unreadable_verification_image_names_the_users_file_not_the_staging_copy(onnx_trained, tmp_path,
                                                                                       capsys):
    """Before: a corrupt image among the verification images was named by its copy in the bundle's
    hidden staging folder, which the failed run had already removed."""
    from cmunext_edge.cli import bundle as bundle_cli
    from cmunext_edge.resources import SAMPLES_DIR
    data = tmp_path / "ds"
    shutil.copytree(SAMPLES_DIR, data)
    for image in (data / "images").glob("*.png"):
        image.write_bytes(b"not an image")            # whichever is sampled fails
    rc = bundle_cli.main([str(onnx_trained.artifact), "--images", str(data), "--n-images", "2",
                          "--out", str(tmp_path / "b"), "--no-archive"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "verification image unusable: " + str(data / "images") in err and "staging" not in err, err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_an_unreadable_verification_image_is_skipped_named_and_replaced(onnx_trained, tmp_path, capsys):
    """Before: one corrupt image among the verification images stopped the whole bundle (exit 2).
    Now it is skipped and named, the next image takes its place, the bundle is whole and checks."""
    from cmunext_edge.cli import bundle as bundle_cli
    from cmunext_edge.cli import check as check_cli
    from cmunext_edge.resources import SAMPLES_DIR
    data = tmp_path / "ds"
    shutil.copytree(SAMPLES_DIR, data)
    images = sorted((data / "images").glob("*.png"))
    for image in images[:14]:
        image.write_bytes(b"not an image")
    good = {p.stem for p in images[14:]}
    assert bundle_cli.main([str(onnx_trained.artifact), "--images", str(data), "--n-images", "2",
                            "--out", str(tmp_path / "b"), "--no-archive"]) == 0
    out = capsys.readouterr().out
    folder = next((tmp_path / "b").glob("*.bundle"))
    manifest = json.loads((folder / "bundle.json").read_text())
    skipped = manifest["images"]["unusable_skipped"]
    assert manifest["images"]["n"] == 2 and {r["name"] for r in manifest["references"]} == good
    assert skipped and all(str(data / "images") in x["reason"] for x in skipped), skipped
    assert sorted(p.stem for p in (folder / "verify" / "images").iterdir()) == sorted(good)
    assert out.count("skipped (another image took its place): verification image unusable: ") == len(skipped), out
    assert check_cli.main([str(folder)]) == 0, capsys.readouterr()


@pytest.mark.parametrize("edit,says", [
    (lambda m: m.update(files=[]), "'files' is not a table"),
    (lambda m: m.update(references="oops"), "'references' is not a list"),
    (lambda m: m.update(references=[]), "'references' is not a list"),
    (lambda m: m["references"][0].update(name=3), "lacks a name"),
    (lambda m: m["references"][0].update(host_dice="x"), "host_dice 'x' is not a number"),
    (lambda m: m.update(thresholds={"min_agreement": "x", "max_dice_drop": 0.02}), "'thresholds' lacks"),
    (lambda m: m.update(precision=["fp32"]), "'precision' is not a string"),
    (lambda m: m.update(host="x"), "'host' is not a JSON object"),
], ids=["files", "references", "no-references", "row-name", "host-dice", "thresholds", "precision", "host"])
def test_a_rehashed_bundle_json_with_a_mistyped_field_is_one_line_exit_2(bundle, capsys, edit, says):
    """Before: a bundle.json edited so that a field had another type (bundle.json.sha256 recomputed)
    stopped the check with 'unexpected TypeError' (or AttributeError, IndexError)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    edit(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    (bundle / "bundle.json.sha256").write_text(
        hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest() + "  bundle.json\n")
    rc, out = _check(bundle, capsys)
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "damaged or edited" in lines[0] and says in lines[0], out.err
    assert "unexpected" not in out.err
