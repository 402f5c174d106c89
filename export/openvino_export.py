"""OpenVINO IR export: FP32, FP16 (compressed weights), BF16 (FP32 IR + inference hint) and
INT8 by NNCF post-training quantization on the calibration set; metadata in rt_info.

The IR is converted from the simplified FP32 ONNX (the same graph every target starts from).
NNCF options can be overridden through `ExportOptions.nncf`; the defaults are the fastest and
most accurate measured for CMUNeXt on OpenVINO CPU (model_type TRANSFORMER: 9.9 ms vs 15.1 ms
with NNCF's defaults; see benchmarks/int8_notes.md for the options explored). `overflow_fix`
"auto" follows the CPU (cpu_fit.py): ENABLE on x86, where without VNNI NNCF's default
(FIRST_LAYER) fails the 0.97 agreement gate; NNCF's default elsewhere.

Faithful INT8 (issue 21): `float_layers` keeps the few convolutions whose quantization flips
masks on held-out images in float (NNCF ignored scope; they run f32, or bf16 where the CPU has
it natively and OpenVINO picks it). The named lists are in FLOAT_LAYERS, found by
benchmarks/int8_faithful.py (greedy float fallback per convolution on one half of the shipped
model's held-out images, reported on the other half; benchmarks/int8_notes.md). The convolutions
that actually stayed float are read back from the quantized model and recorded in the artifact
(`cmunext_edge.int8_float_layers`) and, with the recipe, in manifest.json (`int8_settings`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.core.precision import Precision
from cmunext_edge.artifacts.meta import PREFIX
from cmunext_edge.export.cpu_fit import AUTO, OVERFLOW_FIX, resolve_float_layers, resolve_overflow_fix
from cmunext_edge.export.onnx_export import export_onnx

# NNCF ignored-scope patterns (module paths of CMUNeXt convolutions, as ONNX/OpenVINO name them)
# kept in float by each named INT8 recipe. "faithful": the fewest that hold the held-out gate
# (mean agreement >= 0.97, <= 3% of images below 0.90) for the shipped CMUNeXt-S on an AVX2 CPU,
# graph without rewrites (what `cmunext-export --int8` builds); "faithful-wide", the default
# (cpu_fit.nncf_float_layers), holds it with margin on AVX2 and AVX-512 VNNI; with the fold_bn +
# dense_groups rewrites no short list was found (benchmarks/int8_notes.md, "Faithful INT8").
FLOAT_LAYERS = {
    # the first encoder block's 3x3 depthwise convolution (full resolution, 8 channels): alone it
    # takes the plain graph from 4 to 1 of 90 held-out images below 0.90 agreement (AVX2)
    "faithful": (".*/encoder1/block/block.0/block.0.0/fn/fn.0/.*",),
    # + the four convolutions the same search picked for the dense_groups graph: more margin (plain
    # graph: 0 of 90 held-out images below 0.90, worst 0.92; with fold_bn + dense_groups it still
    # fails on half A: an image with an empty FP32 mask gets a false blob)
    "faithful-wide": (".*/encoder1/block/block.0/block.0.0/fn/fn.0/.*", ".*/encoder1/up/conv/conv.0/.*",
                      ".*/encoder2/block/block.0/block.0.4/.*", ".*/encoder3/block/block.0/block.0.1/.*",
                      ".*/encoder4/up/conv/conv.0/.*"),
    "none": (),
}
FLOAT_LAYERS_KEY = "int8_float_layers"     # artifact metadata: the convolutions that stayed float
CONV_TYPES = ("Convolution", "GroupConvolution")

NNCF_DEFAULTS = {"model_type": "transformer", "preset": "performance", "fast_bias_correction": True,
                 "subset_size": None,   # None: the whole calibration set
                 "ignored_types": None,  # e.g. ["Interpolate", "GroupConvolution"]: kept in float
                 "ignored_names": None,  # node-name regexes kept in float
                 "smooth_quant_alpha": None,    # SmoothQuant (MatMul only in NNCF); None: NNCF's
                 "overflow_fix": "auto",  # auto (per CPU, cpu_fit.py), enable, disable, first_layer
                 "float_layers": "auto",  # auto (per CPU, cpu_fit.py), a FLOAT_LAYERS name, or patterns
                 "max_drop": None}      # quantize_with_accuracy_control: allowed Dice drop (absolute)


def _kwargs(nncf, opts: dict) -> dict:
    kwargs = {"preset": getattr(nncf.QuantizationPreset, str(opts["preset"]).upper()),
              "fast_bias_correction": bool(opts["fast_bias_correction"])}
    if opts["model_type"]:
        kwargs["model_type"] = getattr(nncf.ModelType, str(opts["model_type"]).upper())
    patterns = list(opts["ignored_names"] or []) + list(float_layer_patterns(opts.get("float_layers")))
    if opts["ignored_types"] or patterns:
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=list(opts["ignored_types"] or []),
                                                    patterns=patterns, validate=False)
    advanced = {}
    if opts["smooth_quant_alpha"] is not None:
        advanced["smooth_quant_alpha"] = float(opts["smooth_quant_alpha"])
    overflow_fix = resolve_overflow_fix(opts.get("overflow_fix", AUTO))
    if overflow_fix is not None:
        from nncf.quantization.advanced_parameters import OverflowFix
        advanced["overflow_fix"] = getattr(OverflowFix, OVERFLOW_FIX[overflow_fix])
    if advanced:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    return kwargs


def resolved_nncf_options(overrides: dict) -> dict:
    """NNCF_DEFAULTS with `overrides` applied (as quantize_int8 does), overflow_fix and
    float_layers resolved for this CPU (`float_layer_patterns`: the ignored-scope patterns they
    add); raises ValueError for an unknown option."""
    unknown = set(overrides) - set(NNCF_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown NNCF option(s) {sorted(unknown)}; known: {', '.join(NNCF_DEFAULTS)}")
    opts = {**NNCF_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None or k == "model_type"}}
    opts["overflow_fix"] = resolve_overflow_fix(opts["overflow_fix"])
    opts["float_layers"] = resolve_float_layers(opts["float_layers"], FLOAT_LAYERS)
    opts["float_layer_patterns"] = list(float_layer_patterns(opts["float_layers"]))   # recorded
    return opts


def float_layer_patterns(value) -> tuple[str, ...]:
    """The ignored-scope patterns of a resolved `float_layers` value (a FLOAT_LAYERS name or a
    list of patterns; None: none)."""
    if not value:
        return ()
    return tuple(FLOAT_LAYERS[value]) if isinstance(value, str) else tuple(value)


def float_convolutions(model) -> list[str]:
    """The convolutions of a quantized ov.Model whose weights are not int8 (kept in float)."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in CONV_TYPES:
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() != "Constant" and node.get_input_size():
            node = node.input_value(0).get_node()
        if node.get_output_element_type(0).get_type_name() not in ("i8", "u8"):
            out.append(op.get_friendly_name())
    return out


def dice_validation_fn(compiled_model, items) -> tuple[float, list[float]]:
    """NNCF accuracy-control metric: mean official Dice of (input, C x H x W mask) items, per-item
    list; each item's Dice is the official one over all its class channels (metrics.class_scores)."""
    import numpy as np
    from cmunext_edge.core.metrics import class_scores
    scores = []
    for x, mask in items:
        logits = np.asarray(compiled_model(x)[0])[0]
        truth = mask if mask.ndim == 3 else mask[None]
        scores.append(float(class_scores(logits > 0, truth)["dice"]))
    return float(np.mean(scores)), scores


def set_rt_metadata(model, metadata: dict) -> None:
    for key, value in metadata.items():
        model.set_rt_info(value, ["model_info", key])


def quantize_int8(model, calib, **overrides):
    """nncf.quantize on the preprocessed calibration arrays (one image per item)."""
    nncf = require("nncf")
    opts = resolved_nncf_options(overrides)
    kwargs = {**_kwargs(nncf, opts), "subset_size": int(opts["subset_size"] or len(calib))}
    dataset = nncf.Dataset(list(calib.batches(1)))
    if opts["max_drop"] is None:
        return nncf.quantize(model, dataset, **kwargs)
    # Accuracy control: validate on the calibration images that have ground truth; NNCF reverts
    # the most damaging quantizers to float until the Dice drop is within max_drop.
    items = [(x[None], m) for x, m in zip(calib.inputs, calib.masks) if m is not None]
    if not items:
        raise ValueError("NNCF accuracy control needs calibration images with masks "
                         "(an official-layout dataset as --calib)")
    if "advanced_parameters" in kwargs:
        kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")
    return nncf.quantize_with_accuracy_control(model, dataset, nncf.Dataset(items), dice_validation_fn,
                                               max_drop=float(opts["max_drop"]), **kwargs)


def build(ctx) -> list[Path]:
    ov = require("openvino")
    model = ov.convert_model(str(export_onnx(ctx, ctx.scratch("model.onnx"))))
    if ctx.precision == Precision.INT8:
        model = quantize_int8(model, ctx.calib, **(ctx.options.nncf or {}))
        # recorded in the artifact; ctx.metadata is also what the pipeline embeds after verification
        ctx.metadata[PREFIX + FLOAT_LAYERS_KEY] = json.dumps(float_convolutions(model))
    set_rt_metadata(model, ctx.metadata)
    xml = ctx.workdir / (ctx.stem + ".xml")
    ov.save_model(model, str(xml), compress_to_fp16=ctx.precision == Precision.FP16)
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
