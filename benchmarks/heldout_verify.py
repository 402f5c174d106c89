"""Held-out verification of the shipped model's artifacts (issue 21): does the bound an export
prints predict what the artifact does on images it was not verified on?

1. Each artifact is exported as a user gets it (`cmunext-export` defaults: verification on the
   shipped model's held-out validation images, packaged in cmunext_edge/samples/busi-heldout, less
   the INT8 calibration images); the export's own verification record is kept. An artifact that
   fails its gate is exported again with --no-verify so that it can be measured.
2. The held-out images that calibrated nothing (all 64 since the default calibration set is 64
   training images, cmunext_edge/samples/busi-calib) are split, seeded, into halves A and B. The export's gate (export/verify.compare, the
   function the export runs) is applied on A; the same figures are measured on B.

    .venv/bin/python benchmarks/heldout_verify.py [--out /tmp/heldout] [--record benchmarks/results/heldout_verify.md]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmunext_edge.capabilities import detect                          # noqa: E402
from cmunext_edge.checkpoints.weights import load_checkpoint          # noqa: E402
from cmunext_edge.data.discovery import discover                      # noqa: E402
from cmunext_edge.data.groundtruth import load_truth                  # noqa: E402
from cmunext_edge.export.pipeline import export                       # noqa: E402
from cmunext_edge.export.verify import VerificationError, compare, reference_logits   # noqa: E402
from cmunext_edge.resources import HELDOUT_DIR, default_calibration_dir, resolve_weights  # noqa: E402
from cmunext_edge.runtime.registry import open_backend                # noqa: E402

# (name, target, precision): the README main job's artifacts (cmunext-demo) and the ORT ones
ARTIFACTS = (("onnx_fp32", "onnx", "fp32"), ("openvino_fp32", "openvino", "fp32"),
             ("openvino_int8", "openvino", "int8"), ("ort_int8", "onnxruntime", "int8"))


def export_as_user(name, target, precision, out: Path, log) -> tuple[Path, dict, str]:
    """(artifact, the export's verification record, what happened)."""
    try:
        res = export("cmunext-s-busi", target=target, precision=precision, name=name, out=out, log=log)
        return res.artifact, res.verification, "verified" if res.verification["verified"] else "passed, not verified"
    except VerificationError as exc:
        res = export("cmunext-s-busi", target=target, precision=precision, name=name, out=out, verify=False,
                     log=lambda m: None)
        return res.artifact, exc.figures, "REJECTED by the export gate (re-exported with --no-verify to measure)"


def _gate(fig: dict) -> str:
    """pass (verified), pass, not verified (n < 49 / bound too wide), or FAIL."""
    if not fig["passed"]:
        return "FAIL"
    if fig["verified"]:
        return "pass, verified"
    return "pass, not verified (" + (f"n < {fig['min_images']}" if fig["distribution"]["n"] < fig["min_images"]
                                     else "95% bound > 2x tail floor") + ")"


def _row(name, fig: dict) -> str:
    d = fig["distribution"]
    return (f"| {name} | {d['n']} | {d['mean']:.4f} | {d['p5']:.4f} | {d['worst']:.3f} ({d['worst_image']}) | "
            f"{d['n_bad']} ({100 * d['bad_share']:.1f}%) | {100 * d['bad_share_upper95']:.1f}% | "
            f"{d['mean_lower95']:.4f} | {_gate(fig)} | "
            f"{fig['dice_vs_ground_truth']:.4f} ({fig['dice_vs_ground_truth_pytorch']:.4f}) |")


HEADER = ("| artifact | n | mean | p5 | worst (image) | below 0.90 | 95% bound on that share | "
          "mean >= (95%) | gate | Dice vs GT (PyTorch) |\n|---|---:|---:|---:|---|---:|---:|---:|---|---|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/heldout-verify")
    ap.add_argument("--record", help="write the Markdown record here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, t0 = Path(args.out), time.time()
    ckpt = load_checkpoint(resolve_weights("cmunext-s-busi"))
    spec, model = ckpt.spec, ckpt.build()
    calib = {s.name for s in discover(default_calibration_dir())}
    every_held = discover(HELDOUT_DIR)
    held = [s for s in every_held if s.name not in calib]
    names = [s.name for s in held]
    half_a = set(random.Random(args.seed).sample(names, len(names) // 2))
    idx = {"A": [i for i, n in enumerate(names) if n in half_a], "B": [i for i, n in enumerate(names) if n not in half_a]}
    x = np.stack([spec(s.image) for s in held]).astype(np.float32)
    masks = [load_truth(s, 1, spec.size) for s in held]
    ref = reference_logits(model, x)
    lines, halves = [], []
    for name, target, precision in ARTIFACTS:
        logs = []
        artifact, fig, what = export_as_user(name, target, precision, out, logs.append)
        print(f"{name}: {what}", file=sys.stderr)
        lines.append((name, fig, what, [m for m in logs if m.startswith(("verification", "warning"))]))
        with open_backend(artifact) as be:
            logits = np.concatenate([be.infer(x[i:i + 1]) for i in range(len(x))])
        for half, ids in idx.items():
            f = compare(logits[ids], ref[ids], [masks[i] for i in ids], precision, [names[i] for i in ids])
            halves.append((f"{name} on half {half}", f))
    text = record(lines, halves, len(held), len(calib), len(every_held) - len(held), args, time.time() - t0)
    if args.record:
        Path(args.record).write_text(text)
    print(text)
    return 0


def record(lines, halves, n_held, n_calib, n_calib_held, args, seconds) -> str:
    caps = detect()
    out = ["# Held-out verification of the shipped model's artifacts (issue 21)", "",
           f"- command: `.venv/bin/python benchmarks/heldout_verify.py --record {args.record}` "
           f"(seed {args.seed}); {seconds / 60:.1f} min",
           f"- CPU: {caps.summary()}; {os.cpu_count()} cores, load average at the end "
           f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}",
           "- agreement: per-image mask Dice between the artifact's and PyTorch FP32's thresholded masks at 256 x 256",
           "", "## 1. The export as a user runs it (its own verification record)", "",
           "Default verification: the shipped model's held-out validation images "
           f"(`cmunext_edge/samples/busi-heldout`), less the INT8 calibration images "
           f"(`{default_calibration_dir().relative_to(ROOT)}`, {n_calib} images: {n_calib_held} of them held out).",
           "", HEADER]
    out += [_row(name, fig) for name, fig, _, _ in lines]
    out += [""] + [f"- {name}: {what}" for name, _, what, _ in lines]
    out += ["", f"## 2. Verified on half A, measured on half B ({n_held} held-out images that calibrated "
            f"nothing: the {n_held + n_calib_held} held-out images less the {n_calib_held} among the calibration images, split seeded {n_held // 2} / "
            f"{n_held - n_held // 2})", "",
            "Half A's row is what the export's gate (`export/verify.compare`) decides on A; half B's row is "
            "measured the same way on images the verification never saw. The question: does A's 95% bound on "
            "the share of images below 0.90 cover what B shows?", "", HEADER]
    out += [_row(name, fig) for name, fig in halves]
    pairs = [(halves[i], halves[i + 1]) for i in range(0, len(halves), 2)]
    out += ["", "| artifact | A: share below 0.90 (95% bound) | B: share below 0.90 | bound held |",
            "|---|---:|---:|---|"]
    for (na, a), (_, b) in pairs:
        da, db = a["distribution"], b["distribution"]
        out.append(f"| {na.split(' on ')[0]} | {100 * da['bad_share']:.1f}% ({100 * da['bad_share_upper95']:.1f}%) | "
                   f"{100 * db['bad_share']:.1f}% | {'yes' if db['bad_share'] <= da['bad_share_upper95'] else 'NO'} |")
    out += ["", "Raw figures (JSON, per-image agreement included):", "", "```json",
            json.dumps({n: {k: v for k, v in f.items() if k in ("distribution", "passed", "verified", "claim",
                                                                  "failure")} for n, f in halves}, indent=1),
            "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
