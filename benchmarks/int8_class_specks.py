"""Which class masks make a several-class INT8 artifact's images fall below 0.90 agreement: per bad
image, each class's Dice with PyTorch FP32 and the two masks' pixel counts (256x256), and how many
bad images come from small masks (a class below 0.90 whose two masks are both under 200 px).
Reads what `int8_faithful.py --stages recipes` left in --work (ref_fp32.npy, artifacts/<label>/).

    .venv/bin/python benchmarks/int8_class_specks.py --weights exports/multiclass/run/best.safetensors \
        --data exports/multiclass/data --split models/cmunext-s-busi.split.json \
        --work out/int8_faithful_multiclass_zen4 --out benchmarks/results/int8_class_specks_2026-12-05_zen4.txt
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from int8_faithful import run_artifact  # noqa: E402

SMALL, SPECK = 200, 50     # px at 256x256


def class_rows(ref: np.ndarray, out: np.ndarray) -> list[list[tuple[float, int, int]]]:
    """Per image, per class: (the product's mask agreement, FP32 px, artifact px)."""
    from cmunext_edge.core.agreement import mask_dice
    return [[(float(d), int((rc > 0).sum()), int((oc > 0).sum())) for d, rc, oc in zip(mask_dice(o, r), r, o)]
            for r, o in zip(ref, out)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--labels", default="plain_int8_product_default,plain_int8_current")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from cmunext_edge.checkpoints.weights import load_checkpoint
    names = sorted(json.loads(args.split.read_text())["val"])
    spec = load_checkpoint(args.weights).spec
    X = np.stack([spec(args.data / "images" / f"{n}.png") for n in names])
    ref = np.load(args.work / "ref_fp32.npy")
    lines = [f"command: {' '.join(sys.argv)}", f"{len(names)} validation images of {args.split}", ""]
    for label in args.labels.split(","):
        out, ran = run_artifact(args.work / "artifacts" / label / f"{label}.xml", X.astype(np.float32))
        rows = class_rows(ref, out)
        means = [float(np.mean([c[0] for c in r])) for r in rows]
        bad = [i for i, m in enumerate(means) if m < 0.90]
        small = [i for i in bad if any(c[0] < 0.90 and max(c[1], c[2]) < SMALL and min(c[1], c[2]) < SPECK
                                       for c in rows[i])]
        tolerant = [float(np.mean([1.0 if max(c[1], c[2]) < SPECK else c[0] for c in r])) for r in rows]
        lines += [f"{label} ({ran}): mean {np.mean(means):.4f}, {len(bad)} of {len(names)} images below 0.90; "
                  f"{len(small)} of those have a class below 0.90 whose masks are both under {SMALL} px "
                  f"(one under {SPECK} px)",
                  f"  counting a class whose two masks both have < {SPECK} px as agreeing: mean "
                  f"{np.mean(tolerant):.4f}, {sum(t < 0.90 for t in tolerant)} below 0.90"]
        lines += [f"  {names[i]:<14} {means[i]:.3f}  " + " | ".join(
            f"class {k} {c[0]:.2f} ({c[1]} -> {c[2]} px)" for k, c in enumerate(rows[i])) for i in bad]
        lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
