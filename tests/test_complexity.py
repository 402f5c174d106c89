"""Parameter and MAC counting (cmunext_edge.core.complexity)."""
import pytest

torch = pytest.importorskip("torch")

from cmunext_edge.checkpoints.weights import checkpoint_complexity
from cmunext_edge.core.complexity import conv_macs, count_macs, variant_complexity
from cmunext_edge.core.model import build_model  # noqa: E402


@pytest.mark.parametrize("variant, official_m", [("cmunext-s", 0.418), ("cmunext", 3.149),
                                                 ("cmunext-l", 8.287)])
def test_parameters_match_official(variant, official_m):
    c = variant_complexity(variant)
    assert round(c.params / 1e6, 3) == official_m


def test_conv_macs_formula_dense_and_depthwise():
    dense = torch.nn.Conv2d(4, 8, 3, padding=1)
    depthwise = torch.nn.Conv2d(8, 8, 7, padding=3, groups=8)
    assert conv_macs(dense, (1, 8, 10, 12)) == 8 * 10 * 12 * 4 * 9
    assert conv_macs(depthwise, (1, 8, 10, 12)) == 8 * 10 * 12 * 1 * 49


def test_only_convs_are_counted():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.GELU(),
                              torch.nn.MaxPool2d(2), torch.nn.Upsample(scale_factor=2, mode="bilinear"),
                              torch.nn.Conv2d(4, 2, 3, padding=1, groups=2)).eval()
    assert count_macs(net, (16, 16), in_channels=3) == 4 * 16 * 16 * 3 + 2 * 16 * 16 * 2 * 9


def test_macs_scale_with_area_and_meta_matches_real_model():
    s256 = variant_complexity("cmunext-s", (256, 256))
    s128 = variant_complexity("cmunext-s", (128, 128))
    assert s256.macs == 4 * s128.macs
    real = build_model("cmunext-s").eval()
    assert count_macs(real, (128, 128)) == s128.macs
    assert 0.9e9 < s256.macs < 1.1e9      # ~1.01 GMACs (convs only)


@pytest.mark.parametrize("variant", ["cmunext-s", "cmunext", "cmunext-l"])
@pytest.mark.parametrize("hw, in_channels, num_classes", [((256, 256), 3, 1), ((224, 320), 1, 2)])
def test_shape_based_count_equals_hooks_on_the_built_model(variant, hw, in_channels, num_classes):
    c = variant_complexity(variant, hw, in_channels, num_classes)
    with torch.device("meta"):
        model = build_model(variant, in_channels, num_classes).eval()
    assert c.macs == count_macs(model, hw, in_channels)
    assert c.params == sum(p.numel() for p in model.parameters())


def test_checkpoint_complexity_uses_spec_size(ckpt_s):
    c = checkpoint_complexity(ckpt_s)
    assert c.variant == "cmunext-s" and c.input_hw == (256, 256)
    assert c.to_dict()["macs"] == c.macs
