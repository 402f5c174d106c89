"""The TensorRT build's wiring from ExportOptions to the builder, without TensorRT or a GPU:
a recording stand-in for the `tensorrt` module checks which flags, memory limits, shapes,
calibrator and caches tensorrt_export.build() asks for, and what its sidecar records.
(Building a real engine needs an NVIDIA GPU; this checks our side of the calls.)"""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from cmunext_edge.export import tensorrt_export
from cmunext_edge.export.options import ExportOptions
from cmunext_edge.export.targets import BuildContext, check_request, get_target
from cmunext_edge.core.preprocess import get_preset


class _Config:
    def __init__(self, log):
        self.log, self.flags, self.int8_calibrator = log, set(), None

    def set_memory_pool_limit(self, pool, size):
        self.log["workspace"] = (pool, size)

    def set_flag(self, flag):
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.log["profile"] = profile.shape

    def set_calibration_profile(self, profile):
        self.log["calibration_profile"] = profile.shape

    def create_timing_cache(self, data):
        return data

    def set_timing_cache(self, cache, ignore_mismatch):
        self.log["timing_cache_in"] = cache

    def get_timing_cache(self):
        return SimpleNamespace(serialize=lambda: b"timing")


def _fake_trt(log):
    class Profile:
        shape = None

        def set_shape(self, name, lo, opt, hi):
            self.shape = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return "network"

        def create_builder_config(self):
            log["config"] = _Config(log)
            return log["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"plan"

    class Parser:
        def __init__(self, network, logger):
            pass

        def parse(self, data):
            log["parsed"] = data
            return True

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    flags = SimpleNamespace(FP16="FP16", BF16="BF16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK")
    return SimpleNamespace(__version__="10.3.0", Logger=Logger, Builder=Builder, OnnxParser=Parser,
                           BuilderFlag=flags, MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
                           DeviceType=SimpleNamespace(DLA="DLA"), IInt8EntropyCalibrator2=object,
                           IInt8MinMaxCalibrator=object)


@pytest.fixture
def build(tmp_path, monkeypatch):
    log = {}

    def fake_onnx(ctx, path, half=False):
        path.write_bytes(b"fp32-onnx")
        return path

    def fake_qdq(src, out, calib, **kw):
        log["qdq"] = kw
        out.write_bytes(b"qdq-onnx")
        return out
    monkeypatch.setattr(tensorrt_export, "require_tensorrt", lambda: _fake_trt(log))
    monkeypatch.setattr(tensorrt_export, "gpu_info", lambda: {"gpu_name": "X", "compute_capability": "9.0"})
    monkeypatch.setattr(tensorrt_export, "export_onnx", fake_onnx)
    monkeypatch.setattr(tensorrt_export, "quantize_qdq", fake_qdq)

    def run(**options):
        opts = ExportOptions(target="trt", out=tmp_path, **options)
        precision = check_request(get_target("trt"), opts)
        work = tmp_path / "stage"
        work.mkdir(exist_ok=True)
        calib = SimpleNamespace(batches=lambda n: iter([np.zeros((1, 3, 256, 256), np.float32)]))
        ctx = BuildContext(None, get_preset("official"), 3, precision, work, "m", {"k": "v"}, opts, calib)
        files = tensorrt_export.build(ctx)
        return log, files, json.loads(files[0].read_text())
    return run


def test_fp16_static_batch_workspace_and_dla(build, tmp_path):
    log, files, side = build(batch=2, workspace=1.5, dla_core=0)
    assert [f.name for f in files] == ["m.engine.json", "m.engine"] and files[1].read_bytes() == b"plan"
    assert log["parsed"] == b"fp32-onnx" and "qdq" not in log
    assert log["config"].flags == {"FP16", "GPU_FALLBACK"} and log["workspace"] == ("WORKSPACE", 3 << 29)
    assert side["shapes"] == {"static": [2, 3, 256, 256]} and side["precision"] == "fp16"
    assert side["int8_mode"] is None and side["dla_core"] == 0 and side["metadata"] == {"k": "v"}
    assert (tmp_path / "tensorrt.timing.cache").read_bytes() == b"timing"    # cached in the output folder


def test_int8_defaults_to_symmetric_qdq(build):
    log, _, side = build(precision="int8", calibrate_method="minmax")
    assert log["parsed"] == b"qdq-onnx" and log["qdq"]["for_tensorrt"] is True
    assert log["qdq"]["calibrate_method"] == "minmax"
    assert log["config"].flags == {"FP16", "INT8"} and log["config"].int8_calibrator is None
    assert side["int8_mode"] == "qdq" and "workspace" not in log


def test_int8_calibrator_with_a_dynamic_profile(build, tmp_path):
    pytest.importorskip("torch")
    log, _, side = build(precision="int8", int8_mode="calibrator", calibrator="minmax", dynamic=True)
    assert log["parsed"] == b"fp32-onnx" and "qdq" not in log
    cal = log["config"].int8_calibrator
    assert cal is not None and cal.get_batch_size() == 1
    cal.write_calibration_cache(b"scales")
    assert (tmp_path / "m.calib.cache").read_bytes() == b"scales"
    assert log["profile"] == ("input", (1, 3, 256, 256), (1, 3, 256, 256), (16, 3, 256, 256))
    assert log["calibration_profile"] == log["profile"]
    assert side["int8_mode"] == "calibrator" and side["shapes"]["max"] == [16, 3, 256, 256]
