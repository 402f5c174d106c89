"""Verification: run the artifact through its runtime backend on real images and compare with
PyTorch FP32 (max |delta logit|, mean mask Dice agreement) and with ground truth where it exists.
"""
from __future__ import annotations

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.artifacts.meta import AGREEMENT_THRESHOLDS
from cmunext_edge.core.metrics import class_scores, format_class_dice, iou_dice, summarize_scores
from cmunext_edge.core.metrics import mean_dice as _mean_dice
from cmunext_edge.progress import track


class VerificationError(RuntimeError):
    """The artifact does not segment like the PyTorch model (exit code 2, no artifact kept)."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


def reference_logits(model, inputs: np.ndarray, batch_size: int = 8) -> np.ndarray:
    torch = require("torch")
    outs = []
    with torch.inference_mode():
        for i in range(0, len(inputs), batch_size):
            outs.append(model(torch.from_numpy(inputs[i:i + batch_size])).float().numpy())
    return np.concatenate(outs)


CLASS_AGREEMENT_MARGIN = 0.05
"""With several classes the gate also needs every single class's mean mask agreement to reach the
required agreement minus this margin: a mean over classes could otherwise hide one class (often a
small or thin one) that the artifact segments differently. The margin leaves room for a small
class, whose Dice moves more per pixel, without letting a class drift far; one class: no change."""


def _class_agreement(logits: np.ndarray, reference: np.ndarray) -> list[float]:
    """Mean over images of each class's official Dice between the two outputs' masks."""
    per_image = [[iou_dice(a > 0, r > 0)[1] for a, r in zip(lg, rf)] for lg, rf in zip(logits, reference)]
    return [float(x) for x in np.mean(per_image, axis=0)]


def _truth(mask) -> np.ndarray:
    """C x H x W ground truth (an H x W mask, as older callers give, is one class)."""
    return mask if mask.ndim == 3 else mask[None]


def _truth_figures(logits: np.ndarray, reference: np.ndarray, masks) -> dict:
    """Official Dice (all channels together) against ground truth, of the artifact and of PyTorch,
    and for several classes each class's Dice; None where no image has ground truth."""
    gt = [(i, _truth(m)) for i, m in enumerate(masks or []) if m is not None]
    out = {}
    for key, out_logits in (("dice_vs_ground_truth", logits), ("dice_vs_ground_truth_pytorch", reference)):
        scores = summarize_scores(class_scores(out_logits[i] > 0, m) for i, m in gt) if gt else None
        out[key] = scores["mean_dice"] if scores else None
        if logits.shape[1] > 1:
            out["per_class_" + key] = scores["per_class_dice"] if scores else None
    return out


def passes(figures: dict) -> bool:
    """The gate: mean mask agreement >= required and, for several classes, every class's agreement
    >= required - CLASS_AGREEMENT_MARGIN."""
    need = figures["required_agreement"]
    per_class = figures.get("per_class_agreement") or []
    return figures["mask_dice_agreement"] >= need and all(a >= need - CLASS_AGREEMENT_MARGIN for a in per_class)


def compare(logits: np.ndarray, reference: np.ndarray, masks, precision: str) -> dict:
    """The verification figures of artifact `logits` against PyTorch `reference` (both NCHW) and
    against ground truth `masks` (C x H x W, or None per image). Per-class figures
    (`per_class_agreement`, `per_class_dice_vs_ground_truth[_pytorch]`) only for C >= 2."""
    agree = [_mean_dice(a > 0, r > 0) for a, r in zip(logits, reference)]
    need = AGREEMENT_THRESHOLDS[precision]
    figures = {
        "n_images": int(len(logits)), "precision": precision,
        "max_abs_logit_delta": float(np.max(np.abs(logits - reference))),
        "mean_abs_logit_delta": float(np.mean(np.abs(logits - reference))),
        "mask_dice_agreement": float(np.mean(agree)), "min_mask_dice_agreement": float(np.min(agree)),
        "required_agreement": need,
    }
    if logits.shape[1] > 1:
        figures["per_class_agreement"] = _class_agreement(logits, reference)
        figures["class_agreement_margin"] = CLASS_AGREEMENT_MARGIN
    figures.update(_truth_figures(logits, reference, masks))
    figures["passed"] = passes(figures)
    return figures


def failure_reason(f: dict) -> str:
    """Why `passes(f)` is False, one phrase."""
    if f["mask_dice_agreement"] < f["required_agreement"]:
        return f"mask Dice agreement {f['mask_dice_agreement']:.4f} < {f['required_agreement']}"
    low = [(k, a) for k, a in enumerate(f.get("per_class_agreement") or [])
           if a < f["required_agreement"] - CLASS_AGREEMENT_MARGIN]
    return "; ".join(f"class {k} mask Dice agreement {a:.4f} < {f['required_agreement']} - "
                     f"{CLASS_AGREEMENT_MARGIN} (per-class margin)" for k, a in low)


def verify_backend(backend, inputs: np.ndarray, reference: np.ndarray, masks, precision: str,
                   batch_size: int = 8) -> dict:
    starts = range(0, len(inputs), batch_size)
    logits = np.concatenate([backend.infer(inputs[i:i + batch_size])
                             for i in track(starts, desc="verify", enabled=len(starts) > 1)])
    figures = compare(logits, reference, masks, precision)
    figures["runtime"] = backend.describe()
    return figures


def format_figures(f: dict) -> str:
    """One line that says what was measured against: PyTorch FP32 on N images of which data."""
    gt = "" if f.get("dice_vs_ground_truth") is None else \
        (f"; Dice vs ground truth {f['dice_vs_ground_truth']:.4f}"
         f"{format_class_dice(f.get('per_class_dice_vs_ground_truth'))} "
         f"(PyTorch {f['dice_vs_ground_truth_pytorch']:.4f}"
         f"{format_class_dice(f.get('per_class_dice_vs_ground_truth_pytorch'))})")
    data = (f.get("data") or {}).get("label")
    of = f" of {data}" if data else ""
    ran = (f.get("runtime") or {}).get("precision") or f.get("precision")
    return (f"{f.get('precision', '')} artifact (ran {ran}) vs PyTorch FP32 on {f['n_images']} images{of}: "
            f"mask Dice agreement {f['mask_dice_agreement']:.4f}"
            f"{format_class_dice(f.get('per_class_agreement'))} "
            f"(min {f['min_mask_dice_agreement']:.4f}, required {f['required_agreement']}), "
            f"max |delta logit| {f['max_abs_logit_delta']:.4g}{gt}"
            + ("" if gt or not data else "; no ground-truth Dice on these images"))
