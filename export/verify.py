"""Verification: run the artifact through its runtime backend on real images and compare with
PyTorch FP32 (max |delta logit|, mean mask Dice agreement) and with ground truth where it exists.
"""
from __future__ import annotations

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.core.agreement import CLASS_MARGIN, NEAR_MISS_LOGIT, Comparator, gate
from cmunext_edge.core.metrics import class_scores, format_class_dice, summarize_scores
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


CLASS_AGREEMENT_MARGIN = CLASS_MARGIN     # kept under its former name


def _truth(mask) -> np.ndarray:
    """C x H x W ground truth (an H x W mask, as older callers give, is one class)."""
    return mask if mask.ndim == 3 else mask[None]


def _truth_figures(logits: np.ndarray, reference: np.ndarray, masks) -> dict:
    """Official Dice (all channels together) against ground truth, of the artifact and of PyTorch,
    and for several classes each class's Dice; None where no image has ground truth."""
    gt = [(i, _truth(m)) for i, m in enumerate(masks or []) if m is not None]
    out = {"n_ground_truth": len(gt)}
    for key, out_logits in (("dice_vs_ground_truth", logits), ("dice_vs_ground_truth_pytorch", reference)):
        scores = summarize_scores(class_scores(out_logits[i] > 0, m) for i, m in gt) if gt else None
        out[key] = scores["mean_dice"] if scores else None
        if logits.shape[1] > 1:
            out["per_class_" + key] = scores["per_class_dice"] if scores else None
    return out


def passes(figures: dict) -> bool:
    """The gate (core.agreement.gate): mean floor, tail floor and, for several classes, every
    class's agreement >= the floor - CLASS_MARGIN. Passing on too few images for the tail claim
    still passes; `figures["verified"]` says whether it was verified."""
    return bool(figures["passed"])


def compare(logits: np.ndarray, reference: np.ndarray, masks, precision: str, names=None) -> dict:
    """The verification figures of artifact `logits` against PyTorch `reference` (both NCHW) and
    against ground truth `masks` (C x H x W, or None per image): the comparator's summary (n,
    mean, per-image distribution, 95% bounds; per class for C >= 2), the gate's decision
    (`passed`, `verified`, `failure`, `claim`) and the ground-truth figures."""
    comp = Comparator()
    comp.add(logits, reference, names)
    figures = {"precision": str(precision), **comp.summary()}
    if logits.shape[1] > 1:
        figures["class_agreement_margin"] = CLASS_MARGIN
    figures.update(gate(figures, precision))
    figures.update(_truth_figures(logits, reference, masks))
    return figures


def failure_reason(f: dict) -> str:
    """Why `passes(f)` is False, one phrase."""
    return f.get("failure") or ""


def verify_backend(backend, inputs: np.ndarray, reference: np.ndarray, masks, precision: str,
                   batch_size: int = 8, names=None) -> dict:
    starts = range(0, len(inputs), batch_size)
    logits = np.concatenate([backend.infer(inputs[i:i + batch_size])
                             for i in track(starts, desc="verify", enabled=len(starts) > 1)])
    figures = compare(logits, reference, masks, precision, names)
    figures["runtime"] = backend.describe()
    return figures


def format_figures(f: dict) -> str:
    """One line that says what was measured against: PyTorch FP32 on N images of which data."""
    gt = "" if f.get("dice_vs_ground_truth") is None else \
        ("; Dice vs ground truth"
         + (f" ({f['n_ground_truth']} images with masks)" if f.get("n_ground_truth", f["n_images"]) != f["n_images"] else "")
         + f" {f['dice_vs_ground_truth']:.4f}"
         f"{format_class_dice(f.get('per_class_dice_vs_ground_truth'))} "
         f"(PyTorch {f['dice_vs_ground_truth_pytorch']:.4f}"
         f"{format_class_dice(f.get('per_class_dice_vs_ground_truth_pytorch'))})")
    data = (f.get("data") or {}).get("label")
    of = f" of {data}" if data else ""
    ran = (f.get("runtime") or {}).get("precision") or f.get("precision")
    return (f"{f.get('precision', '')} artifact (ran {ran}) vs PyTorch FP32 on {f['n_images']} images{of}: "
            f"mask Dice agreement {f['mask_dice_agreement']:.4f}"
            f"{format_class_dice(f.get('per_class_agreement'))} "
            f"(required {f['required_agreement']}; {_tail(f)}), "
            f"max |delta logit| {f['max_abs_logit_delta']:.4g}{gt}"
            + ("" if gt or not data else "; no ground-truth Dice on these images") + _near_misses(f))


def _near_misses(f: dict) -> str:
    """Empty masks that the artifact nearly filled (core/agreement.py: informational, not gated)."""
    misses = f.get("near_misses") or []
    if not misses:
        return ""
    shown = ", ".join(f"{m['image']}" + (f" class {m['class']}" if f.get("per_class_agreement") else "")
                      + f" {m['max_logit']:+.3f} (PyTorch {m['reference_max_logit']:+.2f})" for m in misses[:3])
    return (f"; {f['n_near_misses']} near miss(es): both masks empty but the artifact's largest logit within "
            f"{NEAR_MISS_LOGIT} of the threshold ({shown}); another CPU's arithmetic may draw a region there")


def _tail(f: dict) -> str:
    """p5, worst and bad images of the per-image distribution, and the 95% bound."""
    d = f.get("distribution") or {}
    if not d.get("n"):
        return "no images"
    return (f"p5 {d['p5']:.4f}, worst {d['worst']:.4f} ({d['worst_image']}), {d['n_bad']} below "
            f"{d['bad_below']} (tail floor {100 * f.get('tail_floor', 0):g}%), 95% bound on that share "
            f"{100 * d['bad_share_upper95']:.1f}%, mean >= {d['mean_lower95']:.4f} (95% bootstrap)")
