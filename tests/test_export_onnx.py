"""ONNX export end to end with the official-format reference checkpoint: artifact, metadata,
verification figures, manifest, self-test, and failures that must leave nothing behind."""
import errno
import json
import os

import numpy as np
import pytest

from cmunext_edge.artifacts.meta import parse_metadata
from cmunext_edge.cli.export import main as export_main
from cmunext_edge.export import pipeline
from cmunext_edge.export.pipeline import export
from cmunext_edge.fileio import sha256_file
from cmunext_edge.runtime.segmenter import EdgeSegmenter

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def onnx_fp32(onnx_random):
    """The session's FP32 dynamic-batch ONNX export of the S reference (conftest)."""
    return onnx_random


def test_onnx_fp32_artifact_is_checked_simplified_and_self_describing(onnx_fp32, ckpt_s):
    model = onnx.load(str(onnx_fp32.artifact))
    onnx.checker.check_model(model)
    meta = parse_metadata({p.key: p.value for p in model.metadata_props})
    assert meta["variant"] == "cmunext-s" and meta["num_classes"] == 1 and meta["precision"] == "fp32"
    assert meta["source_sha256"] == sha256_file(ckpt_s) and meta["spec"].height == 256
    assert meta["toolkit_version"] and meta["threshold"] == "0.5" and meta["selftest"]["mask_bits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_onnx_fp32_verification_figures(onnx_fp32):
    v = onnx_fp32.verification
    assert v["passed"] and v["n_images"] == 6
    assert v["mask_dice_agreement"] >= 0.999 and v["max_abs_logit_delta"] < 1e-2
    # random weights, no --verify-data: the bundled BUSI samples are not this model's domain, so
    # the verification is agreement with PyTorch only, and says so
    assert v["dice_vs_ground_truth"] is None and v["data"]["origin"] == "bundled BUSI samples"
    assert not v["data"]["ground_truth"] and "not this model's domain" in v["data"]["note"]


def test_manifest_lists_sha256_versions_and_figures(onnx_fp32):
    data = json.loads(onnx_fp32.manifest.read_text())
    entry = data["artifacts"][onnx_fp32.artifact.name]
    assert entry["files"][0]["sha256"] == sha256_file(onnx_fp32.artifact)
    assert {"torch", "onnx", "onnxruntime", "onnxslim"} <= set(entry["toolchain"])
    assert entry["precision"] == "fp32" and entry["verification"]["passed"] and entry["selftest"]["passed"]
    assert any("cmunext-predict" in c for c in onnx_fp32.next_commands)
    assert not [p for p in onnx_fp32.artifact.parent.iterdir() if p.name.startswith(".")]   # no staging left


def test_artifact_runs_dynamic_batch_and_self_tests(onnx_fp32):
    seg = EdgeSegmenter.from_artifact(onnx_fp32.artifact)
    assert seg.describe()["provider"] == "CPUExecutionProvider"
    result = seg.self_test()
    assert result.passed and result.mask_dice is not None and "passed" in result.message
    x = np.zeros((3, 3, 256, 256), np.float32)
    assert seg.backend.infer(x).shape == (3, 1, 256, 256)


def test_onnx_fp16(trained, tmp_path):
    # all 16 bundled samples: FP16 on the ONNX Runtime CPU kernels sits near the 0.99 bar
    res = export(trained, target="onnx", precision="fp16", out=tmp_path, calib_size=16)
    model = onnx.load(str(res.artifact))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert res.verification["mask_dice_agreement"] >= 0.99
    assert EdgeSegmenter.from_artifact(res.artifact).self_test().passed


def test_full_disk_while_writing_the_manifest_leaves_nothing(ckpt_s, tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pipeline, "write_manifest", full)
    with pytest.raises(OSError, match="No space left"):
        export(ckpt_s, target="onnx", out=tmp_path, verify=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_of_a_multi_file_artifact_leaves_nothing(ckpt_s, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith(".xml") and os.path.dirname(str(dst)) == str(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    assert export_main(["--weights", str(ckpt_s), "--target", "ov", "--no-verify", "--out", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cmunext-export: error:")]
    assert err == ["cmunext-export: error: could not write the artifact ([Errno 28] No space left on device); "
                   "nothing was left behind"], err
    assert list(tmp_path.iterdir()) == []


def test_verification_failure_exits_2_and_writes_nothing(ckpt_s, tmp_path, capsys):
    # random weights: INT8 cannot reproduce their near-random masks, so verification must fail
    pytest.importorskip("nncf")
    rc = export_main(["--weights", str(ckpt_s), "--target", "ov", "--int8", "--calib-size", "4",
                      "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "disagrees with PyTorch FP32" in err and "Try:" in err and "fp32" in err.split("Try:")[1]
    from cmunext_edge.capabilities import detect
    caps = detect()
    assert ("no VNNI" in err) is (caps.is_x86 and not caps.int8_native)    # the cause, on this CPU
    assert list(tmp_path.iterdir()) == []


def test_corrupted_calibration_folder_exits_2_and_writes_nothing(ckpt_s, tmp_path, capsys):
    bad = tmp_path / "calib"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert export_main(["--weights", str(ckpt_s), "--target", "ort", "--calib", str(bad), "--out", str(out)]) == 2
    assert "x.png" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []


def test_interrupted_export_leaves_nothing(ckpt_s, tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "verify_backend", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(ckpt_s, target="onnx", out=tmp_path, calib_size=2)
    assert list(tmp_path.iterdir()) == []
