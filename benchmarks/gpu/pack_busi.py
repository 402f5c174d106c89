"""Pack the BUSI training set into one compact file for the GPU machine (issue 26).

The trainer decodes every image once and resizes it to the network size (train/recipe.py
`_cache`: to_bgr_uint8 + INTER_LINEAR to 256x256; masks through class_truth). This script
writes exactly those cached arrays, as lossless PNGs in the official layout (images/,
masks/0/), into one uncompressed tar: training from it reads back the same uint8 arrays as
training from the originals (checked below for every image), at a third of the size.

    python benchmarks/gpu/pack_busi.py ../shared/data/busi-train runs/gpu/busi256.tar
"""
from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge.core.preprocess import get_preset
from cmunext_edge.data.discovery import discover
from cmunext_edge.train.recipe import _cache


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    spec = get_preset("official").with_size(args.size)
    samples = [s for s in discover(args.data) if s.mask is not None]
    images, masks = _cache(samples, spec, 1, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.out, "w") as tar:
        for s, img, mask in zip(samples, images, masks):
            _add(tar, f"busi256/images/{s.name}.png", _png(img))
            _add(tar, f"busi256/masks/0/{s.name}.png", _png(mask[0] * 255))
    # the round trip: the trainer's cache of the packed files equals that of the originals
    check = args.out.parent / "_check"
    with tarfile.open(args.out) as tar:
        tar.extractall(check, filter="data")
    packed = [s for s in discover(check / "busi256") if s.mask is not None]
    assert [s.name for s in packed] == [s.name for s in samples]
    images2, masks2 = _cache(packed, spec, 1, 1)
    assert np.array_equal(images, images2) and np.array_equal(masks, masks2)
    print(f"{args.out}: {len(samples)} pairs, {args.out.stat().st_size / 2**20:.1f} MiB; "
          f"cache identical to the originals'")


if __name__ == "__main__":
    main()
