"""Which 16 images should ONNX Runtime INT8 calibrate on? (ORT reads at most 16: ort_quant.ORT_DEFAULTS)

Before 2026-12-06 the export took the first 16 *by name* of the drawn calibration set; in an
official-layout dataset names sort by class ("benign (1)" ... "malignant (99)"), so the default
set (`cmunext_edge/samples/busi-calib`: 40 benign, 24 malignant training images) gave 16 benign
images. Now it draws 16 with --seed (CalibrationSet.subset). This script measures, for the shipped
CMUNeXt-S, the INT8 artifact each way of choosing the 16 gives, on the 64 held-out validation
images (`cmunext_edge/samples/busi-heldout`; never trained on, never calibrated on), with the
export's own gate (export/verify.compare):

- `first 16 by name`: the rule before (one draw: the default set holds exactly 64 images);
- `seeded, --seed k`: the rule now, k = 0 (the default) .. 6;
- `benign only, k` and `stratified 10 benign / 6 malignant, k`: to see whether the class mix matters.

    .venv/bin/python benchmarks/ort_calib_draw.py --record benchmarks/results/ort_calib_draw_DATE_CPU.md
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmunext_edge.capabilities import detect                          # noqa: E402
from cmunext_edge.checkpoints.weights import load_checkpoint          # noqa: E402
from cmunext_edge.data.discovery import discover, seeded_sample       # noqa: E402
from cmunext_edge.data.groundtruth import load_truth                  # noqa: E402
from cmunext_edge.export.calibration import calibration_samples      # noqa: E402
from cmunext_edge.export.pipeline import export                       # noqa: E402
from cmunext_edge.export.verify import compare, reference_logits      # noqa: E402
from cmunext_edge.resources import HELDOUT_DIR, default_calibration_dir, resolve_weights  # noqa: E402
from cmunext_edge.runtime.registry import open_backend                # noqa: E402

SIZE = 16


def seeded_now(seed: int) -> list[str]:
    """The 16 the export now calibrates on with --seed `seed` and the default --calib / --calib-size:
    the seeded draw of the calibration set (make_calibration_set), then CalibrationSet.subset's."""
    drawn = calibration_samples(None, 64, seed)
    return [s.name for s in seeded_sample(drawn, SIZE, seed)]


def draws(names: list[str], seeds: int) -> list[tuple[str, str, list[str]]]:
    """(family, label, the 16 names) for every way of choosing measured here."""
    def of(cls):
        return [n for n in names if n.startswith(cls)]
    out = [("first 16 by name (before)", "first 16 by name", sorted(names)[:SIZE])]
    out += [("seeded (now)", f"seeded, --seed {k}", seeded_now(k)) for k in range(seeds)]
    out += [("benign only", f"benign only, seed {k}", random.Random(k).sample(of("benign"), SIZE))
            for k in range(1, 6)]
    share = round(SIZE * len(of("benign")) / len(names))
    out += [("stratified", f"stratified {share}/{SIZE - share}, seed {k}",
             (lambda r: r.sample(of("benign"), share) + r.sample(of("malignant"), SIZE - share))(random.Random(k)))
            for k in range(1, 6)]
    return out


def calibration_folder(names: list[str], source: Path, where: Path) -> Path:
    for sub in ("images", "masks/0"):
        (where / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(source / sub / f"{n}.png", where / sub / f"{n}.png")
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", help="write the Markdown record here")
    ap.add_argument("--seeds", type=int, default=7, help="seeded draws --seed 0 .. N-1 (default 7)")
    args = ap.parse_args()
    t0 = time.time()
    ckpt = load_checkpoint(resolve_weights("cmunext-s-busi"))
    spec = ckpt.spec
    held = discover(HELDOUT_DIR)
    names = [s.name for s in held]
    x = np.stack([spec(s.image) for s in held]).astype(np.float32)
    masks = [load_truth(s, 1, spec.size) for s in held]
    ref = reference_logits(ckpt.build(), x)
    calib_dir = default_calibration_dir()
    calib_names = sorted(s.name for s in discover(calib_dir))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (family, label, picked) in enumerate(draws(calib_names, args.seeds)):
            folder = calibration_folder(picked, calib_dir, Path(tmp) / f"calib{i}")
            res = export("cmunext-s-busi", target="onnxruntime", precision="int8", calib=folder, calib_size=SIZE,
                         out=Path(tmp) / f"out{i}", verify=False, log=lambda m: None)
            with open_backend(res.artifact) as be:
                logits = np.concatenate([be.infer(x[j:j + 1]) for j in range(len(x))])
            fig = compare(logits, ref, masks, "int8", names)
            n_benign = sum(n.startswith("benign") for n in picked)
            rows.append((family, label, n_benign, fig))
            print(f"{label}: {fig['distribution']['mean']:.4f}", file=sys.stderr, flush=True)
    text = record(rows, len(held), len(calib_names), args, time.time() - t0)
    if args.record:
        Path(args.record).write_text(text)
    print(text)
    return 0


def _gate(fig: dict) -> str:
    return "FAIL" if not fig["passed"] else ("pass, verified" if fig["verified"] else "pass, not verified")


def record(rows, n_held: int, n_calib: int, args, seconds: float) -> str:
    caps = detect()
    out = ["# ONNX Runtime INT8: which 16 calibration images", "",
           f"- command: `.venv/bin/python benchmarks/ort_calib_draw.py --record {args.record}`; {seconds / 60:.1f} min",
           f"- CPU: {caps.summary()}; {os.cpu_count()} cores",
           f"- model: shipped CMUNeXt-S (`models/cmunext-s-busi.safetensors`); ONNX Runtime INT8 with the export's "
           f"defaults (Q/DQ, per-channel, percentile, the default float layers), calibrated on 16 of the {n_calib} "
           f"default calibration images (`cmunext_edge/samples/busi-calib`, training images)",
           f"- measured on the {n_held} held-out validation images (`cmunext_edge/samples/busi-heldout`, 42 benign, "
           f"22 malignant), which neither trained nor calibrated the model; agreement: per-image mask Dice between "
           f"the artifact's and PyTorch FP32's thresholded masks; gate: the export's own (int8: mean >= 0.97, "
           f"at most 3% of images below 0.90, verified when the 95% bound on that share is <= 6%)", "",
           "| draw | benign of 16 | mean | p5 | worst (image) | below 0.90 | 95% bound on that share | gate |",
           "|---|---:|---:|---:|---|---:|---:|---|"]
    for _, label, n_benign, fig in rows:
        d = fig["distribution"]
        out.append(f"| {label} | {n_benign} | {d['mean']:.4f} | {d['p5']:.4f} | {d['worst']:.3f} ({d['worst_image']}) | "
                   f"{d['n_bad']} | {100 * d['bad_share_upper95']:.1f}% | {_gate(fig)} |")
    out += ["", "| way of choosing | draws | mean agreement: mean (min-max) | images below 0.90: mean (max) | passed the gate |",
            "|---|---:|---|---|---:|"]
    for family in dict.fromkeys(f for f, *_ in rows):
        figs = [fig for f, _, _, fig in rows if f == family]
        means = [g["distribution"]["mean"] for g in figs]
        bad = [g["distribution"]["n_bad"] for g in figs]
        out.append(f"| {family} | {len(figs)} | {statistics.mean(means):.4f} ({min(means):.4f}-{max(means):.4f}) | "
                   f"{statistics.mean(bad):.1f} ({max(bad)}) | {sum(bool(g['passed']) for g in figs)} of {len(figs)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
