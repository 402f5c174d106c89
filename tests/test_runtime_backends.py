"""ONNX Runtime and OpenVINO backends: dispatch by suffix, metadata read back from the artifact,
visible fallback, strict_device, device discovery and the embedded self-test."""
import json

import numpy as np
import pytest

from cmunext_edge.artifacts.integrity import IntegrityError
from cmunext_edge.runtime.base import DeviceUnavailableError
from cmunext_edge.runtime.registry import entry_for_path, list_devices, open_backend
from cmunext_edge.runtime.segmenter import EdgeSegmenter

pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def artifacts(ckpt_s, tmp_path_factory):
    from cmunext_edge.export.pipeline import export
    out = tmp_path_factory.mktemp("artifacts")
    onnx_res = export(ckpt_s, target="onnx", out=out, imgsz=128, dynamic=True, calib_size=4)
    ov_res = export(ckpt_s, target="ov", out=out, imgsz=128, dynamic=True, calib_size=4)
    return {"onnx": onnx_res.artifact, "openvino": ov_res.artifact}


def test_registry_dispatches_by_suffix():
    assert entry_for_path("m.onnx").name == "onnxruntime"
    assert entry_for_path("m.xml").name == "openvino"
    assert entry_for_path("m.plan").name == "tensorrt" and entry_for_path("m.engine").name == "tensorrt"
    devices = list_devices()
    assert "cpu" in devices["onnxruntime"] and "cpu" in devices["openvino"] and "auto" in devices["openvino"]


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_preprocessing_contract_comes_from_the_artifact(artifacts, kind):
    seg = EdgeSegmenter.from_artifact(artifacts[kind])
    assert seg.spec.size == (128, 128) and seg.backend.metadata["variant"] == "cmunext-s"
    image = np.full((300, 200, 3), 90, np.uint8)
    result = seg.segment(image)
    assert result.mask.shape == (300, 200) and result.logits.shape == (1, 128, 128)
    assert seg.backend.infer(np.zeros((2, 3, 128, 128), np.float32)).shape == (2, 1, 128, 128)
    check = seg.self_test()
    assert check.passed and check.device == seg.backend.device and check.mask_dice >= 0.999


def test_onnxruntime_missing_provider_falls_back_visibly(artifacts):
    with open_backend(artifacts["onnx"], device="cuda") as b:
        assert b.device == "cpu" and b.provider == "CPUExecutionProvider"
        assert "CUDAExecutionProvider" in b.describe()["fallback"]
    with pytest.raises(DeviceUnavailableError, match="strict_device"):
        open_backend(artifacts["onnx"], device="cuda", strict_device=True)
    with pytest.raises(DeviceUnavailableError, match="device 'openvino' is not available.*strict_device forbids"):
        EdgeSegmenter.from_artifact(artifacts["onnx"], device="openvino", strict_device=True)


def test_openvino_missing_npu_falls_back_visibly(artifacts):
    if "NPU" in ov.Core().available_devices:
        pytest.skip("this machine has an NPU")
    seg = EdgeSegmenter.from_artifact(artifacts["openvino"], device="NPU")
    assert seg.backend.device == "CPU" and "NPU" in seg.describe()["fallback"]
    with pytest.raises(DeviceUnavailableError, match="NPU"):
        EdgeSegmenter.from_artifact(artifacts["openvino"], device="npu", strict_device=True)


def test_openvino_auto_hint_cache_and_reported_precision(artifacts, tmp_path):
    cache = tmp_path / "ov-cache"
    # AUTO's CPU runs an FP32 IR at f32, as the CPU device does (on a CPU with native BF16 it ran
    # bf16 and failed the verified load), and the precision is read back from AUTO's CPU
    with open_backend(artifacts["openvino"], device="AUTO", hint="latency", cache_dir=cache) as b:
        assert b.device.startswith("AUTO:") and "CPU" in b.device
        assert b.describe()["inference_precision"] == "fp32" and b.verification.ok
        assert b.infer(np.zeros((1, 3, 128, 128), np.float32)).shape == (1, 1, 128, 128)
    # random weights (logits near 0) do not reproduce their masks at bf16: the verified load would
    # rightly refuse them, so it is skipped here
    with open_backend(artifacts["openvino"], device="cpu", inference_precision="bf16", verify=False) as b:
        # the compiled model says what it runs: bf16 where the CPU has it, else f32
        assert b.precision == b.describe()["inference_precision"] in ("bf16", "fp32")
    with open_backend(artifacts["openvino"], device="cpu", batch=2) as b:
        assert b.input_shape[0] == 2         # static reshape (what the NPU gets by default)
        assert b.infer(np.zeros((3, 3, 128, 128), np.float32)).shape == (3, 1, 128, 128)
    assert cache.is_dir() and any(cache.iterdir())


def test_self_test_detects_a_wrong_result_and_reports_missing_self_test(artifacts, ckpt_s, tmp_path):
    import onnx
    model = onnx.load(str(artifacts["onnx"]))
    for prop in model.metadata_props:
        if prop.key == "cmunext_edge.selftest":
            st = json.loads(prop.value)
            mask = np.ones(st["shape"][2] * st["shape"][3], bool)   # pretend the expected mask were all lesion
            import base64, zlib
            st["mask_bits"] = base64.b64encode(zlib.compress(np.packbits(mask).tobytes())).decode()
            st["mask_sha256"] = "0" * 64
            prop.value = json.dumps(st)
    bad = tmp_path / "tampered.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(IntegrityError, match="refused: .*differs from the hash embedded at export"):
        EdgeSegmenter.from_artifact(bad)                      # verified load refuses it outright
    result = EdgeSegmenter.from_artifact(bad, verify=False).self_test()
    assert not result.passed and result.status == "fail" and "FAILED" in result.message
    plain = EdgeSegmenter.from_checkpoint(ckpt_s).self_test()
    assert plain.status == "unavailable" and not plain


def test_pytorch_fold_bn_is_exact_and_cuda_graphs_fall_back_visibly_without_cuda(trained, busi):
    """fold_bn changes the arithmetic order only (logits within float rounding, the same masks);
    cuda_graphs on a machine without CUDA says so and runs the model as is."""
    torch = pytest.importorskip("torch")
    from cmunext_edge.core.preprocess import load_image
    plain = open_backend(trained, backend="pytorch").load()
    x = np.stack([plain.spec(load_image(p)) for p in sorted((busi / "images").iterdir())[:4]])
    folded = open_backend(trained, backend="pytorch", fold_bn=True).load()
    a, b = plain.infer(x), folded.infer(x)
    assert np.abs(a - b).max() < 1e-3 and np.array_equal(a > 0, b > 0)
    assert folded.fallback_reason is None
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the graph path is measured by benchmarks/gpu/run_gpu.py")
    graphed = open_backend(trained, backend="pytorch", cuda_graphs=True).load()
    assert "cuda_graphs needs a CUDA device" in graphed.fallback_reason
    assert np.array_equal(graphed.infer(x), a)


@pytest.mark.parametrize("cpu, precision, expected", [
    ("neoverse-n1", "int8", "f32"),     # ARM with FP16 arithmetic: OpenVINO would run the float parts at f16
    ("neoverse-n1", "fp16", None),      # an FP16 IR runs at the device's choice (f16 there)
    ("neoverse-n1", "fp32", "f32"),
    ("zen3", "int8", "f32"),            # x86 without native BF16: f32 (OpenVINO's own choice there too)
    ("zen4", "int8", "f32"),            # x86 with native BF16: OpenVINO would pick bf16 float parts
    ("zen4", "fp16", None),             # an FP16 IR runs at the device's choice (bf16 there)
    ("zen4", "fp32", "f32")])
def test_openvino_inference_precision_per_cpu_kind(monkeypatch, cpu, precision, expected):
    """What an IR asks OpenVINO's CPU plugin for, per CPU kind: an INT8 IR runs its float parts at f32
    on every CPU, the precision its gate measured (f16 cost agreement on an emulated Neoverse-N1)."""
    import cmunext_edge.capabilities as capabilities
    from cmunext_edge.runtime.openvino_backend import OpenVINOBackend
    from test_capabilities import ZEN3, ZEN4
    n1 = ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid atomics fphp asimdhp "
          "asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n")
    caps = capabilities.from_cpuinfo({"neoverse-n1": n1, "zen3": ZEN3, "zen4": ZEN4}[cpu], environ={})
    assert caps.is_x86 == (cpu != "neoverse-n1")
    monkeypatch.setattr(capabilities, "detect", lambda: caps)
    config = OpenVINOBackend._compile_config({}, {"precision": precision}, "CPU")
    assert config.get("INFERENCE_PRECISION_HINT") == expected
    explicit = OpenVINOBackend._compile_config({"inference_precision": "f16"}, {"precision": precision}, "CPU")
    assert explicit["INFERENCE_PRECISION_HINT"] == ("f32" if cpu == "zen3" else "f16")  # asked for: kept where it runs


@pytest.mark.parametrize("device,expected", [("GPU", "f32"), ("GPU.1", "f32"), ("gpu.0", "f32"), ("NPU", None)])
def test_an_indexed_openvino_device_gets_its_familys_settings(device, expected):
    """GPU.1 (OpenVINO's name for a second GPU) lost the FP32 artifact's f32 precision hint that GPU
    gets: the settings compared the whole name with "GPU"."""
    from cmunext_edge.runtime.openvino_backend import OpenVINOBackend, device_family
    config = OpenVINOBackend._compile_config({"threads": 2}, {"precision": "fp32"}, device)
    assert config.get("INFERENCE_PRECISION_HINT") == expected and "INFERENCE_NUM_THREADS" not in config
    assert device_family("gpu.1") == "GPU" and device_family("AUTO") == "AUTO"
    assert OpenVINOBackend._compile_config({"threads": 2}, {"precision": "fp32"}, "CPU")["INFERENCE_NUM_THREADS"] == 2


def test_a_gpu_index_reaches_onnx_runtime_or_is_refused(artifacts, tmp_path):
    """`cuda:1` was cut to `cuda` and ran on GPU 0 (ONNX Runtime) or on the current device (TensorRT)
    without a word: ONNX Runtime now passes the index as the provider's device_id; TensorRT, whose
    engine, stream and buffers use the current CUDA device, refuses another index, naming the way."""
    from cmunext_edge.runtime.base import BackendError
    from cmunext_edge.runtime.onnxruntime_backend import parse_device
    from cmunext_edge.runtime.registry import check_request
    from cmunext_edge.runtime.tensorrt_backend import TensorRTBackend
    assert parse_device("cuda:1") == ("cuda", 1) and parse_device("GPU:2") == ("cuda", 2)
    assert parse_device("trt:0") == ("tensorrt", 0) and parse_device("cpu") == ("cpu", None)
    for bad in ("cpu:1", "openvino:1", "cuda:x", "cuda:"):
        with pytest.raises(BackendError, match="an index .* is taken by cuda and tensorrt only"):
            parse_device(bad)
    for bad in ("cpu:1", "openvino:1"):
        with pytest.raises(BackendError, match="unknown device"):
            check_request("model.onnx", bad)
    with open_backend(artifacts["onnx"], device="cuda:1") as b:       # no CUDA provider here: a visible fallback
        assert b.device == "cpu" and "CUDAExecutionProvider" in b.describe()["fallback"]
    with pytest.raises(BackendError, match="CUDA_VISIBLE_DEVICES=1"):   # before TensorRT is imported
        (tmp_path / "model.engine").write_bytes(b"plan")
        TensorRTBackend(tmp_path / "model.engine", device="cuda:1").load()
