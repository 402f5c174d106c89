"""OpenVINO IR export: FP32, FP16 (compressed weights), BF16 (FP32 IR + inference hint) and
INT8 by NNCF post-training quantization on the calibration set; metadata in rt_info.

The IR is converted from the simplified FP32 ONNX (the same graph every target starts from).
NNCF options can be overridden through `options["nncf"]`; the defaults are the fastest and
most accurate measured for CMUNeXt on OpenVINO CPU (model_type TRANSFORMER: 9.9 ms vs 15.1 ms
with NNCF's defaults).
"""
from __future__ import annotations

import os
from pathlib import Path

from .._deps import require
from .onnx_export import export_onnx

NNCF_DEFAULTS = {"model_type": "transformer", "preset": "performance", "fast_bias_correction": True,
                 "subset_size": None}   # None: the whole calibration set


def set_rt_metadata(model, metadata: dict) -> None:
    for key, value in metadata.items():
        model.set_rt_info(value, ["model_info", key])


def quantize_int8(model, calib, **overrides):
    """nncf.quantize on the preprocessed calibration arrays (one image per item)."""
    nncf = require("nncf")
    opts = {**NNCF_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None or k == "model_type"}}
    kwargs = {"preset": getattr(nncf.QuantizationPreset, str(opts["preset"]).upper()),
              "fast_bias_correction": bool(opts["fast_bias_correction"]),
              "subset_size": int(opts["subset_size"] or len(calib))}
    if opts["model_type"]:
        kwargs["model_type"] = getattr(nncf.ModelType, str(opts["model_type"]).upper())
    dataset = nncf.Dataset(list(calib.batches(1)))
    return nncf.quantize(model, dataset, **kwargs)


def build(ctx) -> list[Path]:
    ov = require("openvino")
    model = ov.convert_model(str(export_onnx(ctx, ctx.scratch("model.onnx"))))
    if ctx.precision == "int8":
        model = quantize_int8(model, ctx.calib, **((ctx.options or {}).get("nncf") or {}))
    set_rt_metadata(model, ctx.metadata)
    xml = ctx.workdir / (ctx.stem + ".xml")
    ov.save_model(model, str(xml), compress_to_fp16=ctx.precision == "fp16")
    return [xml.with_suffix(".bin"), xml]      # .bin first: the .xml is what gets loaded


def embed(path: Path, metadata: dict) -> None:
    """Rewrite rt_info of a saved IR (weights are kept as saved, FP16 compression included)."""
    ov = require("openvino")
    path = Path(path)
    model = ov.Core().read_model(str(path))
    set_rt_metadata(model, metadata)
    tmp = path.with_name(".embed." + path.name)
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)
