"""Fold each post-activation BatchNorm into the 1x1 convolution that follows it.

CMUNeXt orders its layers conv -> GELU -> BatchNorm, so runtimes cannot fold those
BatchNorms into the preceding convolution (a non-linearity sits in between), and every
one of them costs a full pass over its tensor at inference. A BatchNorm in eval mode is
a per-channel affine map y = a*x + b; when the next layer is a 1x1 convolution W,c
(no padding, so no border effects), W(a*x + b) + c = (W*a) x + (W b + c) exactly. We
rewrite those pairs and replace the BatchNorm with Identity. Other BatchNorms (before a
residual addition, before a padded 3x3 convolution) are left alone because folding them
would not be exact.
"""
from __future__ import annotations

import copy

from cmunext_edge._deps import require


def _foldable_pairs(seq):
    """(index of BN, index of the following 1x1 conv) inside one nn.Sequential."""
    nn = require("torch").nn
    mods = list(seq)
    for i in range(len(mods) - 1):
        bn, conv = mods[i], mods[i + 1]
        if (isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d)
                and conv.kernel_size == (1, 1) and conv.groups == 1 and conv.padding == (0, 0)):
            yield i, i + 1


def _fold_pair(bn, conv) -> None:
    """Rewrite `conv` (1x1) in place so that conv(x) == old_conv(bn(x)) for eval-mode `bn`."""
    torch = require("torch")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.weight.shape[0])
    new_bias = bias + (conv.weight[:, :, 0, 0] * shift).sum(1)
    conv.weight.copy_(conv.weight * scale.view(1, -1, 1, 1))
    if conv.bias is None:
        conv.bias = torch.nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def fold_bn_into_next_conv(model):
    """Return an equivalent eval-mode copy with post-activation BNs folded (count in `.folded_bn`)."""
    torch = require("torch")
    nn = torch.nn
    model = copy.deepcopy(model).eval()
    folded = 0
    with torch.no_grad():
        for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
            for i_bn, i_conv in list(_foldable_pairs(seq)):
                _fold_pair(seq[i_bn], seq[i_conv])
                seq[i_bn] = nn.Identity()
                folded += 1
        # the last BN of the decoder feeds the final 1x1 head (outside any Sequential)
        last = getattr(model, "Up_conv2", None)
        head = getattr(model, "Conv_1x1", None)
        if last is not None and head is not None and isinstance(last.conv[-1], nn.BatchNorm2d):
            _fold_pair(last.conv[-1], head)
            last.conv[-1] = nn.Identity()
            folded += 1
    model.folded_bn = folded
    return model
