import numpy as np
import torch

from cmunext_edge.core.metrics import iou_dice, iou_dice_from_logits, mean_scores


def official_iou_score(output, target):
    """Verbatim logic of the official utils/metrics.py iou_score (torch tensors, one image)."""
    smooth = 1e-5
    output = torch.sigmoid(output).data.cpu().numpy()
    target = target.data.cpu().numpy()
    output_ = output > 0.5
    target_ = target > 0.5
    intersection = (output_ & target_).sum()
    union = (output_ | target_).sum()
    iou = (intersection + smooth) / (union + smooth)
    dice = 2 * iou / (iou + 1)
    return iou, dice


def test_matches_official_definition():
    rng = np.random.default_rng(1)
    for _ in range(5):
        logits = rng.normal(size=(256, 256)).astype(np.float32)
        target = (rng.random((256, 256)) > 0.7).astype(np.float32)
        ours = iou_dice_from_logits(logits, target)
        ref = official_iou_score(torch.from_numpy(logits), torch.from_numpy(target))
        assert np.allclose(ours, ref, atol=1e-7)


def test_empty_prediction_and_empty_target_score_one():
    assert iou_dice(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == (1.0, 1.0)


def test_known_values_and_mean():
    p = np.zeros((10, 10), bool)
    g = np.zeros((10, 10), bool)
    p[:, :5], g[:, 2:7] = True, True
    iou, dice = iou_dice(p, g)
    assert abs(iou - 30 / 70) < 1e-6 and abs(dice - 0.6) < 1e-6
    assert mean_scores([(0.5, 0.6), (1.0, 1.0)]) == {"mean_iou": 0.75, "mean_dice": 0.8}
    assert mean_scores([]) == {"mean_iou": None, "mean_dice": None}


def test_mean_dice_averages_the_classes_of_one_image():
    from cmunext_edge.core.metrics import mean_dice
    a = np.zeros((2, 4, 4), bool)
    b = a.copy()
    a[0, :2], b[0, :2] = True, True          # class 0 identical
    a[1, :2], b[1, 2:] = True, True          # class 1 disjoint: 8 + 8 pixels, none shared
    iou1 = (0 + 1e-5) / (16 + 1e-5)          # the official smoothed IoU and Dice (../shared/reference/README.md)
    assert abs(mean_dice(a, b) - (1.0 + 2 * iou1 / (1 + iou1)) / 2) < 1e-12
    assert mean_dice(a, a) == 1.0


def test_toolchain_versions_one_list_for_manifest_and_bench():
    from cmunext_edge.bench.system import machine_info
    from cmunext_edge.export.manifest import toolchain_versions as manifest_versions
    from cmunext_edge.toolchain import toolchain_versions
    v = toolchain_versions()
    assert v["python"] and v["numpy"] == np.__version__
    assert manifest_versions() == v == machine_info(0)["versions"]
