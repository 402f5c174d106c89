import numpy as np
import torch

from cmunext_edge.metrics import iou_dice, iou_dice_from_logits, mean_scores


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
