"""The main job: segment the bundled BUSI samples with the shipped model and report Dice.

    python -m cmunext_edge.demo [--out out/demo]

Writes masks and overlays to <out>/predict and prints per-image and mean Dice
(official metric) of the shipped model on the 16 bundled held-out images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import discover
from .progress import Progress
from .resources import SAMPLES_DIR, resolve_weights


def segment_samples(out: Path, weights=None) -> dict:
    from .predict_job import run_job, write_reports
    from .segmenter import EdgeSegmenter

    segmenter = EdgeSegmenter(weights)
    samples = discover(SAMPLES_DIR)
    print(f"== segmenting {len(samples)} bundled samples with {resolve_weights(weights).name} "
          f"({segmenter.describe()['backend']}, {segmenter.describe()['device']})")
    with Progress(len(samples), "segmenting") as bar:
        result = run_job(segmenter, samples, out / "predict", progress=bar)
    summary = write_reports(result, out / "predict", out / "predict" / "summary.json")
    for row in result.rows:
        print(f"  {row['name']:<20} Dice {row['dice']:.4f}  IoU {row['iou']:.4f}")
    print(f"mean Dice {summary['mean_dice']:.4f}  mean IoU {summary['mean_iou']:.4f} "
          f"over {summary['n_images']} images (official metric); masks and overlays in {out / 'predict'}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmunext_edge.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args(argv)
    summary = segment_samples(args.out)
    return 0 if not summary["skipped"] else 1


if __name__ == "__main__":
    sys.exit(main())
