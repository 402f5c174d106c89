#!/usr/bin/env python
"""The recorded CPU benchmark: export the shipped model to every CPU target, then benchmark
all artifacts plus PyTorch eager FP32 (and BF16) in ONE `cmunext-bench` run; two extra rows
show thread/hint settings (EXTRA_ROWS).

Writes benchmarks/results/cpu_<date>[_<tag>].{json,md,png}, cpu_<date>_machine.txt (the
capability probe's summary, lscpu, cores, versions, load before/after, the exact commands),
cpu_<date>_capabilities.json (`capabilities.detect().as_dict()`: ISA, native INT8/BF16/FP16,
OpenVINO's and ONNX Runtime's view; the bench JSON's machine entry has it too) and
cpu_<date>_ort_overhead.json (the
acceptance check: the bench's batch-1 p50 for the ONNX Runtime FP32 artifact against a bare
`InferenceSession.run` loop in the same process; its result is merged into the JSON and
Markdown too).

Run it on a quiet machine (nothing else busy: no training, no other benchmarks):

    .venv/bin/python benchmarks/run_cpu_suite.py \\
        --weights models/cmunext-s-busi.safetensors \\
        --data ../shared/data/busi-train --split models/cmunext-s-busi.split.json

BF16 rows (OpenVINO BF16, PyTorch BF16) are left out where BF16 is not native (capabilities.py:
OpenVINO would run f32 under a BF16 label, PyTorch bf16 runs ~100x slower than fp32); the machine
file says so. On an AVX-512 host the AVX2 path is recorded with
`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 ... --tag avx2-lowered` (OpenVINO and PyTorch
honour the limit, ONNX Runtime does not).

Artifacts go to exports/cpu_suite (--exports). Every command runs from the repository root
with repo-relative paths, so the commands recorded in *_machine.txt rerun on any checkout.
--split takes a names file (one per line) or the training run's split.json (its "val" list),
so that Dice is measured on images the model did not train on. `--quick` is a smoke run
(few iterations; numbers not for the record). Arguments after `--` go to cmunext-bench.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import ROOT, rel, run, tool, train_calibration_folder, val_list_file

# (artifact name, cmunext-export target, precision flag); all exported with a dynamic batch
EXPORTS = (
    ("onnx_fp32", "onnx", "--fp32"),
    ("ort_int8", "onnxruntime", "--int8"),
    ("ov_fp32", "openvino", "--fp32"),
    ("ov_fp16", "openvino", "--fp16"),
    ("ov_bf16", "openvino", "--bf16"),
    ("ov_int8", "openvino", "--int8"),
)
# extra rows on top of one row per artifact: (artifact name, backend options)
EXTRA_ROWS = (
    ("onnx_fp32", "threads=1"),        # one intra-op thread: the usual best setting for 2 streams
    ("ov_fp32", "hint=throughput"),    # OpenVINO's throughput streams instead of the latency hint
)
FULL = ["--warmup", "20", "--iters", "300", "--min-time", "3", "--throughput-time", "2",
        "--batch-sizes", "1,2,4,8,16", "--streams", "1,2", "--matmul-time", "1"]
QUICK = ["--warmup", "2", "--iters", "10", "--throughput-time", "0.2", "--batch-sizes", "1,4",
         "--streams", "1,2", "--matmul-time", "0.3", "--max-images", "8"]


def artifact_from(stdout: str) -> str:
    """The artifact path from `cmunext-export --json` output (libraries may print before it)."""
    start = stdout.rfind('{\n  "artifact"')
    return json.loads(stdout[start if start >= 0 else 0:])["artifact"]


def bf16_rows_fit() -> tuple[bool, bool]:
    """(OpenVINO BF16 native, PyTorch BF16 native) in the effective ISA."""
    from cmunext_edge.capabilities import detect
    caps = detect()
    return caps.bf16_native, caps.torch_bf16_native


def machine_text(log: list[str], load_before, failures: list[str]) -> str:
    from cmunext_edge.bench.system import cpu_model
    from cmunext_edge.capabilities import detect
    from cmunext_edge.toolchain import toolchain_versions
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    lines = [f"date (UTC): {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
             f"cpu: {cpu_model()}", f"capabilities: {detect().summary()}",
             f"logical cores: {os.cpu_count()}",
             f"usable cores: {len(os.sched_getaffinity(0))}",
             f"load average before: {load_before}", f"load average after: {os.getloadavg()}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in toolchain_versions().items()), "",
             "commands:"] + [f"  {c}" for c in log]
    if failures:
        lines += ["", "export problems:"] + [f"  {f}" for f in failures]
    return "\n".join(lines + ["", "lscpu:", lscpu])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint to export (default: the shipped model)")
    p.add_argument("--data", type=Path, help="official-layout dataset for Dice")
    p.add_argument("--split", type=Path, help="names file or training split.json (its 'val' list)")
    p.add_argument("--calib", help="INT8 calibration images (default: the training images of a --split "
                   "split.json, else the exporter's default, the bundled samples)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--exports", type=Path, default=ROOT / "exports" / "cpu_suite",
                   help="where the artifacts are written (default: exports/cpu_suite)")
    p.add_argument("--no-keep-unverified", dest="keep_unverified", action="store_false",
                   help="drop artifacts that fail export verification (default: re-export them with "
                        "--no-verify as *_unverified and benchmark them, to show the disagreement)")
    p.add_argument("--reuse", action="store_true",
                   help="benchmark artifacts already in --exports instead of exporting again")
    p.add_argument("--quick", action="store_true", help="smoke run with few iterations (not for the record)")
    p.add_argument("--tag", help="suffix of the result files, e.g. avx2-lowered (default none)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: extra cmunext-bench arguments")
    return p.parse_args(argv)


def export_all(args, weights: Path, exports: Path, log: list, failures: list) -> list[str]:
    """Every EXPORTS row through cmunext-export (or reused); artifact paths, repo-relative."""
    artifacts = []
    ov_bf16, _ = bf16_rows_fit()
    for name, target, flag in EXPORTS:
        if flag == "--bf16" and not ov_bf16:
            failures.append(f"{name}: skipped, BF16 is not native on this CPU (capabilities.py)")
            continue
        existing = sorted(exports.glob(f"{weights.stem}_{name}*.onnx")) + sorted(exports.glob(f"{weights.stem}_{name}*.xml"))
        if args.reuse and existing:
            artifacts.append(rel(existing[0]))
            log.append(f"(reused {rel(existing[0])})")
            continue
        cmd = tool("cmunext-export") + ["--weights", rel(weights), "--target", target, flag, "--dynamic",
                                        "--out", rel(exports), "--name", f"{weights.stem}_{name}", "--json"]
        if flag == "--int8" and args.calib:
            cmd += ["--calib", rel(args.calib)]
        res = run(cmd, log, capture=True)
        if res.returncode == 2 and args.keep_unverified:
            # failed verification: benchmark it anyway, visibly named, so the table shows how far off it is
            cmd[cmd.index("--name") + 1] += "_unverified"
            failures.append(f"{name}: failed export verification; benchmarked as *_unverified (--no-verify)")
            res = run(cmd + ["--no-verify"], log, capture=True)
        if res.returncode != 0:
            failures.append(f"{name}: exit {res.returncode}")
            continue
        artifacts.append(rel(ROOT / artifact_from(res.stdout)))
    return artifacts


def bench_command(args, weights: Path, artifacts: list[str], base: Path, stamp: str) -> list[str]:
    """One cmunext-bench run: PyTorch FP32 and BF16, every artifact, the EXTRA_ROWS settings."""
    extra = [f"{a}@{opts}" for name, opts in EXTRA_ROWS for a in artifacts
             if Path(a).stem == f"{weights.stem}_{name}"]
    w = rel(weights)
    torch_rows = [f"{w}@precision=fp32"] + ([f"{w}@precision=bf16"] if bf16_rows_fit()[1] else [])
    cmd = tool("cmunext-bench") + [*torch_rows, *artifacts, *extra,
                                   *(QUICK if args.quick else FULL), "--json", rel(f"{base}.json"),
                                   "--markdown", rel(f"{base}.md"), "--plot", rel(f"{base}.png")]
    if args.data:
        cmd += ["--data", rel(args.data)]
    split = val_list_file(args.split, args.out / f"cpu_{stamp}_split.txt")
    if split:
        cmd += ["--split", rel(split)]
    return cmd + [a for a in args.bench_args if a != "--"]


def ort_overhead(args, artifacts: list[str], base: Path, log: list) -> None:
    """The acceptance check on the ONNX Runtime FP32 artifact, merged into the JSON and Markdown."""
    from cmunext_edge.bench.report import write_json, write_markdown
    onnx_fp32 = next((a for a in artifacts if a.endswith("_onnx_fp32.onnx")), None)
    if not (onnx_fp32 and Path(f"{base}.json").is_file()):
        return
    ort_json = Path(f"{base}_ort_overhead.json")
    iters = ["--warmup", "5", "--iters", "40"] if args.quick else ["--warmup", "50", "--iters", "500"]
    if run(tool("cmunext-bench") + [onnx_fp32, "--check-ort-overhead", *iters, "--json", rel(ort_json)],
           log).returncode == 0:
        report = json.loads(Path(f"{base}.json").read_text())
        report["ort_overhead"] = json.loads(ort_json.read_text())["checks"][0]
        write_json(report, f"{base}.json")
        write_markdown(report, f"{base}.md")


def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("data", "split"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            print(f"run_cpu_suite.py: error: --{name} {path}: no such file or folder", file=sys.stderr)
            return 2
    from cmunext_edge.resources import resolve_weights
    weights = resolve_weights(args.weights).resolve()
    stamp = dt.date.today().isoformat() + (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    exports = args.exports.resolve()
    exports.mkdir(parents=True, exist_ok=True)
    if not args.calib and args.data and args.split and args.split.suffix == ".json":
        # calibrate INT8 on the split's training images, never on the images Dice is measured on
        shutil.rmtree(exports / "calib-train", ignore_errors=True)
        args.calib = str(train_calibration_folder(args.data, args.split, exports / "calib-train"))
    log, failures = [], []
    load_before = os.getloadavg()
    artifacts = export_all(args, weights, exports, log, failures)
    base = args.out / f"cpu_{stamp}"
    rc = run(bench_command(args, weights, artifacts, base, stamp), log).returncode
    ort_overhead(args, artifacts, base, log)
    if not bf16_rows_fit()[1]:
        failures.append("PyTorch bf16 row: skipped, BF16 is not native for PyTorch on this CPU")
    Path(f"{base}_machine.txt").write_text(machine_text(log, load_before, failures))
    from cmunext_edge.capabilities import detect
    Path(f"{base}_capabilities.json").write_text(json.dumps(detect().as_dict(), indent=2) + "\n")
    print(f"results: {base}.json .md .png, {base}_machine.txt, {base}_capabilities.json; "
          f"artifacts in {rel(exports)}")
    return rc or (1 if [f for f in failures if "skipped" not in f] else 0)


if __name__ == "__main__":
    sys.exit(main())
