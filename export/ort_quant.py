"""ONNX Runtime INT8: static QDQ quantization of the simplified FP32 ONNX on the calibration set.

Per-channel symmetric INT8 weights; activation ranges by percentile calibration by default
(measured on held-out BUSI samples with CMUNeXt-S: mask agreement 0.978 vs 0.961 for min-max;
excluding BatchNormalization from quantization made it worse, 0.961). For ONNX Runtime the activations default to QUInt8 (what
its x86 kernels are fastest with); `for_tensorrt=True` makes them symmetric QInt8, which is what
TensorRT's explicit quantization requires. The result is also the input of TensorRT INT8.
"""
from __future__ import annotations

import json
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.artifacts.meta import PREFIX
from cmunext_edge.export.onnx_export import export_onnx, set_metadata

FLOAT_LAYERS_KEY = "int8_float_layers"     # artifact metadata: the convolutions that stayed float

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# ONNX Runtime quantization knobs `cmunext-export --target auto` explores (ExportOptions.ort_quant):
# QDQ or QOperator format, per-channel weights, reduce_range (7-bit weights, for CPUs without
# VNNI; None: by this CPU, cpu_fit.ort_reduce_range; never for TensorRT), the op types to
# quantize (None: all ONNX Runtime can).
# max_images caps the calibration images: percentile/entropy calibration keeps every intermediate
# tensor of every image in memory (CMUNeXt-S, 128 images at 256x256: >23 GB, OOM-killed; about
# 0.18 GB an image), so the default takes 16 of the calibration set (about 3 GB), drawn again
# with --seed (CalibrationSet.subset; benchmarks/results/ort_calib_draw_2026-12-06_zen4.md).
# float_layers: nodes kept in float (not quantized), as for OpenVINO INT8: a name of
# openvino_export.FLOAT_LAYERS or a list of node-name patterns (regexes, matched in full against
# the ONNX node names, e.g. ".*/encoder1/up/conv/conv.0/.*"); None or "none": every node ORT can
# quantize; "auto": the OpenVINO default (cpu_fit.nncf_float_layers, "faithful-wide") for ONNX
# Runtime, none for TensorRT Q/DQ (not measured there). Measured on Zen 4, 90 held-out images
# (benchmarks/int8_notes.md): every node INT8 0.9717, worst 0.012; faithful-wide 0.9823, worst
# 0.872; latency unchanged (alternating A/B, 1.00x).
ORT_DEFAULTS = {"format": "qdq", "per_channel": True, "reduce_range": None, "op_types": None,
                "max_images": 16, "float_layers": "auto"}


def resolved_ort_options(overrides: dict, for_tensorrt: bool = False) -> dict:
    """ORT_DEFAULTS with `overrides` applied and reduce_range decided for this CPU."""
    from cmunext_edge.export.cpu_fit import ort_reduce_range
    opts = {**ORT_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    if opts["reduce_range"] is None:
        opts["reduce_range"] = False if for_tensorrt else ort_reduce_range()
    if opts["float_layers"] == "auto":
        from cmunext_edge.export.cpu_fit import nncf_float_layers
        opts["float_layers"] = None if for_tensorrt else nncf_float_layers()
    return opts


def calibration_cap(options) -> int | None:
    """How many calibration images ONNX Runtime INT8 reads for `options` (max_images of them, drawn
    by CalibrationSet.subset)."""
    given = (options.ort_quant or {}).get("max_images")
    return ORT_DEFAULTS["max_images"] if given is None else given


def tensorrt_calibration_cap(options) -> int | None:
    """TensorRT INT8: Q/DQ (the default mode) reads ORT_DEFAULTS' max_images; its calibrator, all."""
    from cmunext_edge.core.precision import Int8Mode
    return ORT_DEFAULTS["max_images"] if (options.int8_mode or Int8Mode.QDQ) == Int8Mode.QDQ else None


class CalibrationReader:
    """The tiny onnxruntime CalibrationDataReader interface over a CalibrationSet."""

    def __init__(self, calib, input_name: str = "input", max_images: int | None = None):
        self.calib, self.input_name, self.max_images = calib, input_name, max_images
        self.rewind()

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self):
        self._it = iter(list(self.calib.batches(1))[:self.max_images])


def quantize_qdq(fp32_onnx: Path, out: Path, calib, *, for_tensorrt: bool = False,
                 calibrate_method: str = "percentile", scratch: Path | None = None,
                 exclude_ops: tuple[str, ...] = (), **overrides) -> Path:
    q = require("onnxruntime.quantization")
    from onnxruntime.quantization.registry import QDQRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = (scratch or out.parent) / (Path(fp32_onnx).stem + ".prep.onnx")
    quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
    method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
              "percentile": q.CalibrationMethod.Percentile}[calibrate_method]
    opts = resolved_ort_options(overrides, for_tensorrt)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if for_tensorrt else {"WeightSymmetric": True}
    qdq = str(opts["format"]).lower() == "qdq" or for_tensorrt
    op_types = opts["op_types"] or [op for op in QDQRegistry if op not in exclude_ops]
    excluded = float_nodes(prepared, opts["float_layers"])
    q.quantize_static(str(prepared), str(out), CalibrationReader(calib, max_images=opts["max_images"]),
                      quant_format=q.QuantFormat.QDQ if qdq else q.QuantFormat.QOperator,
                      per_channel=bool(opts["per_channel"]), reduce_range=bool(opts["reduce_range"]),
                      activation_type=q.QuantType.QInt8 if for_tensorrt else q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8, calibrate_method=method, extra_options=extra,
                      op_types_to_quantize=list(op_types), nodes_to_exclude=excluded)
    return out


def float_convolutions(model) -> list[str]:
    """The Conv nodes of a quantized ModelProto whose weights are not dequantized int8 (float)."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and producers.get(n.input[1]) != "DequantizeLinear"]


def float_nodes(onnx_path: Path, float_layers) -> list[str]:
    """The ONNX node names that `float_layers` (a FLOAT_LAYERS name or patterns) keeps in float."""
    import re
    if not float_layers:
        return []
    from cmunext_edge.export.openvino_export import FLOAT_LAYERS, float_layer_patterns
    if isinstance(float_layers, str) and float_layers not in FLOAT_LAYERS:
        raise ValueError(f"ort_quant float_layers {float_layers!r}; known: {', '.join(FLOAT_LAYERS)}, "
                         f"or a list of node-name patterns")
    patterns = [re.compile(p) for p in float_layer_patterns(float_layers)]
    graph = require("onnx").load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if any(p.fullmatch(n.name) for p in patterns)]


def build(ctx) -> list[Path]:
    onnx = require("onnx")
    path = ctx.workdir / (ctx.stem + ".onnx")
    fp32 = export_onnx(ctx, ctx.scratch("model.onnx"))
    quantize_qdq(fp32, ctx.scratch("qdq.onnx"), ctx.calib,
                 calibrate_method=ctx.options.calibrate_method or "percentile", scratch=ctx.scratch(""),
                 **(ctx.options.ort_quant or {}))
    model = onnx.load(str(ctx.scratch("qdq.onnx")))
    # recorded in the artifact; ctx.metadata is also what the pipeline embeds after verification
    ctx.metadata[PREFIX + FLOAT_LAYERS_KEY] = json.dumps(float_convolutions(model))
    set_metadata(model, ctx.metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return [path]

