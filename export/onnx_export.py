"""ONNX export: TorchScript-based exporter (dynamo=False), onnxslim, checker, metadata_props."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.core.precision import Precision

INPUT, OUTPUT = "input", "logits"
# Exact graph rewrites applied to the PyTorch model before tracing (name -> what it does);
# `cmunext-export --target auto` measures them, each is kept only where it measurably helps.
GRAPH_OPTIONS = {
    "fold_bn": "fold each post-activation BatchNorm into the following 1x1 convolution",
    "dense_groups": "grouped (groups=2) convolutions as dense ones with block-diagonal weights: "
                    "OpenVINO runs those in slow bf16 GroupConvolution kernels and NNCF leaves "
                    "them unquantized; dense, they run as INT8 brgconv (CMUNeXt-S 1 thread: "
                    "10.0 -> 9.3 ms)",
    "split_groups": "grouped (groups=2) convolutions as one dense convolution per group on channel "
                    "slices, concatenated: INT8 brgconv like dense_groups, without its zero MACs",
}


def _split_conv_class():
    nn = require("torch").nn

    class SplitGroupConv(nn.Module):
        """A grouped Conv2d as `groups` dense convolutions on channel slices (exact)."""

        def __init__(self, conv):
            super().__init__()
            g, ci, co = conv.groups, conv.in_channels // conv.groups, conv.out_channels // conv.groups
            self.ci = ci
            self.convs = nn.ModuleList()
            for i in range(g):
                part = nn.Conv2d(ci, co, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                                 bias=conv.bias is not None)
                part.weight.data.copy_(conv.weight.data[i * co:(i + 1) * co])
                if conv.bias is not None:
                    part.bias.data.copy_(conv.bias.data[i * co:(i + 1) * co])
                self.convs.append(part)

        def forward(self, x):
            torch = require("torch")
            return torch.cat([c(x[:, i * self.ci:(i + 1) * self.ci]) for i, c in enumerate(self.convs)], 1)

    return SplitGroupConv


def split_grouped_convs(model):
    """Equivalent copy where every grouped, non-depthwise Conv2d is one dense conv per group."""
    torch = require("torch")
    nn, cls = torch.nn, _split_conv_class()
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, conv in list(parent.named_children()):
            if isinstance(conv, nn.Conv2d) and 1 < conv.groups < conv.in_channels:
                setattr(parent, name, cls(conv))
    return model


def densify_grouped_convs(model):
    """Equivalent copy where every grouped, non-depthwise Conv2d is dense (zero off-diagonal blocks)."""
    torch = require("torch")
    nn = torch.nn
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, conv in list(parent.named_children()):
                if not (isinstance(conv, nn.Conv2d) and 1 < conv.groups < conv.in_channels):
                    continue
                dense = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                  conv.padding, conv.dilation, bias=conv.bias is not None)
                weight = torch.zeros_like(dense.weight)
                g, ci, co = conv.groups, conv.in_channels // conv.groups, conv.out_channels // conv.groups
                for i in range(g):
                    weight[i * co:(i + 1) * co, i * ci:(i + 1) * ci] = conv.weight[i * co:(i + 1) * co]
                dense.weight.copy_(weight)
                if conv.bias is not None:
                    dense.bias.copy_(conv.bias)
                setattr(parent, name, dense)
    return model


def prepare_model(model, graph: dict | None):
    """Apply the requested GRAPH_OPTIONS (all exact up to float rounding) to an eval-mode model."""
    graph = {k: v for k, v in (graph or {}).items() if v}
    unknown = set(graph) - set(GRAPH_OPTIONS)
    if unknown:
        raise ValueError(f"unknown graph option(s) {sorted(unknown)}; known: {', '.join(GRAPH_OPTIONS)}")
    if graph.get("fold_bn"):
        from cmunext_edge.core.fold import fold_bn_into_next_conv
        model = fold_bn_into_next_conv(model)
    if graph.get("dense_groups"):
        model = densify_grouped_convs(model)
    if graph.get("split_groups"):
        model = split_grouped_convs(model)
    return model


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
    model = onnx.load(str(export_onnx(ctx, ctx.scratch("model.onnx"), half=ctx.precision == Precision.FP16)))
    set_metadata(model, ctx.metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return [path]
