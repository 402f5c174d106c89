"""ONNX export: TorchScript-based exporter (dynamo=False), onnxslim, checker, metadata_props."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

from .._deps import require

INPUT, OUTPUT = "input", "logits"


def export_onnx(ctx, path: Path, half: bool = False) -> Path:
    """Simplified ONNX of ctx.model; FP32 is also the input of the other targets.

    FP16 is traced from a half copy of the model (input/output float16 too; the runtime casts at
    the boundary): that keeps Resize scales and other shape tensors float32 as ONNX requires.
    """
    torch, onnx, onnxslim = require("torch"), require("onnx"), require("onnxslim")
    model = copy.deepcopy(ctx.model).half() if half else ctx.model
    dummy = torch.zeros(max(1, ctx.batch), ctx.in_channels, ctx.spec.height, ctx.spec.width,
                        dtype=torch.float16 if half else torch.float32)
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if ctx.dynamic else None
    raw = ctx.scratch(path.stem + ".raw.onnx")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # the legacy exporter is deliberate
        torch.onnx.export(model, (dummy,), str(raw), dynamo=False, opset_version=ctx.opset,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_axes=axes,
                          do_constant_folding=True)
    model = onnxslim.slim(onnx.load(str(raw)))
    onnx.save(model, str(path))
    return path


def set_metadata(model, metadata: dict) -> None:
    """Replace the cmunext_edge.* entries of a ModelProto's metadata_props."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("cmunext_edge.")]
    del model.metadata_props[:]
    for key, value in keep + sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def embed(path: Path, metadata: dict) -> None:
    onnx = require("onnx")
    model = onnx.load(str(path))
    set_metadata(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build(ctx) -> list[Path]:
    onnx = require("onnx")
    path = ctx.workdir / (ctx.stem + ".onnx")
    model = onnx.load(str(export_onnx(ctx, ctx.scratch("model.onnx"), half=ctx.precision == "fp16")))
    set_metadata(model, ctx.metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return [path]
