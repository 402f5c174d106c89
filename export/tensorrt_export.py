"""TensorRT engine export through the TensorRT Python API (not run on our machines: no GPU).

FP16/BF16/FP32 from the simplified ONNX; INT8 either from explicit Q/DQ (the symmetric QDQ
ONNX of ort_quant, TensorRT >= 8.6/10) or, for older TensorRT (JetPack 5), with an entropy or
min-max calibrator over the calibration set and a reusable calibration cache. An optimization
profile covers dynamic batch; a timing cache makes rebuilds fast; `workspace` (GiB) bounds the
builder memory; `dla_core` targets a Jetson DLA (GPU fallback on). The engine is a plain plan
file (trtexec and DeepStream load it); everything else goes into the sidecar `<engine>.json`.
"""
from __future__ import annotations

import json
from pathlib import Path

from cmunext_edge.core.precision import Int8Mode, Precision
from cmunext_edge.runtime.tensorrt_backend import gpu_info, require_tensorrt, sidecar_path
from cmunext_edge.export.onnx_export import INPUT, export_onnx
from cmunext_edge.export.ort_quant import quantize_qdq
from cmunext_edge.fileio import loads_json


def make_calibrator(trt, calib, cache: Path, method: str = "entropy"):
    """An IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator feeding the calibration set."""
    import torch
    base = trt.IInt8EntropyCalibrator2 if method == "entropy" else trt.IInt8MinMaxCalibrator

    class Calibrator(base):
        def __init__(self):
            base.__init__(self)
            self.batches, self.current = iter(calib.batches(1)), None

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.current = torch.from_numpy(batch).cuda()   # keep a reference while TensorRT reads it
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

    return Calibrator()


MAX_DYNAMIC_BATCH = 16      # the largest batch of the optimization profile of a dynamic engine


def _onnx_input(ctx, int8_mode: Int8Mode) -> Path:
    """The ONNX TensorRT parses: simplified FP32, or its symmetric Q/DQ version for Q/DQ INT8."""
    onnx_path = export_onnx(ctx, ctx.scratch("model.onnx"))
    if ctx.precision == Precision.INT8 and int8_mode == Int8Mode.QDQ:
        onnx_path = quantize_qdq(onnx_path, ctx.scratch("qdq.onnx"), ctx.calib, for_tensorrt=True,
                                 calibrate_method=ctx.options.calibrate_method or "percentile",
                                 scratch=ctx.scratch(""))
    return onnx_path


def _parse(trt, builder, logger, onnx_path: Path):
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    return network, parser          # the parser must outlive the network's use


def _set_precision(trt, config, ctx, int8_mode: Int8Mode) -> None:
    if ctx.precision in (Precision.FP16, Precision.INT8):
        config.set_flag(trt.BuilderFlag.FP16)     # INT8 layers TensorRT cannot quantize run in FP16
    if ctx.precision == Precision.BF16:
        config.set_flag(trt.BuilderFlag.BF16)
    if ctx.precision == Precision.INT8:
        config.set_flag(trt.BuilderFlag.INT8)
        if int8_mode == Int8Mode.CALIBRATOR:
            config.int8_calibrator = make_calibrator(trt, ctx.calib, ctx.cache_dir / f"{ctx.stem}.calib.cache",
                                                     ctx.options.calibrator or "entropy")


def _set_shapes(builder, config, ctx, int8_mode: Int8Mode) -> dict:
    """Static input shape, or an optimization profile for dynamic batch; returns the shapes."""
    chw = (ctx.in_channels, ctx.spec.height, ctx.spec.width)
    if not ctx.dynamic:
        return {"static": (max(1, ctx.batch), *chw)}
    shapes = {"min": (1, *chw), "opt": (max(1, ctx.batch), *chw), "max": (max(ctx.batch, MAX_DYNAMIC_BATCH), *chw)}
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    if ctx.precision == Precision.INT8 and int8_mode == Int8Mode.CALIBRATOR:
        config.set_calibration_profile(profile)
    return shapes


def _configure(trt, builder, ctx, int8_mode: Int8Mode):
    """Builder config (workspace, precision flags, DLA, timing cache) and the input shapes."""
    opts = ctx.options
    config = builder.create_builder_config()
    if opts.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(float(opts.workspace) * (1 << 30)))
    _set_precision(trt, config, ctx, int8_mode)
    shapes = _set_shapes(builder, config, ctx, int8_mode)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing = ctx.cache_dir / "tensorrt.timing.cache"
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return config, shapes


def build(ctx) -> list[Path]:
    trt = require_tensorrt()
    int8_mode = ctx.options.int8_mode or Int8Mode.QDQ
    onnx_path = _onnx_input(ctx, int8_mode)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config, shapes = _configure(trt, builder, ctx, int8_mode)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    (ctx.cache_dir / "tensorrt.timing.cache").write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = ctx.workdir / (ctx.stem + ".engine")
    engine.write_bytes(bytes(plan))
    sidecar = {"tensorrt_version": trt.__version__, **gpu_info(), "precision": ctx.precision.value,
               "int8_mode": int8_mode.value if ctx.precision == Precision.INT8 else None, "shapes": shapes,
               "dla_core": ctx.options.dla_core, "source_sha256": ctx.metadata.get("cmunext_edge.source_sha256"),
               "metadata": ctx.metadata}
    sidecar_path(engine).write_text(json.dumps(sidecar, indent=2))
    return [sidecar_path(engine), engine]


def embed(path: Path, metadata: dict) -> None:
    side = sidecar_path(path)
    data = loads_json(side.read_text())
    data["metadata"] = metadata
    side.write_text(json.dumps(data, indent=2))
