"""Dice and IoU exactly as the official CMUNeXt code defines them (utils/metrics.py).

Per image: IoU = (|P and G| + 1e-5) / (|P or G| + 1e-5), Dice = 2*IoU / (1 + IoU), where
P = sigmoid(logit) > 0.5 and G = target > 0.5; scores are then averaged over images.
"""
from __future__ import annotations

import numpy as np

SMOOTH = 1e-5


def iou_dice(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Official IoU and Dice of one boolean prediction against one boolean target."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    inter = np.logical_and(pred, target).sum()
    union = np.logical_or(pred, target).sum()
    iou = (inter + SMOOTH) / (union + SMOOTH)
    return float(iou), float(2 * iou / (iou + 1))


def iou_dice_from_logits(logits: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The official `iou_score` for one image: logits thresholded at 0 (= sigmoid > 0.5)."""
    return iou_dice(np.asarray(logits) > 0, np.asarray(target) > 0.5)


def mean_scores(pairs) -> dict[str, float]:
    """Average per-image (iou, dice) pairs; None when there are none."""
    pairs = list(pairs)
    if not pairs:
        return {"mean_iou": None, "mean_dice": None}
    arr = np.asarray(pairs, dtype=np.float64)
    return {"mean_iou": float(arr[:, 0].mean()), "mean_dice": float(arr[:, 1].mean())}


def mean_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Official Dice of one image averaged over its classes (C x H x W boolean arrays, or
    anything `iou_dice` takes per class): mask agreement between two outputs, or against masks."""
    return float(np.mean([iou_dice(p, t)[1] for p, t in zip(pred, target)]))


def class_scores(pred: np.ndarray, target: np.ndarray) -> dict:
    """Scores of one image with C classes (C x H x W boolean prediction and target): the official
    IoU/Dice over all of the image's class channels together (for one class, the official metric
    itself) and the official IoU/Dice of each class on its own."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} must both be C x H x W")
    iou, dice = iou_dice(pred, target)
    per_class = [iou_dice(p, t) for p, t in zip(pred, target)]
    return {"iou": iou, "dice": dice, "class_iou": [c[0] for c in per_class],
            "class_dice": [c[1] for c in per_class]}


def class_scores_from_logits(logits: np.ndarray, target: np.ndarray) -> dict:
    """`class_scores` of C x H x W logits (thresholded at 0, i.e. sigmoid > 0.5)."""
    return class_scores(np.asarray(logits) > 0, np.asarray(target) > 0.5)


def summarize_scores(rows) -> dict:
    """Mean official IoU/Dice over images and the mean per-class IoU/Dice (lists in class order)
    of `class_scores` results; None values when there are none."""
    rows = list(rows)
    if not rows:
        return {"mean_iou": None, "mean_dice": None, "per_class_iou": None, "per_class_dice": None}
    out = mean_scores((r["iou"], r["dice"]) for r in rows)
    out["per_class_iou"] = [float(x) for x in np.mean([r["class_iou"] for r in rows], axis=0)]
    out["per_class_dice"] = [float(x) for x in np.mean([r["class_dice"] for r in rows], axis=0)]
    return out


def format_class_dice(per_class_dice) -> str:
    """' (per class 0.81 / 0.66 / 0.42)' for several classes, '' for one or none."""
    if not per_class_dice or len(per_class_dice) < 2:
        return ""
    return " (per class " + " / ".join(f"{d:.4f}" for d in per_class_dice) + ")"
