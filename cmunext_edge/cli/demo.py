"""The main job: segment the bundled samples, export for this CPU, print a benchmark table.

    cmunext-demo [--out out/demo] [--skip-export]      (or: python -m cmunext_edge.cli.demo)

1. Segments the 16 bundled held-out BUSI images with the shipped model (PyTorch), writes
   masks and overlays to <out>/predict and prints per-image and mean Dice (official metric).
2. Exports the shipped model for this machine (ONNX FP32 for ONNX Runtime, OpenVINO INT8
   calibrated on 64 of the model's training images, samples/busi-calib, with this CPU's recipe),
   each verified against PyTorch on the 64 held-out images, into <out>/exports. An INT8
   artifact that misses its agreement gate on this CPU is reported as rejected, with the
   reason, and left out; the demo goes on.
3. Benchmarks PyTorch eager FP32 and the exported artifacts in one `cmunext-bench` run (short
   timing; Dice on the samples) and prints the table (also <out>/bench.md, .json, .png), then
   which artifacts were exported and which rejected.

Exit status 0 when everything that verifies was exported and benchmarked; non-zero only for a
real failure (an FP32 artifact that disagrees with PyTorch, an export error, a failed bench row).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cmunext_edge.data.discovery import discover
from cmunext_edge.fileio import writable_folder_problem
from cmunext_edge.progress import Progress
from cmunext_edge.resources import SAMPLES_DIR, resolve_weights
from cmunext_edge.cli.common import Parser, EXIT_PARTIAL, add_debug, cli_main, fail, output_path

PROG = "cmunext-demo"


def segment_samples(out: Path, weights=None) -> dict:
    from cmunext_edge.predict.job import run_job, write_reports
    from cmunext_edge.runtime.segmenter import EdgeSegmenter

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
# A lossy artifact may miss its agreement gate on some CPUs (INT8 without VNNI): the demo reports
# it and goes on. An FP32 artifact must match PyTorch everywhere: its rejection is a real failure.
LOSSY = ("int8", "fp16", "bf16")


def run_exports(out: Path, weights, exports=DEMO_EXPORTS, export_fn=None) -> list[dict]:
    """Export each (name, target, precision) into out/exports, verified against PyTorch; a
    verification failure is recorded as a rejection with its reason, anything else raises."""
    from cmunext_edge.export.verify import VerificationError
    if export_fn is None:
        from cmunext_edge.export.pipeline import export as export_fn
    results = []
    for name, target, precision in exports:
        print(f"\n== cmunext-export --target {target} --{precision} --name {name}")
        row = {"name": name, "target": target, "precision": precision, "artifact": None, "rejected": None}
        try:
            res = export_fn(weights, target=target, precision=precision, name=name, out=out / "exports")
        except VerificationError as exc:
            row["rejected"] = str(exc)
            print(f"rejected {name}: {exc}")
        else:
            row["artifact"] = str(res.artifact)
            print(f"exported {res.target} {res.precision}: {res.artifact}")
        results.append(row)
    return results


def report_exports(results: list[dict]) -> int:
    """Print which artifacts were exported and which rejected (and why); the exit status they
    imply: 0, or 2 when an FP32 artifact (which must match on every CPU) was rejected."""
    print("\n== artifacts")
    for r in results:
        print(f"  {r['name']:<16} " + (f"exported: {r['artifact']}" if r["artifact"] else
                                      f"REJECTED on this CPU: {r['rejected']}"))
    real = [r for r in results if r["rejected"] and r["precision"] not in LOSSY]
    return 2 if real else 0


def export_and_bench(out: Path, weights=None) -> int:
    from cmunext_edge.capabilities import detect
    from cmunext_edge.cli import bench

    weights = str(resolve_weights(weights))
    print(f"\n== this CPU: {detect().summary()}")
    results = run_exports(out, weights)
    artifacts = [r["artifact"] for r in results if r["artifact"]]
    print("\n== cmunext-bench (short timing run; the recorded tables are in benchmarks/results/)")
    rc = bench.main([weights, *artifacts, "--data", str(SAMPLES_DIR), "--warmup", "5", "--iters", "50",
                     "--throughput-time", "0.5", "--batch-sizes", "1,4,8", "--streams", "1,2",
                     "--matmul-time", "0.5", "--json", str(out / "bench.json"),
                     "--markdown", str(out / "bench.md"), "--plot", str(out / "bench.png")])
    return report_exports(results) or rc


@cli_main(PROG)
def main(argv=None) -> int:
    parser = Parser(prog="cmunext-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=output_path, default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--skip-export", action="store_true", help="only segment the samples")
    add_debug(parser)
    args = parser.parse_args(argv)
    problem = writable_folder_problem(args.out, "--out")
    if problem:                       # before the first sample: a long run never ends in a refused write
        return fail(PROG, problem)
    args.out = Path(args.out)
    summary = segment_samples(args.out)
    if summary["skipped"]:
        return 1
    if args.skip_export:
        return 0
    try:
        return export_and_bench(args.out)
    except Exception as exc:          # a real failure: say what, exit 1
        return fail(PROG, f"{type(exc).__name__}: {exc}", EXIT_PARTIAL)


if __name__ == "__main__":
    sys.exit(main())
