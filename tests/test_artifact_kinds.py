"""The artifact-kinds table (artifacts/kinds.py) and the one manifest.json reader
(artifacts/manifest.py): every place that needs a kind's files or a manifest entry agrees."""
import json
from pathlib import Path

import pytest

from cmunext_edge.artifacts import kinds
from cmunext_edge.artifacts.info import is_artifact
from cmunext_edge.artifacts.integrity import artifact_files as integrity_files
from cmunext_edge.artifacts.manifest import ManifestError, manifest_entry, manifest_lookup, read_manifest
from cmunext_edge.device.bundle import BundleError, artifact_files as bundle_files
from cmunext_edge.runtime.registry import BACKENDS, entry_for, entry_for_path
from cmunext_edge.runtime.base import BackendError


def test_every_kind_has_a_backend_and_every_backend_a_kind():
    assert {k.backend for k in kinds.KINDS} == {e.name for e in BACKENDS}
    for kind in kinds.KINDS:
        for suffix in kind.suffixes:
            assert entry_for_path(f"m{suffix.upper()}").name == kind.backend    # suffixes are case-blind
    with pytest.raises(BackendError, match="unknown artifact kind '.txt'"):
        entry_for_path("m.txt")
    assert entry_for("pytorch").suffixes == (".pth", ".pt", ".safetensors")


@pytest.mark.parametrize("name, files", [
    ("m.onnx", ["m.onnx"]), ("m.xml", ["m.xml", "m.bin"]), ("m.engine", ["m.engine", "m.engine.json"]),
    ("m.plan", ["m.plan", "m.plan.json"]), ("m.pt", ["m.pt"]), ("m.txt", ["m.txt"])])
def test_companion_files(name, files, tmp_path):
    assert [p.name for p in kinds.artifact_files(tmp_path / name)] == files
    assert [p.name for p in integrity_files(tmp_path / name)] == files


def test_tensorrt_sidecar_is_the_one_the_exporter_writes(tmp_path):
    """Bundles, verified load and the TensorRT backend name the same sidecar: <engine>.json."""
    from cmunext_edge.runtime.tensorrt_backend import sidecar_path
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    assert sidecar_path(engine) == tmp_path / "m.engine.json"
    with pytest.raises(BundleError, match="m.engine.json"):
        bundle_files(engine)                    # no manifest, no sidecar: named, not guessed
    (tmp_path / "m.engine.json").write_text("{}")
    assert bundle_files(engine) == [tmp_path / "m.engine.json", engine]
    assert kinds.sidecar_entry(tmp_path / "m.engine.json") == engine and is_artifact(tmp_path / "m.engine.json")
    assert kinds.sidecar_entry(tmp_path / "m.json") == tmp_path / "m.json" and not is_artifact(tmp_path / "m.json")


def test_checkpoint_suffixes_include_pt():
    assert kinds.CHECKPOINT_SUFFIXES == (".pth", ".pt", ".safetensors")
    assert all(kinds.is_checkpoint(f"w{s}") for s in (".pth", ".PT", ".safetensors"))
    assert not kinds.is_checkpoint("m.onnx") and not kinds.kind_named("onnx").companions
    assert set(kinds.ARTIFACT_SUFFIXES) == {".onnx", ".xml", ".engine", ".plan"}


def test_an_upper_case_suffix_is_the_same_file_kind(tmp_path):
    """M.SAFETENSORS is read as safetensors (header and tensors, no torch pickle path), by the
    loaders, cmunext-info's weights check and the shipped-model lookup alike."""
    from cmunext_edge.checkpoints.weights import inspect_checkpoint, load_checkpoint
    from cmunext_edge.cli.info import weights_finite
    from cmunext_edge.resources import models_dir, shipped_model_name
    upper = tmp_path / "M.SAFETENSORS"
    upper.write_bytes((models_dir() / "cmunext-s-busi.safetensors").read_bytes())
    summary = inspect_checkpoint(upper)
    assert summary.info.variant == "cmunext-s" and load_checkpoint(upper).info == summary.info
    assert weights_finite(upper) == (True, None, True)
    assert shipped_model_name(summary.sha256) == "cmunext-s-busi"


def test_manifest_reader_is_strict_for_writers_and_lenient_for_readers(tmp_path):
    assert read_manifest(tmp_path)["artifacts"] == {} and manifest_entry(tmp_path / "m.onnx") is None
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"m.onnx": {"files": []}}}))
    assert manifest_entry(tmp_path / "m.onnx") == {"files": []} and manifest_entry(tmp_path / "x.onnx") is None
    for damaged, says in (("{not json", "not readable JSON"), (json.dumps({"artifacts": ["m.onnx"]}), "not a manifest"),
                          (json.dumps({"artifacts": {"m.onnx": 3}}), "its entry for 'm.onnx' is not an object"),
                          (json.dumps({"artifacts": {"m.onnx": {"files": {}}}}), "its entry for 'm.onnx' has no list of files"),
                          (json.dumps({"artifacts": {"m.onnx": {}}}), "its entry for 'm.onnx' has no list of files")):
        (tmp_path / "manifest.json").write_text(damaged)
        with pytest.raises(ManifestError, match=f"is damaged: {says}"):
            read_manifest(tmp_path)
        assert manifest_entry(Path(tmp_path) / "m.onnx") is None
        entry, problem = manifest_lookup(Path(tmp_path) / "x.onnx")     # damaged for every artifact beside it
        assert entry is None and problem.startswith(f"{tmp_path / 'manifest.json'} is damaged: {says}")
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "manifest.json").symlink_to(tmp_path / "gone.json")    # a link to nothing: damaged, not absent
    assert "is damaged: not readable JSON" in manifest_lookup(tmp_path / "m.onnx")[1]


def test_export_refuses_a_damaged_manifest_as_a_usage_error(tmp_path):
    from cmunext_edge.export.manifest import ManifestError as ExportManifestError, read_manifest as export_read
    from cmunext_edge.export.targets import ExportUsageError
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ExportUsageError, match="is not overwritten"):
        export_read(tmp_path)
    assert issubclass(ExportManifestError, ExportUsageError)


def test_one_hash_check(tmp_path):
    from cmunext_edge.fileio import hash_mismatches, sha256_file
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    want = {"a": sha256_file(tmp_path / "a"), "b": "0" * 64, "c": "1" * 64}
    assert hash_mismatches(tmp_path, want) == [("b", sha256_file(tmp_path / "b"), "0" * 64), ("c", None, "1" * 64)]
