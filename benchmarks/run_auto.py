"""Reproduce the recorded auto-selection reports: `cmunext-export --target auto` for one checkpoint,
then one `cmunext-bench` run of the chosen artifact beside PyTorch eager FP32 (and the OpenVINO
BF16 and ONNX Runtime FP32 candidates as references), on the validation split.

    .venv/bin/python benchmarks/run_auto.py --weights models/cmunext-s-busi.safetensors --tag s \\
        --data ../shared/data/busi-train --split runs/cmunext-s-busi/split.json
    .venv/bin/python benchmarks/run_auto.py --weights runs/cmunext-base-brief/best.safetensors --tag base \\
        --data ../shared/data/busi-train --split runs/cmunext-base-brief/split.json

Calibration uses the *training* images of the split (never the validation images the Dice budget
is measured on): the script links them into an official-layout folder. Results land in
benchmarks/results/auto_<tag>_<date>.{md,json,png} (selection) and auto_<tag>_<date>_bench.*
(the cmunext-bench rows behind it), plus auto_<tag>_<date>_commands.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def train_calibration_folder(data: Path, split: Path, folder: Path) -> Path:
    """images/ + masks/0/ symlinks to the training images of a split.json (or all of `data`)."""
    names = json.loads(split.read_text())["train"] if split and split.suffix == ".json" else None
    (folder / "images").mkdir(parents=True)
    (folder / "masks" / "0").mkdir(parents=True)
    for img in sorted((data / "images").iterdir()):
        if names is None or img.stem in names:
            os.symlink(img.resolve(), folder / "images" / img.name)
            mask = data / "masks" / "0" / img.name
            if mask.exists():
                os.symlink(mask.resolve(), folder / "masks" / "0" / img.name)
    return folder


def val_list(split: Path, path: Path) -> Path:
    """cmunext-bench --split takes a name list: the 'val' list of a training split.json."""
    if split.suffix != ".json":
        return split
    path.write_text("\n".join(json.loads(split.read_text())["val"]) + "\n")
    return path


def main(argv=None) -> int:
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
    args = p.parse_args(argv)
    stem = args.out / f"auto_{args.tag}_{time.strftime('%Y-%m-%d')}{args.suffix}"
    exports = args.exports / args.tag
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(exports, ignore_errors=True)
    commands = []
    with tempfile.TemporaryDirectory() as tmp:
        calib = train_calibration_folder(args.data, args.split, Path(tmp) / "calib")
        cmd = [PY, "-m", "cmunext_edge.cli.export", "--weights", args.weights, "--target", "auto",
               "--device", args.device, "--max-dice-drop", str(args.max_dice_drop), "--calib", str(calib),
               "--calib-size", str(args.calib_size), "--verify-data", str(args.data), "--split",
               str(args.split), "--out", str(exports)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--candidates", args.candidates] if args.candidates else []
        commands.append(" ".join(cmd))
        subprocess.run(cmd, check=False)
    rep = json.loads((exports / "auto_report.json").read_text())
    for suffix in (".md", ".json", ".png"):
        src = exports / f"auto_report{suffix}"
        if src.exists():
            shutil.copyfile(src, stem.with_suffix(suffix))
    rows = {r["name"]: r for r in rep["candidates"]}
    bench = [str(rep["artifact"])] if rep["artifact"] else []
    bench += [r["artifact"] for n, r in rows.items() if n in ("ov-bf16", "ort-fp32") and r["artifact"]]
    opt = ["--option", f"threads={args.threads}"] if args.threads else []
    names = val_list(args.split, Path(str(stem) + "_val.txt"))
    cmd = [PY, "-m", "cmunext_edge.cli.bench", args.weights, *bench, "--data", str(args.data), "--split",
           str(names), *opt, "--json", f"{stem}_bench.json", "--markdown", f"{stem}_bench.md", "--plot",
           f"{stem}_bench.png", "--quiet"]
    commands.append(" ".join(cmd))
    code = subprocess.run(cmd, check=False).returncode
    Path(f"{stem}_commands.txt").write_text("\n".join(commands) + "\n")
    print(f"winner {rep['winner']}: {rep['artifact']}\nreport {stem}.md, bench {stem}_bench.md")
    return code


if __name__ == "__main__":
    sys.exit(main())
