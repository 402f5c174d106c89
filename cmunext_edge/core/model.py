"""CMUNeXt with the official parameter names (FengheTan9/CMUNeXt, network/CMUNeXt.py).

Variants are data: one table of hyper-parameters (`variants.py`, torch-free) and one
builder. Module names and nesting mirror the official code so that official checkpoints load with strict=True.
Inside blocks the order is conv -> GELU (exact erf) -> BatchNorm, as in the paper's code.
"""
from __future__ import annotations

from cmunext_edge._deps import require
from cmunext_edge.core.variants import VARIANT_ALIASES, VARIANTS, VariantSpec, canonical_variant  # noqa: F401 (API)

torch = require("torch")        # this module makes modules: importing it without torch names the extra
nn = torch.nn


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def _conv_gelu_bn(ch_in: int, ch_out: int, kernel: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(ch_in, ch_out, kernel, padding=kernel // 2, groups=groups), nn.GELU(),
            nn.BatchNorm2d(ch_out)]


class ConvBlock(nn.Module):
    """Official `conv_block`: 3x3 conv -> BN -> ReLU."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(ch_in, ch_out, 3, padding=1), nn.BatchNorm2d(ch_out),
                                  nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class CMUNeXtBlock(nn.Module):
    """Depthwise large-kernel residual mixer + inverted-bottleneck 1x1s, then a ConvBlock."""

    def __init__(self, ch_in: int, ch_out: int, depth: int, kernel: int):
        super().__init__()
        self.block = nn.Sequential(*[
            nn.Sequential(
                Residual(nn.Sequential(*_conv_gelu_bn(ch_in, ch_in, kernel, groups=ch_in))),
                *_conv_gelu_bn(ch_in, ch_in * 4, 1),
                *_conv_gelu_bn(ch_in * 4, ch_in, 1),
            ) for _ in range(depth)])
        self.up = ConvBlock(ch_in, ch_out)

    def forward(self, x):
        return self.up(self.block(x))


class UpConv(nn.Module):
    """Official `up_conv`: bilinear x2 upsample -> 3x3 conv -> BN -> ReLU."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"),
                                nn.Conv2d(ch_in, ch_out, 3, padding=1), nn.BatchNorm2d(ch_out),
                                nn.ReLU(inplace=True))

    def forward(self, x):
        return self.up(x)


class FusionConv(nn.Module):
    """Official `fusion_conv`: grouped 3x3 then an inverted bottleneck, each conv->GELU->BN."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.conv = nn.Sequential(*_conv_gelu_bn(ch_in, ch_in, 3, groups=2),
                                  *_conv_gelu_bn(ch_in, ch_out * 4, 1),
                                  *_conv_gelu_bn(ch_out * 4, ch_out, 1))

    def forward(self, x):
        return self.conv(x)


class CMUNeXt(nn.Module):
    def __init__(self, variant: str = "cmunext", in_channels: int = 3, num_classes: int = 1):
        super().__init__()
        self.variant = canonical_variant(variant)
        self.in_channels, self.num_classes = in_channels, num_classes
        spec = VARIANTS[self.variant]
        d, depth, k = spec.dims, spec.depths, spec.kernels
        self.Maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.stem = ConvBlock(in_channels, d[0])
        self.encoder1 = CMUNeXtBlock(d[0], d[0], depth[0], k[0])
        self.encoder2 = CMUNeXtBlock(d[0], d[1], depth[1], k[1])
        self.encoder3 = CMUNeXtBlock(d[1], d[2], depth[2], k[2])
        self.encoder4 = CMUNeXtBlock(d[2], d[3], depth[3], k[3])
        self.encoder5 = CMUNeXtBlock(d[3], d[4], depth[4], k[4])
        self.Up5, self.Up_conv5 = UpConv(d[4], d[3]), FusionConv(d[3] * 2, d[3])
        self.Up4, self.Up_conv4 = UpConv(d[3], d[2]), FusionConv(d[2] * 2, d[2])
        self.Up3, self.Up_conv3 = UpConv(d[2], d[1]), FusionConv(d[1] * 2, d[1])
        self.Up2, self.Up_conv2 = UpConv(d[1], d[0]), FusionConv(d[0] * 2, d[0])
        self.Conv_1x1 = nn.Conv2d(d[0], num_classes, kernel_size=1)

    def forward(self, x):
        x1 = self.encoder1(self.stem(x))
        x2 = self.encoder2(self.Maxpool(x1))
        x3 = self.encoder3(self.Maxpool(x2))
        x4 = self.encoder4(self.Maxpool(x3))
        x5 = self.encoder5(self.Maxpool(x4))
        d = self.Up_conv5(torch.cat((x4, self.Up5(x5)), dim=1))
        d = self.Up_conv4(torch.cat((x3, self.Up4(d)), dim=1))
        d = self.Up_conv3(torch.cat((x2, self.Up3(d)), dim=1))
        d = self.Up_conv2(torch.cat((x1, self.Up2(d)), dim=1))
        return self.Conv_1x1(d)


def build_model(variant: str = "cmunext", in_channels: int = 3, num_classes: int = 1) -> CMUNeXt:
    return CMUNeXt(variant, in_channels, num_classes)

