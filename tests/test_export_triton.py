"""Triton model repository target: config.pbtxt parsed by Triton's own ModelConfig protobuf
(shipped in tritonclient), checked against the artifact's real inputs and outputs."""
import json

import pytest

from cmunext_edge.cli.export import main as export_main
from cmunext_edge.export.options import ExportOptions
from cmunext_edge.export.pipeline import export
from cmunext_edge.export.targets import ExportUsageError
from cmunext_edge.fileio import sha256_file

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

def parse(path):
    return text_format.Parse(path.read_text(), mc.ModelConfig())

@pytest.fixture
def onnx_dynamic(onnx_random):
    """The session's FP32 dynamic-batch ONNX of the S reference (conftest)."""
    return onnx_random.artifact


def test_onnx_repository_matches_the_artifact(onnx_dynamic, tmp_path):
    res = export(onnx_dynamic, ExportOptions(target="triton", out=tmp_path / "repo", name="cmunext", batch=4))
    cfg = parse(tmp_path / "repo" / "cmunext" / "config.pbtxt")
    model_file = tmp_path / "repo" / "cmunext" / "1" / "model.onnx"
    assert sha256_file(model_file) == sha256_file(onnx_dynamic)
    sess = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert cfg.name == "cmunext" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 4
    assert [i.name for i in cfg.input] == [inp.name] and [o.name for o in cfg.output] == [out.name]
    assert list(cfg.input[0].dims) == list(inp.shape[1:]) == [3, 256, 256]
    assert list(cfg.output[0].dims) == list(out.shape[1:]) == [1, 256, 256]
    assert cfg.input[0].data_type == mc.TYPE_FP32 and cfg.output[0].data_type == mc.TYPE_FP32
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    spec = json.loads(cfg.parameters["cmunext_edge.preprocess"].string_value)
    assert spec["height"] == 256 and cfg.parameters["cmunext_edge.threshold"].string_value == "0.5"
    assert cfg.parameters["cmunext_edge.precision"].string_value == "fp32"
    assert res.selftest["passed"] and res.target == "triton"
    entry = json.loads(res.manifest.read_text())["artifacts"]["cmunext"]
    assert {f["name"] for f in entry["files"]} == {"model.onnx", "config.pbtxt"}
    # a rerun replaces the model folder; nothing staged is left behind
    export(onnx_dynamic, ExportOptions(target="triton", out=tmp_path / "repo", name="cmunext"))
    assert parse(tmp_path / "repo" / "cmunext" / "config.pbtxt").max_batch_size == 8
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["cmunext", "manifest.json"]

def test_static_openvino_repository(trained, tmp_path):
    pytest.importorskip("openvino")
    xml = export(trained, ExportOptions(target="openvino", out=tmp_path, calib_size=4)).artifact
    assert export_main(["--weights", str(xml), "--target", "triton", "--out", str(tmp_path / "repo")]) == 0
    folder = tmp_path / "repo" / xml.stem
    cfg = parse(folder / "config.pbtxt")
    assert cfg.backend == "openvino" and cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [1, 3, 256, 256] and list(cfg.output[0].dims) == [1, 1, 256, 256]
    assert sha256_file(folder / "1" / "model.bin") == sha256_file(xml.with_suffix(".bin"))

def test_tensorrt_repository_from_sidecar(onnx_dynamic, tmp_path):
    """The plan is copied as it is; names and shapes come from the sidecar's optimization profile."""
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(onnx_dynamic)).metadata_props}
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan bytes")
    (tmp_path / "m.engine.json").write_text(json.dumps(
        {"shapes": {"min": [1, 3, 256, 256], "opt": [4, 3, 256, 256], "max": [16, 3, 256, 256]},
         "metadata": meta}))
    export(engine, ExportOptions(target="triton", out=tmp_path / "repo", batch=32))
    cfg = parse(tmp_path / "repo" / "m" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16     # the profile's max
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "m" / "1" / "model.plan").read_bytes() == b"plan bytes"

def test_refusals(onnx_dynamic, ckpt_s, tmp_path):
    with pytest.raises(ExportUsageError, match="export it first"):
        export(ckpt_s, ExportOptions(target="triton", out=tmp_path))
    with pytest.raises(ExportUsageError, match="is fp32, not fp16"):
        export(onnx_dynamic, ExportOptions(target="triton", out=tmp_path, precision="fp16"))
    with pytest.raises(ExportUsageError, match="does not take --dynamic"):
        export(onnx_dynamic, ExportOptions(target="triton", out=tmp_path, dynamic=True))
    assert not list(tmp_path.iterdir())


def test_a_damaged_or_incomplete_artifact_is_refused_naming_the_users_file(onnx_dynamic, trained, tmp_path):
    import shutil
    from cmunext_edge.artifacts.integrity import IntegrityError
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in (onnx_dynamic, onnx_dynamic.parent / "manifest.json"):
        shutil.copy(f, edited / f.name)
    data = bytearray((edited / onnx_dynamic.name).read_bytes())
    data[len(data) // 2] ^= 1
    (edited / onnx_dynamic.name).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=str(edited / onnx_dynamic.name)):
        export(edited / onnx_dynamic.name, ExportOptions(target="triton", out=tmp_path / "repo"))
    ir = export(trained, ExportOptions(target="openvino", out=tmp_path / "ir", verify_size=8)).artifact
    ir.with_suffix(".bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"\.bin, which the OpenVINO IR needs beside it, is missing"):
        export(ir, ExportOptions(target="triton", out=tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()                 # nothing written, not even an empty --out

