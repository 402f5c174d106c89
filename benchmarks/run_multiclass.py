"""Multi-class end to end on real images: the 3-class set derived from BUSI (0 benign lesion,
1 malignant lesion, 2 lesion rim; cmunext_edge/data/multiclass_sample.py), fine-tuned from the shipped
1-class model on the shipped model's own training split, exported to ONNX FP32 and OpenVINO INT8
(calibrated on training images), verified and scored on the held-out split, through the same
command-line tools a user runs. Writes a Markdown record with every command:

    .venv/bin/python benchmarks/run_multiclass.py --data ../shared/data/busi-train \
        --split models/cmunext-s-busi.split.json --epochs 10 --name multiclass_2026-11-30
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import ROOT, python, rel, run, tool  # noqa: E402
from cmunext_edge.capabilities import detect  # noqa: E402
from cmunext_edge.data.discovery import read_name_list  # noqa: E402
from cmunext_edge.data.multiclass_sample import CLASSES  # noqa: E402


def subset(full: Path, names: list[str], out: Path) -> Path:
    """An official-layout view (symbolic links) of `full` holding only `names`."""
    for sub in ["images"] + [f"masks/{k}" for k in range(len(CLASSES))]:
        (out / sub).mkdir(parents=True, exist_ok=True)
        files = {p.stem: p for p in (full / sub).iterdir()}
        for n in names:
            link = out / sub / files[n].name
            if not link.exists():
                link.symlink_to(os.path.abspath(files[n]))
    return out


def fmt(values) -> str:
    return " / ".join(f"{v:.4f}" for v in values) if values else "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="BUSI-layout dataset (names benign/malignant)")
    p.add_argument("--split", type=Path, required=True, help="split.json whose val list is held out")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--work", type=Path, default=ROOT / "exports" / "multiclass")
    p.add_argument("--name", default="multiclass")
    args = p.parse_args(argv)
    log: list[str] = []
    t0 = time.time()
    full = args.work / "data"
    if not (full / "images").is_dir():
        run([python(), "-c", "from cmunext_edge.data.multiclass_sample import make_three_class_dataset as m; "
             f"m({rel(full)!r}, 'masks', source={rel(args.data)!r})"], log).check_returncode()
    val_names = read_name_list(args.split)
    all_names = sorted(p.stem for p in (full / "images").iterdir())
    val = subset(full, val_names, args.work / "val")
    train = subset(full, sorted(set(all_names) - set(val_names)), args.work / "train")
    run_dir, exports = args.work / "run", args.work / "exports"
    shutil.rmtree(exports, ignore_errors=True)          # a rerun reuses the data and the trained run
    run([*tool("cmunext-train"), rel(full), "--out", rel(run_dir), "--init", "cmunext-s-busi",
         "--val-list", rel(args.split), "--epochs", str(args.epochs)], log).check_returncode()
    best = run_dir / "best.safetensors"
    exported = {}
    int8 = ["--int8", "--calib", rel(train), "--calib-size", "64"]
    for label, extra in (("ONNX FP32", ["--target", "onnx"]), ("OpenVINO INT8", ["--target", "openvino", *int8]),
                         ("ONNX Runtime INT8", ["--target", "ort", *int8])):
        res = run([*tool("cmunext-export"), "--weights", rel(best), *extra, "--verify-data", rel(val),
                   "--verify-size", str(len(val_names)), "--out", rel(exports)], log, capture=True, with_stderr=True)
        print(res.stdout)
        exported[label] = (res.returncode, [ln for ln in res.stdout.splitlines()
                                            if ln.startswith(("verification:", "cmunext-export: error"))])
    manifest = json.loads((exports / "manifest.json").read_text())["artifacts"]
    predictions = {}
    for artifact in sorted(manifest):
        summary = args.work / f"predict_{artifact}.json"
        run([*tool("cmunext-predict"), rel(val), "--weights", rel(exports / artifact), "--out",
             rel(args.work / f"predict_{Path(artifact).stem}"), "--quiet", "--summary-json", rel(summary)],
            log).check_returncode()
        predictions[artifact] = json.loads(summary.read_text())
    write_record(args, run_dir, manifest, predictions, exported, log, time.time() - t0)
    return 0


def write_record(args, run_dir: Path, manifest: dict, predictions: dict, exported: dict, log: list[str],
                 seconds: float) -> None:
    history = (run_dir / "history.csv").read_text().splitlines()
    keys = history[0].split(",")
    rows = [dict(zip(keys, line.split(","))) for line in history[1:]]
    best = max(rows, key=lambda r: float(r["val_iou"]))
    lines = [f"# Multi-class (3 classes derived from BUSI) end to end, {time.strftime('%Y-%m-%d')}", "",
             f"- CPU: {detect().summary()}; {os.cpu_count()} cores; {seconds / 60:.1f} min in all",
             f"- classes: {', '.join(f'{k} {c}' for k, c in enumerate(CLASSES))}",
             f"- fine-tuned from the shipped 1-class model (new 3-class head) for {args.epochs} epochs on the "
             f"shipped model's training split; every figure below is on all {len(read_name_list(args.split))} "
             "held-out images (export verification with --verify-size = all of them; INT8 calibrated on 64 "
             "training images)", "",
             "## Training (validation Dice per epoch)", "",
             "| epoch | loss | val Dice (all classes) | " + " | ".join(f"class {k}" for k in range(len(CLASSES))) + " |",
             "|---:|---:|---:|" + "---:|" * len(CLASSES)]
    lines += [f"| {r['epoch']} | {float(r['loss']):.4f} | {float(r['val_dice']):.4f} | "
              + " | ".join(f"{float(r[f'val_dice_class{k}']):.4f}" for k in range(len(CLASSES))) + " |" for r in rows]
    lines += ["", f"Best epoch {best['epoch']} (by val IoU, as the official code) is exported.", "",
              "## Export verification (vs PyTorch FP32) and prediction on the held-out images", "",
              "| artifact | agreement (per class) | passed | Dice vs truth (per class) | PyTorch Dice (per class) | "
              "cmunext-predict Dice (per class) |", "|---|---|---|---|---|---|"]
    for name, entry in sorted(manifest.items()):
        v, s = entry["verification"], predictions[name]
        lines.append(f"| {name} | {v['mask_dice_agreement']:.4f} ({fmt(v.get('per_class_agreement'))}) | "
                     f"{v['passed']} | {v['dice_vs_ground_truth']:.4f} ({fmt(v.get('per_class_dice_vs_ground_truth'))}) | "
                     f"{v['dice_vs_ground_truth_pytorch']:.4f} ({fmt(v.get('per_class_dice_vs_ground_truth_pytorch'))}) | "
                     f"{s['mean_dice']:.4f} ({fmt(s.get('per_class_dice'))}) |")
    lines += ["", "Export runs (exit code and the verification line each printed):", ""]
    lines += [f"- {label}: exit {rc}" + "".join(f"; `{v}`" for v in lines_) for label, (rc, lines_) in exported.items()]
    lines += ["", "Commands (from the repository root):", "", "```", *log, "```", ""]
    out = ROOT / "benchmarks" / "results" / f"{args.name}.md"
    out.write_text("\n".join(lines))
    print(f"wrote {rel(out)}")


if __name__ == "__main__":
    sys.exit(main())
