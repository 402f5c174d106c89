"""Verification: run the artifact through its runtime backend on real images and compare with
PyTorch FP32 (max |delta logit|, mean mask Dice agreement) and with ground truth where it exists.
"""
from __future__ import annotations

import numpy as np

from .._deps import require
from ..artifact_meta import AGREEMENT_THRESHOLDS
from ..metrics import mean_dice as _mean_dice
from ..progress import track


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


def compare(logits: np.ndarray, reference: np.ndarray, masks, precision: str) -> dict:
    """The verification figures of artifact `logits` against PyTorch `reference` (both NCHW)."""
    agree = [_mean_dice(a > 0, r > 0) for a, r in zip(logits, reference)]
    gt = [(i, m) for i, m in enumerate(masks or []) if m is not None]
    need = AGREEMENT_THRESHOLDS[precision]
    figures = {
        "n_images": int(len(logits)), "precision": precision,
        "max_abs_logit_delta": float(np.max(np.abs(logits - reference))),
        "mean_abs_logit_delta": float(np.mean(np.abs(logits - reference))),
        "mask_dice_agreement": float(np.mean(agree)), "min_mask_dice_agreement": float(np.min(agree)),
        "required_agreement": need,
        "dice_vs_ground_truth": float(np.mean([_mean_dice(logits[i] > 0, m[None]) for i, m in gt])) if gt else None,
        "dice_vs_ground_truth_pytorch": float(np.mean([_mean_dice(reference[i] > 0, m[None]) for i, m in gt])) if gt else None,
    }
    figures["passed"] = figures["mask_dice_agreement"] >= need
    return figures


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
        f"; Dice vs ground truth {f['dice_vs_ground_truth']:.4f} (PyTorch {f['dice_vs_ground_truth_pytorch']:.4f})"
    data = (f.get("data") or {}).get("label")
    of = f" of {data}" if data else ""
    ran = (f.get("runtime") or {}).get("precision") or f.get("precision")
    return (f"{f.get('precision', '')} artifact (ran {ran}) vs PyTorch FP32 on {f['n_images']} images{of}: "
            f"mask Dice agreement {f['mask_dice_agreement']:.4f} "
            f"(min {f['min_mask_dice_agreement']:.4f}, required {f['required_agreement']}), "
            f"max |delta logit| {f['max_abs_logit_delta']:.4g}{gt}"
            + ("" if gt or not data else "; no ground-truth Dice on these images"))
