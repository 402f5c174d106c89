"""Near copies in BUSI and what they did to the shipped model's held-out figures (data/fingerprint.py).

Prints: the look-alike hash distances between the 452 BUSI training-folder images (pairs at 0..12 bits),
how far a resize / JPEG re-encode moves an image's hash (first 100 images), how many of the shipped
model's 90 validation images are near copies of its training images, and the shipped model's official
validation Dice (PyTorch FP32) on all 90, on the near copies and on the others.

    .venv/bin/python benchmarks/near_copies.py ../shared/data/busi-train
    .venv/bin/python benchmarks/near_copies.py ../shared/data/busi-train --model cmunext-base-busi

`--model` scores another shipped model that shares the S model's split (CMUNeXt base does).
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmunext_edge.core.preprocess import load_image, to_bgr_uint8         # noqa: E402
from cmunext_edge.data.discovery import discover, read_name_list          # noqa: E402
from cmunext_edge.data.fingerprint import NEAR_COPY_BITS, lookalike_hash  # noqa: E402
from cmunext_edge.data.model_split import training_images                 # noqa: E402
from cmunext_edge.predict.job import run_job                              # noqa: E402
from cmunext_edge.runtime.segmenter import EdgeSegmenter                  # noqa: E402

SPLIT = ROOT / "models" / "cmunext-s-busi.split.json"


def bits(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def main(data: str, model: str | None = None) -> int:
    samples = discover(data)
    images = {s.name: to_bgr_uint8(load_image(s.image)) for s in samples}
    hashes = {n: lookalike_hash(im) for n, im in images.items()}
    names = sorted(hashes)
    pairs = [bits(hashes[a], hashes[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    hist = np.bincount(np.minimum(pairs, 13), minlength=14)
    print(f"{len(names)} images, {len(pairs)} pairs; pairs at 0..12 bits: {hist[:13].tolist()}; "
          f"threshold {NEAR_COPY_BITS} bits")
    moved = []
    for name in names[:100]:
        im = images[name]
        copies = (cv2.resize(im, (256, 256), interpolation=cv2.INTER_AREA),
                  cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 50])[1], cv2.IMREAD_COLOR),
                  cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2)))
        moved.append([bits(hashes[name], lookalike_hash(c)) for c in copies])
    print(f"copies of the first 100 images (256x256, JPEG q50, half size): max bits moved {np.max(moved, 0).tolist()}")
    val = read_name_list(ROOT / "models" / "cmunext-s-busi.val.txt")
    by_name = {s.name: s for s in samples}
    near = training_images([by_name[n] for n in val], SPLIT)
    clean = [n for n in val if n not in near]
    print(f"shipped model: {len(near)} of its {len(val)} validation images are near copies of its training images")
    seg = EdgeSegmenter(model)
    print(f"model: {model or 'the default (cmunext-s-busi)'}")
    figures = {}
    for label, group in (("all 90", val), ("near copies", sorted(near)), ("others", clean)):
        with tempfile.TemporaryDirectory() as out:
            summary = run_job(seg, [by_name[n] for n in group], Path(out), write_overlays=False).summary()
        figures[label] = {"n": len(group), "dice": round(summary["mean_dice"], 4), "iou": round(summary["mean_iou"], 4)}
        print(f"  {label:12s} n={len(group):3d}  official Dice {summary['mean_dice']:.4f}  IoU {summary['mean_iou']:.4f}")
    print(json.dumps({"pairs_0_12": hist[:13].tolist(), "copy_bits_max": np.max(moved, 0).tolist(),
                      "near": sorted(near), "figures": figures}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "busi-train"))
    parser.add_argument("--model", help="shipped model name or checkpoint scored on the S model's split")
    args = parser.parse_args()
    sys.exit(main(args.data, args.model))
