#!/usr/bin/env python
"""The recorded CPU benchmark: export the shipped model to every CPU target, then benchmark
all artifacts plus PyTorch eager FP32 (and BF16) in ONE `cmunext-bench` run; two extra rows
show thread/hint settings (EXTRA_ROWS).

Writes benchmarks/results/cpu_<date>.{json,md,png}, cpu_<date>_machine.txt (lscpu, cores,
versions, load before/after, the exact commands) and cpu_<date>_ort_overhead.json (the
acceptance check: the bench's batch-1 p50 for the ONNX Runtime FP32 artifact against a bare
`InferenceSession.run` loop in the same process; its result is merged into the JSON and
Markdown too).

Run it on a quiet machine (nothing else busy: no training, no other benchmarks):

    .venv/bin/python benchmarks/run_cpu_suite.py \\
        --weights models/cmunext-s-busi.safetensors \\
        --data ../shared/data/busi-train --split runs/cmunext-s-busi/split.json

--split takes a names file (one per line) or the training run's split.json (its "val" list),
so that Dice is measured on images the model did not train on. `--quick` is a smoke run
(few iterations; numbers not for the record). Arguments after `--` go to cmunext-bench.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def tool(name: str) -> list[str]:
    """The console script beside this Python (the venv's), else `python -m` its module."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", f"cmunext_edge.cli.{name.split('-')[1]}"]


def run(cmd: list[str], log: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    log.append(shlex.join(cmd))
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, text=True, stdout=subprocess.PIPE if capture else None)


def artifact_from(stdout: str) -> str:
    """The artifact path from `cmunext-export --json` output (libraries may print before it)."""
    start = stdout.rfind('{\n  "artifact"')
    return json.loads(stdout[start if start >= 0 else 0:])["artifact"]


def split_file(split: Path | None, out_dir: Path, stamp: str) -> Path | None:
    """A names file for cmunext-bench --split; a training split.json gives its 'val' list."""
    if split is None or split.suffix != ".json":
        return split
    names = json.loads(split.read_text())["val"]
    path = out_dir / f"cpu_{stamp}_split.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def machine_text(log: list[str], load_before, failures: list[str]) -> str:
    from cmunext_edge.bench_system import cpu_model, versions
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    lines = [f"date (UTC): {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
             f"cpu: {cpu_model()}", f"logical cores: {os.cpu_count()}",
             f"usable cores: {len(os.sched_getaffinity(0))}",
             f"load average before: {load_before}", f"load average after: {os.getloadavg()}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
             "commands:"] + [f"  {c}" for c in log]
    if failures:
        lines += ["", "export problems:"] + [f"  {f}" for f in failures]
    return "\n".join(lines + ["", "lscpu:", lscpu])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint to export (default: the shipped model)")
    p.add_argument("--data", type=Path, help="official-layout dataset for Dice")
    p.add_argument("--split", type=Path, help="names file or training split.json (its 'val' list)")
    p.add_argument("--calib", help="INT8 calibration images (default: the training images of a --split "
                   "split.json, else the exporter's default, the bundled samples)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--exports", type=Path, help="keep the artifacts here (default: a temporary folder)")
    p.add_argument("--no-keep-unverified", dest="keep_unverified", action="store_false",
                   help="drop artifacts that fail export verification (default: re-export them with "
                        "--no-verify as *_unverified and benchmark them, to show the disagreement)")
    p.add_argument("--reuse", action="store_true",
                   help="with --exports: benchmark artifacts already there instead of exporting again")
    p.add_argument("--quick", action="store_true", help="smoke run with few iterations (not for the record)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: extra cmunext-bench arguments")
    args = p.parse_args(argv)

    from cmunext_edge.bench_report import write_json, write_markdown
    from cmunext_edge.resources import resolve_weights
    weights = resolve_weights(args.weights).resolve()
    stamp = dt.date.today().isoformat() + ("_quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    exports = args.exports or Path(tempfile.mkdtemp(prefix="cmunext-suite-"))
    if not args.calib and args.data and args.split and args.split.suffix == ".json":
        # calibrate INT8 on the split's training images, never on the images Dice is measured on
        from run_auto import train_calibration_folder
        args.calib = str(train_calibration_folder(args.data, args.split, exports / "calib-train"))
    log, failures, artifacts = [], [], []
    load_before = os.getloadavg()

    for name, target, flag in EXPORTS:
        existing = sorted(exports.glob(f"{weights.stem}_{name}*.onnx")) + sorted(exports.glob(f"{weights.stem}_{name}*.xml"))
        if args.reuse and existing:
            artifacts.append(str(existing[0]))
            log.append(f"(reused {existing[0]})")
            continue
        cmd = tool("cmunext-export") + ["--weights", str(weights), "--target", target, flag, "--dynamic",
                                        "--out", str(exports), "--name", f"{weights.stem}_{name}", "--json"]
        if flag == "--int8" and args.calib:
            cmd += ["--calib", args.calib]
        res = run(cmd, log, capture=True)
        if res.returncode == 2 and args.keep_unverified:
            # failed verification: benchmark it anyway, visibly named, so the table shows how far off it is
            cmd[cmd.index("--name") + 1] += "_unverified"
            failures.append(f"{name}: failed export verification; benchmarked as *_unverified (--no-verify)")
            res = run(cmd + ["--no-verify"], log, capture=True)
        if res.returncode != 0:
            failures.append(f"{name}: exit {res.returncode}")
            continue
        artifacts.append(artifact_from(res.stdout))

    base = args.out / f"cpu_{stamp}"
    extra = [f"{a}@{opts}" for name, opts in EXTRA_ROWS for a in artifacts
             if Path(a).stem == f"{weights.stem}_{name}"]
    bench = tool("cmunext-bench") + [f"{weights}@precision=fp32", f"{weights}@precision=bf16", *artifacts, *extra,
                                     *(QUICK if args.quick else FULL),
                                     "--json", f"{base}.json", "--markdown", f"{base}.md", "--plot", f"{base}.png"]
    if args.data:
        bench += ["--data", str(args.data)]
    split = split_file(args.split, args.out, stamp)
    if split:
        bench += ["--split", str(split)]
    bench += [a for a in args.bench_args if a != "--"]
    rc = run(bench, log).returncode

    onnx_fp32 = next((a for a in artifacts if a.endswith("_onnx_fp32.onnx")), None)
    if onnx_fp32 and Path(f"{base}.json").is_file():
        ort_json = Path(f"{base}_ort_overhead.json")
        iters = ["--warmup", "5", "--iters", "40"] if args.quick else ["--warmup", "50", "--iters", "500"]
        if run(tool("cmunext-bench") + [onnx_fp32, "--check-ort-overhead", *iters, "--json", str(ort_json)],
               log).returncode == 0:
            report = json.loads(Path(f"{base}.json").read_text())
            report["ort_overhead"] = json.loads(ort_json.read_text())["checks"][0]
            write_json(report, f"{base}.json")
            write_markdown(report, f"{base}.md")
    Path(f"{base}_machine.txt").write_text(machine_text(log, load_before, failures))
    print(f"results: {base}.json .md .png, {base}_machine.txt; artifacts in {exports}")
    return rc or (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
