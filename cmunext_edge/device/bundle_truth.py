"""Ground truth in device bundles: which files a verification image's truth is copied to, how the
bundle's rows name them, and how the host and the device read and score them (any number of
classes; a one-class model keeps the bundle layout it always had: verify/masks/<name>.png)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cmunext_edge.data.discovery import Sample
from cmunext_edge.data.groundtruth import load_truth
from cmunext_edge.core.metrics import class_scores
from cmunext_edge.core.preprocess import ImageReadError


def spec_input(spec, image: Path) -> np.ndarray:
    """1 x C x H x W network input of one image file."""
    return spec(image)[None]


def copy_truth(s: Sample, folder: Path, num_classes: int) -> dict:
    """Copy `s`'s ground truth into the bundle; the row keys that name it: "mask" (one class, as
    bundles always had), "masks" (one file per class, verify/masks/<k>/) or "labels" (verify/labels/)."""
    if s.label_image:
        keys, pairs = None, [(s.mask, f"verify/labels/{s.name}{s.mask.suffix.lower()}")]
    elif num_classes == 1:
        keys, pairs = None, [(s.mask, f"verify/masks/{s.name}{s.mask.suffix.lower()}")]
    else:
        if any(p is None for p in s.class_masks[:num_classes]):
            raise ImageReadError(f"{s.name}: a class mask is missing (every masks/<k>/ needs this image's mask)")
        pairs = [(p, f"verify/masks/{k}/{s.name}{p.suffix.lower()}") for k, p in enumerate(s.class_masks[:num_classes])]
        keys = {"masks": [rel for _, rel in pairs]}
    for src, rel in pairs:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / rel)
    return keys or {"labels" if s.label_image else "mask": pairs[0][1]}


def reference_truth(folder: Path, row: dict, num_classes: int, size) -> np.ndarray:
    """C x H x W ground truth at network `size` of one bundle reference row (any of its layouts)."""
    image = folder / row["image"]
    if "labels" in row:
        sample = Sample(row["name"], image, folder / row["labels"], label_image=True)
    elif "masks" in row:
        paths = [folder / rel for rel in row["masks"]]
        sample = Sample(row["name"], image, paths[0], tuple(paths[1:]))
    else:
        sample = Sample(row["name"], image, folder / row["mask"])
    return load_truth(sample, num_classes, size)


def truth_scores(logits: np.ndarray, truth: np.ndarray) -> dict:
    """{"dice": official Dice over all classes} of C x H x W logits, plus "class_dice" for C >= 2."""
    scores = class_scores(logits > 0, truth)
    return {"dice": scores["dice"], **({"class_dice": scores["class_dice"]} if len(truth) > 1 else {})}
