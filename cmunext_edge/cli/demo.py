"""The main job: segment the bundled samples, export for this CPU, print a benchmark table.

    cmunext-demo [--out out/demo] [--skip-export]      (or: python -m cmunext_edge.cli.demo)

1. Segments the 16 bundled held-out BUSI images with the shipped model (PyTorch), writes
   masks and overlays to <out>/predict and prints per-image and mean Dice (official metric).
2. Exports the shipped model for this machine (ONNX FP32 for ONNX Runtime, OpenVINO INT8
   calibrated on the samples), each verified against PyTorch, into <out>/exports.
3. Benchmarks PyTorch eager FP32 and both artifacts in one `cmunext-bench` run (short
   timing; Dice on the samples) and prints the table (also <out>/bench.md, .json, .png).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data import discover
from ..export.targets import get_target
from ..progress import Progress
from ..resources import SAMPLES_DIR, resolve_weights
from .common import add_debug, cli_main


def segment_samples(out: Path, weights=None) -> dict:
    from ..predict_job import run_job, write_reports
    from ..segmenter import EdgeSegmenter

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


# (name, target, precision) of the artifacts the demo builds for this CPU
DEMO_EXPORTS = (
    ("onnx_fp32", "onnx", "fp32"),
    ("openvino_int8", "openvino", "int8"),
)


def export_and_bench(out: Path, weights=None) -> int:
    from . import bench, export

    weights = str(resolve_weights(weights))
    artifacts = []
    for name, target, precision in DEMO_EXPORTS:
        extra = ["--target", target, f"--{precision}"]
        print(f"\n== cmunext-export {' '.join(extra)}")
        rc = export.main(["--weights", weights, *extra, "--name", name, "--out", str(out / "exports")])
        if rc != 0:
            print(f"export {name} failed (exit {rc})")
            return rc
        artifacts.append(str(out / "exports" / f"{name}{get_target(target).suffix}"))
    print("\n== cmunext-bench (short timing run; the recorded tables are in benchmarks/results/)")
    return bench.main([weights, *artifacts, "--data", str(SAMPLES_DIR), "--warmup", "5", "--iters", "50",
                       "--throughput-time", "0.5", "--batch-sizes", "1,4,8", "--streams", "1,2",
                       "--matmul-time", "0.5", "--json", str(out / "bench.json"),
                       "--markdown", str(out / "bench.md"), "--plot", str(out / "bench.png")])


@cli_main("cmunext-demo")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cmunext-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--skip-export", action="store_true", help="only segment the samples")
    add_debug(parser)
    args = parser.parse_args(argv)
    summary = segment_samples(args.out)
    if summary["skipped"]:
        return 1
    return 0 if args.skip_export else export_and_bench(args.out)


if __name__ == "__main__":
    sys.exit(main())
