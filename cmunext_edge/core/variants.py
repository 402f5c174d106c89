"""The CMUNeXt variants as data, and everything that follows from them without torch.

One table of hyper-parameters (dims, depths, kernels per stage). From it,
`state_shapes` gives the name -> shape of every entry of the official state dict,
exactly as `model.CMUNeXt` lays it out (tests check the two agree), so that variant
detection, parameter counts and MAC counts need shapes only, never a tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod


@dataclass(frozen=True)
class VariantSpec:
    dims: tuple[int, int, int, int, int]
    depths: tuple[int, int, int, int, int]
    kernels: tuple[int, int, int, int, int]


VARIANTS: dict[str, VariantSpec] = {
    "cmunext-s": VariantSpec((8, 16, 32, 64, 128), (1, 1, 1, 1, 1), (3, 3, 7, 7, 9)),
    "cmunext": VariantSpec((16, 32, 128, 160, 256), (1, 1, 1, 3, 1), (3, 3, 7, 7, 7)),
    "cmunext-l": VariantSpec((32, 64, 128, 256, 512), (1, 1, 1, 6, 3), (3, 3, 7, 7, 7)),
}
VARIANT_ALIASES = {"s": "cmunext-s", "b": "cmunext", "base": "cmunext", "cmunext-b": "cmunext",
                   "l": "cmunext-l"}

# state-dict entries that are buffers, not parameters (BatchNorm running statistics)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")

# top-level module -> resolution level of its convolutions' output (0: input size, 4: 1/16)
LEVELS = {"stem": 0, "encoder1": 0, "encoder2": 1, "encoder3": 2, "encoder4": 3, "encoder5": 4,
          "Up5": 3, "Up_conv5": 3, "Up4": 2, "Up_conv4": 2, "Up3": 1, "Up_conv3": 1,
          "Up2": 0, "Up_conv2": 0, "Conv_1x1": 0}

Shapes = dict[str, tuple[int, ...]]


def canonical_variant(name: str) -> str:
    key = name.lower().replace("_", "-")
    key = VARIANT_ALIASES.get(key, key)
    if key not in VARIANTS:
        raise ValueError(f"unknown CMUNeXt variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return key


def _conv(prefix: str, ch_out: int, ch_in: int, kernel: int, groups: int = 1) -> Shapes:
    return {f"{prefix}.weight": (ch_out, ch_in // groups, kernel, kernel), f"{prefix}.bias": (ch_out,)}


def _bn(prefix: str, ch: int) -> Shapes:
    return {f"{prefix}.weight": (ch,), f"{prefix}.bias": (ch,), f"{prefix}.running_mean": (ch,),
            f"{prefix}.running_var": (ch,), f"{prefix}.num_batches_tracked": ()}


def _conv_block(prefix: str, ch_in: int, ch_out: int) -> Shapes:
    """`ConvBlock`: 3x3 conv (index 0) and BatchNorm (index 1)."""
    return {**_conv(f"{prefix}.0", ch_out, ch_in, 3), **_bn(f"{prefix}.1", ch_out)}


def _cmunext_block(prefix: str, ch_in: int, ch_out: int, depth: int, kernel: int) -> Shapes:
    out: Shapes = {}
    for j in range(depth):
        p = f"{prefix}.block.{j}"
        out.update({**_conv(f"{p}.0.fn.0", ch_in, ch_in, kernel, groups=ch_in), **_bn(f"{p}.0.fn.2", ch_in),
                    **_conv(f"{p}.1", ch_in * 4, ch_in, 1), **_bn(f"{p}.3", ch_in * 4),
                    **_conv(f"{p}.4", ch_in, ch_in * 4, 1), **_bn(f"{p}.6", ch_in)})
    return {**out, **_conv_block(f"{prefix}.up.conv", ch_in, ch_out)}


def _up_conv(prefix: str, ch_in: int, ch_out: int) -> Shapes:
    return {**_conv(f"{prefix}.up.1", ch_out, ch_in, 3), **_bn(f"{prefix}.up.2", ch_out)}


def _fusion_conv(prefix: str, ch_in: int, ch_out: int) -> Shapes:
    return {**_conv(f"{prefix}.conv.0", ch_in, ch_in, 3, groups=2), **_bn(f"{prefix}.conv.2", ch_in),
            **_conv(f"{prefix}.conv.3", ch_out * 4, ch_in, 1), **_bn(f"{prefix}.conv.5", ch_out * 4),
            **_conv(f"{prefix}.conv.6", ch_out, ch_out * 4, 1), **_bn(f"{prefix}.conv.8", ch_out)}


def state_shapes(variant: str, in_channels: int = 3, num_classes: int = 1) -> Shapes:
    """Name -> shape of every state-dict entry of `model.CMUNeXt(variant, ...)`, in its order."""
    spec = VARIANTS[canonical_variant(variant)]
    d, depth, k = spec.dims, spec.depths, spec.kernels
    shapes = _conv_block("stem.conv", in_channels, d[0])
    chans = (d[0],) + d
    for i in range(5):
        shapes.update(_cmunext_block(f"encoder{i + 1}", chans[i], chans[i + 1], depth[i], k[i]))
    for level in (5, 4, 3, 2):
        hi, lo = d[level - 1], d[level - 2]
        shapes.update({**_up_conv(f"Up{level}", hi, lo), **_fusion_conv(f"Up_conv{level}", lo * 2, lo)})
    shapes.update(_conv("Conv_1x1", num_classes, d[0], 1))
    return shapes


def is_parameter(name: str) -> bool:
    """True for learnable weights, False for BatchNorm running statistics."""
    return not name.endswith(BUFFER_SUFFIXES)


def count_params(shapes: Shapes) -> int:
    """Learnable parameters (BatchNorm running statistics excluded) of a name -> shape mapping."""
    return sum(prod(shape) for name, shape in shapes.items() if is_parameter(name))


def conv_macs_from_shapes(shapes: Shapes, input_hw: tuple[int, int]) -> int:
    """Conv2d multiply-accumulates per image at `input_hw`, from the conv weight shapes alone.

    A conv weight (out, in/groups, kH, kW) costs out * in/groups * kH * kW per output pixel,
    i.e. its element count times the output area at its resolution level (`LEVELS`).
    """
    total = 0
    for name, shape in shapes.items():
        if len(shape) == 4 and name.endswith(".weight"):
            level = LEVELS[name.split(".", 1)[0]]
            total += prod(shape) * (input_hw[0] >> level) * (input_hw[1] >> level)
    return total
