"""Paired validation comparison of shipped/trained checkpoints on the same held-out images.

Per image, the official Dice of each checkpoint's mask (PyTorch FP32 on this CPU, the product's
preprocessing at 256x256) against ground truth; then each model's mean, p5 and worst, and for
every model after the first the paired difference to the first with a seeded bootstrap 95%
interval (the images are the same, so the pairing removes the between-image spread).

    .venv/bin/python benchmarks/gpu/compare_val.py models/cmunext-s-busi.safetensors \\
        models/cmunext-base-busi.safetensors --data ../shared/data/busi-train \\
        --split models/cmunext-s-busi.val.txt --json benchmarks/results/gpu_2026-12-04/val_compare.json
    .venv/bin/python benchmarks/gpu/compare_val.py models/cmunext-s-busi.safetensors \\
        models/cmunext-base-busi.safetensors --data cmunext_edge/samples/busi-heldout   # the 64, no --split
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cmunext_edge.core.metrics import iou_dice_from_logits
from cmunext_edge.data.discovery import discover, read_name_list
from cmunext_edge.data.groundtruth import load_truth
from cmunext_edge.core.preprocess import load_image
from cmunext_edge.runtime.registry import open_backend


def per_image_dice(weights: Path, samples) -> np.ndarray:
    be = open_backend(weights, backend="pytorch").load()
    out = []
    for s in samples:
        logits = be.infer(be.spec(load_image(s.image))[None])[0]
        out.append(iou_dice_from_logits(logits[0], load_truth(s, 1, be.spec.size)[0])[1])
    return np.array(out)


def paired_interval(diff: np.ndarray, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="+", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, help="name list of the images to score (default: every image of --data with a mask)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    names = set(read_name_list(args.split)) if args.split else None
    samples = [s for s in discover(args.data) if (names is None or s.name in names) and s.mask is not None]
    scores = {w.name: per_image_dice(w, samples) for w in args.weights}
    first = args.weights[0].name
    report = {"n_images": len(samples), "data": str(args.data), "split": args.split and str(args.split), "models": {}}
    for name, d in scores.items():
        row = {"mean_dice": float(d.mean()), "p5": float(np.percentile(d, 5)), "worst": float(d.min()),
               "per_image": [round(float(v), 5) for v in d]}
        if name != first:
            diff = d - scores[first]
            lo, hi = paired_interval(diff)
            row.update({"paired_diff_vs_" + first: float(diff.mean()), "paired_diff_95ci": [lo, hi],
                        "images_better": int((diff > 0.01).sum()), "images_worse": int((diff < -0.01).sum())})
        report["models"][name] = row
        extra = (f"; vs {first}: {row['paired_diff_vs_' + first]:+.4f} (95% CI {row['paired_diff_95ci'][0]:+.4f} "
                 f"to {row['paired_diff_95ci'][1]:+.4f}; better/worse by >0.01 on {row['images_better']}/"
                 f"{row['images_worse']} images)" if name != first else "")
        print(f"{name}: n {len(d)} mean Dice {d.mean():.4f} p5 {row['p5']:.4f} worst {d.min():.4f}{extra}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
