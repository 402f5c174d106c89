"""Parameters and multiply-accumulates (MACs) of a CMUNeXt, counted the same way every time.

How MACs are counted, exactly:

- Only `nn.Conv2d` layers are counted (CMUNeXt has no Linear or transposed conv).
  A forward hook on every Conv2d sees the real output shape at the requested input
  size, and adds ``out_channels * H_out * W_out * (in_channels / groups) * kH * kW``
  per image. Depthwise and grouped convolutions are therefore counted with their
  reduced cost; bias additions are not counted.
- Excluded: BatchNorm, GELU/ReLU, max-pooling, bilinear upsampling, concatenation,
  residual additions and the final sigmoid. On CMUNeXt these are a few percent of
  the conv MACs; leaving them out is the usual convention (thop, fvcore, ptflops
  differ exactly here), so state it whenever the numbers are compared elsewhere.
- The count is per image (batch 1) at the given input size, so it scales with H*W.
- FLOPs, where a report needs them, are taken as 2 * MACs.

A variant's counts need no torch: `variant_complexity` takes every conv weight shape from
`variants.state_shapes` and multiplies its element count (out * in/groups * kH * kW) by the
output area at its resolution level. `count_macs` measures the same thing on any torch
model with forward hooks; the tests check that the two agree.

Parameters are all learnable elements (BatchNorm running statistics excluded),
which gives the official 0.418 M / 3.149 M / 8.287 M for CMUNeXt-S / base / L.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

from cmunext_edge._deps import require
from cmunext_edge.core.variants import (canonical_variant, conv_macs_from_shapes, count_params, state_shapes)


@dataclass(frozen=True)
class Complexity:
    variant: str
    params: int
    macs: int                      # conv multiply-accumulates per image at `input_hw`
    input_hw: tuple[int, int]
    in_channels: int = 3
    num_classes: int = 1

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict:
        out = asdict(self)
        out["input_hw"] = list(self.input_hw)
        out["counted"] = "Conv2d multiply-accumulates per image; BN/activations/pooling/upsampling excluded"
        return out


def conv_macs(conv, output_shape) -> int:
    """MACs of one Conv2d call for one image, from its output shape (N, C, H, W)."""
    _, c_out, h, w = output_shape
    kh, kw = conv.kernel_size
    return int(c_out * h * w * (conv.in_channels // conv.groups) * kh * kw)


def count_macs(model, input_hw: tuple[int, int] = (256, 256), in_channels: int | None = None) -> int:
    """Conv2d MACs per image of `model` at `input_hw`, counted with forward hooks."""
    torch = require("torch")
    nn = torch.nn
    in_channels = in_channels or getattr(model, "in_channels", 3)
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        total += conv_macs(module, tuple(output.shape))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros((1, in_channels, *input_hw), device=device))
    finally:
        for h in handles:
            h.remove()
    return total


@lru_cache(maxsize=32)
def variant_complexity(variant: str, input_hw: tuple[int, int] = (256, 256), in_channels: int = 3,
                       num_classes: int = 1) -> Complexity:
    """Parameters and MACs of a variant (weights do not matter), from its shapes: no torch needed."""
    variant = canonical_variant(variant)
    shapes = state_shapes(variant, in_channels, num_classes)
    macs = conv_macs_from_shapes(shapes, tuple(input_hw))
    return Complexity(variant, count_params(shapes), macs, tuple(input_hw), in_channels, num_classes)
