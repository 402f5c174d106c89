"""Signed device bundles and their SBOM (issue 24): a bundle signed here passes `cmunext-check
--trusted-key` where torch cannot be imported and fails (exit 2, one line) with another key or a
substituted artifact; its CycloneDX SBOM is schema-valid, pins every requirement and names the
model. Slow: a fresh venv without torch installs the bundle and lists nothing the SBOM does not."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmunext_edge.cli import check as check_cli
from cmunext_edge.device.bundle import file_table, make_bundle, read_bundle, write_manifest
from cmunext_edge.device.sbom import SBOM, canonical, read_sbom

pytest.importorskip("model_signing")
pytest.importorskip("cyclonedx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def signed_bundle(trained, keys, tmp_path_factory):
    from cmunext_edge.export.pipeline import export
    art = export(trained, target="onnx", out=tmp_path_factory.mktemp("exports"), calib_size=4,
                 log=lambda m: None).artifact                          # exported unsigned
    return make_bundle(art, tmp_path_factory.mktemp("bundles"), n_images=2, sign_key=keys["release"][0])


@pytest.fixture
def bundle(signed_bundle, tmp_path):
    return Path(shutil.copytree(signed_bundle.folder, tmp_path / signed_bundle.folder.name))


def _check(folder, capsys, *extra):
    rc = check_cli.main([str(folder), "--iters", "1", "--warmup", "0", "--quiet", *extra])
    return rc, capsys.readouterr()


def test_signed_bundle_passes_with_the_key_and_is_refused_with_another(bundle, keys, capsys):
    assert (bundle / "bundle.sig").is_file() and (bundle / "artifact" / "cmunext-s-busi_fp32.onnx.sig").is_file()
    rc, out = _check(bundle, capsys, "--trusted-key", str(keys["release"][1]))
    assert rc == 0, out.err
    report = json.loads((bundle / "device_report.json").read_text())
    assert report["signature"].startswith("signed by trusted key") and report["ran"]["signature"].startswith(
        "signed by trusted key")
    rc, out = _check(bundle, capsys, "--trusted-key", str(keys["other"][1]))
    assert rc == 2 and len(out.err.strip().splitlines()) == 1
    rc = check_cli.main([str(bundle), "--iters", "1", "--trusted-key", str(keys["other"][1])])   # not --quiet
    out = capsys.readouterr()
    assert rc == 2 and not out.out.strip() and len(out.err.strip().splitlines()) == 1, out   # one line in all
    assert "refused by the trust policy: bundle.sig is not signed by a trusted key" in out.err
    rc, out = _check(bundle, capsys)                     # no policy: runs as before, says it was not checked
    assert rc == 0 and json.loads((bundle / "device_report.json").read_text())["signature"] == \
        "signed, not checked (no trusted key)"


def test_signed_bundle_passes_where_torch_cannot_be_imported(bundle, keys):
    from test_no_torch import run_without_torch
    done = run_without_torch("check", bundle, "--iters", "1", "--images", "1", "--trusted-key", keys["release"][1])
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stdout + done.stderr
    done = run_without_torch("check", bundle, "--iters", "1", "--trusted-key", keys["other"][1])
    assert done.returncode == 2 and "Traceback" not in done.stderr and "not signed by a trusted key" in done.stderr


def test_substituted_artifact_with_rehashed_manifest_is_refused(bundle, keys, ckpt_s, tmp_path, capsys):
    from cmunext_edge.export.pipeline import export
    other = export(ckpt_s, target="onnx", out=tmp_path / "other", name="cmunext-s-busi_fp32", calib_size=4,
                   log=lambda m: None).artifact
    shutil.copyfile(other, bundle / "artifact" / other.name)
    _, manifest = read_bundle(bundle)
    manifest["files"] = file_table(bundle)               # a careful tamperer makes bundle.json agree
    write_manifest(bundle, manifest)
    rc, out = _check(bundle, capsys, "--trusted-key", str(keys["release"][1]))
    assert rc == 2 and "artifact/cmunext-s-busi_fp32.onnx" in out.err and "changed after signing" in out.err
    assert "Traceback" not in out.err


def test_sbom_is_valid_cyclonedx_pins_every_requirement_and_names_the_model(signed_bundle):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    folder, manifest = signed_bundle.folder, signed_bundle.manifest
    text = (folder / SBOM).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    sbom = read_sbom(folder)
    pins = [line.split("==") for line in (folder / "requirements.txt").read_text().splitlines()
            if not line.startswith("#")]
    assert {canonical(n): v for n, v in pins} == {k: v for k, (_, v) in sbom["packages"].items()
                                                  if k != "cmunext-edge"}
    assert {"model-signing", "cryptography", "onnxruntime", "numpy"} <= set(sbom["packages"])
    assert sbom["packages"]["cmunext-edge"][1] == manifest["toolkit_version"]
    art = manifest["files"][manifest["artifact"]]["sha256"]
    assert sbom["model"]["sha256"] == art and sbom["model"]["name"] == "cmunext-s-busi_fp32.onnx"
    assert len(sbom["model"]["source_checkpoint_sha256"]) == 64
    data = json.loads(text)
    assert data["metadata"]["tools"]["components"][0]["name"] == "cyclonedx-py"


@pytest.mark.slow
def test_fresh_venv_without_torch_checks_the_signed_bundle_and_matches_its_sbom(signed_bundle, keys, tmp_path):
    """What the device does: a new venv, the bundle's pinned requirements and wheel, then
    cmunext-check --trusted-key; every package installed there is in the SBOM at its version."""
    folder = Path(shutil.copytree(signed_bundle.folder, tmp_path / signed_bundle.folder.name))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "-r", "requirements.txt", signed_bundle.manifest["wheel"]],
                   cwd=folder, check=True)
    assert subprocess.run([py, "-c", "import torch"], capture_output=True).returncode
    check = [str(venv / "bin" / "cmunext-check"), ".", "--iters", "2", "--trusted-key"]
    done = subprocess.run(check + [str(keys["release"][1])], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stdout + done.stderr
    report = json.loads((folder / "device_report.json").read_text())
    assert report["sbom"]["extra"] == [] and not report["sbom"]["missing"] and not report["sbom"]["different"]
    listed = read_sbom(folder)["packages"]
    installed = json.loads(subprocess.run([py, "-m", "pip", "list", "--format", "json"], capture_output=True,
                                          text=True, check=True).stdout)
    for pkg in installed:
        if canonical(pkg["name"]) not in ("pip", "setuptools", "wheel"):
            assert listed[canonical(pkg["name"])][1] == pkg["version"], pkg
    done = subprocess.run(check + [str(keys["other"][1])], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 2 and "not signed by a trusted key" in done.stderr
