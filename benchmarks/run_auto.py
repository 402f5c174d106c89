"""Reproduce the recorded auto-selection reports: `cmunext-export --target auto` for one checkpoint,
then one `cmunext-bench` run of the chosen artifact beside PyTorch eager FP32 (and the OpenVINO
BF16 and ONNX Runtime FP32 candidates as references), on the validation split.

    .venv/bin/python benchmarks/run_auto.py --weights models/cmunext-s-busi.safetensors --tag s \\
        --data ../shared/data/busi-train --split models/cmunext-s-busi.split.json
    .venv/bin/python benchmarks/run_auto.py --weights benchmarks/checkpoints/cmunext-base-brief4.safetensors \\
        --tag base --data ../shared/data/busi-train --split benchmarks/checkpoints/cmunext-base-brief4.split.json

Calibration uses the *training* images of the split (never the validation images the Dice budget
is measured on): the script links them into an official-layout folder (exports/auto/<tag>/calib-train).
Results land in benchmarks/results/auto_<tag>_<date>.{md,json,png} (selection) and
auto_<tag>_<date>_bench.* (the cmunext-bench rows behind it), plus auto_<tag>_<date>_commands.txt.
Every command runs from the repository root with repo-relative paths (common.rel).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import ROOT, python, rel, run, train_calibration_folder, val_list_file


def auto_command(args, calib: Path, exports: Path) -> list[str]:
    cmd = [python(), "-m", "cmunext_edge.cli.export", "--weights", rel(args.weights), "--target", "auto",
           "--device", args.device, "--max-dice-drop", str(args.max_dice_drop), "--calib", rel(calib),
           "--calib-size", str(args.calib_size), "--verify-data", rel(args.data), "--split", rel(args.split),
           "--out", rel(exports)]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    return cmd + (["--candidates", args.candidates] if args.candidates else [])


def bench_command(args, rep: dict, stem: Path) -> list[str]:
    """The chosen artifact beside PyTorch FP32 and the ov-bf16 / ort-fp32 candidates."""
    rows = {r["name"]: r for r in rep["candidates"]}     # paths in the report: relative to ROOT
    bench = [str(rep["artifact"])] if rep["artifact"] else []
    bench += [r["artifact"] for n, r in rows.items() if n in ("ov-bf16", "ort-fp32") and r["artifact"]]
    opt = ["--option", f"threads={args.threads}"] if args.threads else []
    names = val_list_file(args.split, Path(f"{stem}_val.txt"))
    return [python(), "-m", "cmunext_edge.cli.bench", rel(args.weights), *(rel(ROOT / b) for b in bench),
            "--data", rel(args.data), "--split", rel(names), *opt, "--json", rel(f"{stem}_bench.json"),
            "--markdown", rel(f"{stem}_bench.md"), "--plot", rel(f"{stem}_bench.png"), "--quiet"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--tag", required=True, help="s or base: names the result files")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True, help="training split.json (val = evaluation)")
    p.add_argument("--device", default="CPU")
    p.add_argument("--max-dice-drop", type=float, default=0.5)
    p.add_argument("--calib-size", type=int, default=128)
    p.add_argument("--threads", type=int, help="measure with (and store) this many threads")
    p.add_argument("--candidates", help="comma list (default: all for the device)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--exports", type=Path, default=ROOT / "exports" / "auto")
    p.add_argument("--suffix", default="", help="appended to the file names (e.g. _1thread)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stem = args.out / f"auto_{args.tag}_{time.strftime('%Y-%m-%d')}{args.suffix}"
    exports = args.exports / args.tag
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(exports, ignore_errors=True)
    commands = []
    calib = train_calibration_folder(args.data, args.split, exports / "calib-train")
    run(auto_command(args, calib, exports), commands)
    rep = json.loads((exports / "auto_report.json").read_text())
    for suffix in (".md", ".json", ".png"):
        src = exports / f"auto_report{suffix}"
        if src.exists():
            shutil.copyfile(src, stem.with_suffix(suffix))
    code = run(bench_command(args, rep, stem), commands).returncode
    Path(f"{stem}_commands.txt").write_text("\n".join(commands) + "\n")
    print(f"winner {rep['winner']}: {rep['artifact']}\nreport {stem}.md, bench {stem}_bench.md")
    return code


if __name__ == "__main__":
    sys.exit(main())
