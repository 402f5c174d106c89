"""Scores of cmunext-predict against ground truth, for one class or several.

Per image, the official IoU/Dice (over all of the model's class channels together; for one class the
official metric itself) at network size (from the logits, truth resized nearest, as the CMUNeXt code
computes it) and at the image's original resolution. A model with C >= 2 classes adds, per class k,
the columns `dice_class<k>`, `iou_class<k>`, `dice_original_class<k>`, `iou_original_class<k>` (empty
for an image without ground truth) and the summary adds the per-class means `per_class_dice`,
`per_class_iou`, `per_class_dice_original`, `per_class_iou_original` (None without ground truth)
and `num_classes`. A one-class model's rows and summary are exactly those of before (no per-class
columns or keys).
"""
from __future__ import annotations

import numpy as np

from cmunext_edge.data.discovery import Sample
from cmunext_edge.data.groundtruth import load_truth, resize_truth
from cmunext_edge.core.metrics import class_scores, class_scores_from_logits, summarize_scores
from cmunext_edge.core.preprocess import ImageReadError, naming

SCORES = ("dice", "iou", "dice_original", "iou_original")
CLASS_SUMMARY_KEYS = ("num_classes", "per_class_dice", "per_class_iou", "per_class_dice_original",
                      "per_class_iou_original")        # what class_summary adds (C >= 2 only)


def class_columns(num_classes: int) -> list[str]:
    """The per-class columns of a scores row (none for one class)."""
    if num_classes < 2:
        return []
    return [f"{key}_class{k}" for key in SCORES for k in range(num_classes)]


def row_classes(row: dict) -> int:
    """Classes of the model that made `row`, as its columns tell (1 without per-class columns)."""
    return max(1, sum(1 for key in row if key.startswith("dice_class")))


def mask_channels(mask: np.ndarray) -> np.ndarray:
    """A Segmentation mask (HxW, or HxWxC for several classes) as C x H x W."""
    return mask[None] if mask.ndim == 2 else np.moveaxis(mask, 2, 0)


def mask_union(mask: np.ndarray) -> np.ndarray:
    """A Segmentation mask as one HxW mask: itself for one class, the union of several classes."""
    return mask if mask.ndim == 2 else mask.any(axis=2)


def score_fields(sample: Sample, seg, size: tuple[int, int]) -> dict:
    """The score fields of one image's row: None without ground truth. Ground truth that cannot be
    used (unreadable, misencoded, or of another size than the image) leaves the scores None and
    says why in `truth_problem`: the image itself is segmented all the same."""
    num_classes = seg.logits.shape[0]
    fields = dict.fromkeys(SCORES + tuple(class_columns(num_classes)) + ("truth_problem",))
    if sample.mask is None:
        return fields
    pred = mask_channels(seg.mask)
    try:
        truth = load_truth(sample, num_classes, image_hw=pred.shape[1:])
    except (ImageReadError, ValueError, OSError) as exc:
        fields["truth_problem"] = naming(sample.mask, exc)
        return fields
    net = class_scores_from_logits(seg.logits, resize_truth(truth, size))    # decoded once, both sizes
    orig = class_scores(pred, truth)
    fields.update(dice=net["dice"], iou=net["iou"], dice_original=orig["dice"], iou_original=orig["iou"])
    if num_classes >= 2:
        for k in range(num_classes):
            fields.update({f"dice_class{k}": net["class_dice"][k], f"iou_class{k}": net["class_iou"][k],
                           f"dice_original_class{k}": orig["class_dice"][k],
                           f"iou_original_class{k}": orig["class_iou"][k]})
    return fields


def _class_rows(rows: list[dict], suffix: str, num_classes: int) -> list[dict]:
    """Rows in the form `summarize_scores` takes (suffix '' network size, '_original')."""
    return [{"iou": r[f"iou{suffix}"], "dice": r[f"dice{suffix}"],
             "class_iou": [r[f"iou{suffix}_class{k}"] for k in range(num_classes)],
             "class_dice": [r[f"dice{suffix}_class{k}"] for k in range(num_classes)]} for r in rows]


def class_summary(rows: list[dict]) -> dict:
    """Per-class means of scored rows made by a C >= 2 model ({} for one class or no rows)."""
    num_classes = row_classes(rows[0]) if rows else 1
    if num_classes < 2:
        return {}
    scored = [r for r in rows if r["dice"] is not None]
    net = summarize_scores(_class_rows(scored, "", num_classes))
    orig = summarize_scores(_class_rows(scored, "_original", num_classes))
    return dict(zip(CLASS_SUMMARY_KEYS, (num_classes, net["per_class_dice"], net["per_class_iou"],
                                         orig["per_class_dice"], orig["per_class_iou"])))
