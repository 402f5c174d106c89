"""A small 3-class dataset derived from BUSI-layout data (the bundled samples by default), to try
and test the multi-class path end to end without another download.

BUSI names its images "benign (N)" and "malignant (N)"; the derived classes are
  0: benign lesion   (the lesion mask of a "benign" image, empty otherwise)
  1: malignant lesion (the lesion mask of a "malignant" image, empty otherwise)
  2: lesion rim      (a band around any lesion, outside it: `rim_fraction` of the image's
                      shorter side wide)
The classes never overlap, so the same truth is written either as per-class folders (the
official layout, `masks/0/`, `masks/1/`, `masks/2/`) or as label images (`labels/`, pixel value
= class + 1, 0 = background).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge.data.discovery import discover
from cmunext_edge.core.preprocess import load_mask
from cmunext_edge.resources import SAMPLES_DIR

CLASSES = ("benign lesion", "malignant lesion", "lesion rim")
LAYOUTS = ("masks", "labels")


def derived_classes(name: str, lesion: np.ndarray, rim_fraction: float = 0.04) -> np.ndarray:
    """(3, H, W) bool classes of one BUSI image from its name and lesion mask."""
    kind = name.lower()
    width = max(1, round(min(lesion.shape) * rim_fraction))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    rim = cv2.dilate(lesion.astype(np.uint8), kernel).astype(bool) & ~lesion
    return np.stack([lesion & kind.startswith("benign"), lesion & kind.startswith("malignant"), rim])


def make_three_class_dataset(out: str | Path, layout: str = "masks", source: str | Path | None = None,
                             limit: int | None = None) -> Path:
    """Write the derived 3-class dataset of `source` (default: the bundled samples) to `out`:
    images/ plus masks/0..2/ (layout "masks") or labels/ (layout "labels"). Returns `out`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    samples = [s for s in discover(source or SAMPLES_DIR) if s.mask is not None][:limit]
    if not samples:
        raise ValueError(f"{source or SAMPLES_DIR}: no image/mask pairs to derive classes from")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for s in samples:
        shutil.copyfile(s.image, out / "images" / s.image.name)
        classes = derived_classes(s.name, load_mask(s.mask))
        if layout == "masks":
            for k, mask in enumerate(classes):
                _write(out / "masks" / str(k) / f"{s.name}.png", mask.astype(np.uint8) * 255)
        else:
            label = np.zeros(classes.shape[1:], np.uint8)
            for k, mask in enumerate(classes):
                label[mask] = k + 1
            _write(out / "labels" / f"{s.name}.png", label)
    return out


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
