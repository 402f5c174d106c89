"""Ground truth of one sample as a C x H x W boolean array, for any number of classes.

Two layouts (data.py finds them):
- per-class folders, the official layout: `masks/<k>/<name>.png` is class k's binary mask
  (read as the official code reads one mask: grayscale, nearest resize, > 127);
- label images: `labels/<name>.png` whose pixel value v is the class: 0 background,
  v = k + 1 for class k (so output channel k); values above the model's classes are left out.

The model's output channel k is class k; the loss and the thresholding are per channel (sigmoid),
as in the official code.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cmunext_edge.data.discovery import Sample
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS
from cmunext_edge.core.preprocess import ImageReadError, decode_truth_file, load_mask


def dataset_classes(samples: list[Sample]) -> int | None:
    """Classes the ground truth of `samples` holds: the number of masks/<k>/ folders, or for label
    images the largest label value found (read from every label image); None without ground truth."""
    with_truth = [s for s in samples if s.mask is not None]
    if not with_truth:
        return None
    if not with_truth[0].label_image:
        return len(with_truth[0].class_masks)
    return max(1, max(int(_read_label(s.mask).max()) for s in with_truth))


def _read_label(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    label = decode_truth_file(path, cv2.IMREAD_UNCHANGED, "label image", max_pixels)
    if label.ndim == 3:
        raise ImageReadError(f"{path}: a label image must be single-channel (pixel value = class), "
                             f"got {label.shape[2]} channels")
    if int(label.max()) == 255 and not np.isin(label, (0, 255), invert=True).any():
        raise ImageReadError(f"{path}: a label image holds class numbers (0 background, k for class k-1), but this "
                             f"one holds only 0 and 255, which would make 255 classes: a binary mask? put binary "
                             f"masks in masks/0/ instead of labels/")
    return label


def check_truth_size(path, truth_hw, image_hw) -> None:
    """ImageReadError when ground truth is not the size of its image (`image_hw` None: not checked):
    a mask of another size is most often the mask of another image, and every tool refuses it alike
    (predict scores nothing for that image, training leaves it out, an export's set names it)."""
    if image_hw is not None and tuple(truth_hw) != tuple(image_hw[:2]):
        raise ImageReadError(f"{path}: mask size {truth_hw[1]}x{truth_hw[0]} differs from its image's "
                             f"{image_hw[1]}x{image_hw[0]} (W x H): is it the mask of this image?")


def load_truth(sample: Sample, num_classes: int, size: tuple[int, int] | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(num_classes, H, W) bool ground truth of `sample`, resized (nearest) to `size` (H, W) if given;
    with `image_hw` (the image's H, W), ground truth of another size is an ImageReadError.

    A model with fewer classes than the dataset is scored on its first `num_classes` classes in
    either layout (label values above `num_classes` are the classes left out: background to it,
    as training with a smaller --num-classes reads them); one with more is an error, as is a
    missing class mask."""
    if sample.mask is None:
        raise ValueError(f"{sample.name}: no ground truth")
    if sample.label_image:
        label = _read_label(sample.mask, max_pixels)
        check_truth_size(sample.mask, label.shape[:2], image_hw)
        if size is not None:
            label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        return np.stack([label == k + 1 for k in range(num_classes)])   # higher values: classes left out
    paths = sample.class_masks
    if num_classes > len(paths):
        raise ValueError(f"{sample.name}: the model has {num_classes} classes but the dataset has mask "
                         f"folders for {len(paths)} (masks/0/ ... masks/{len(paths) - 1}/)")
    missing = [k for k, p in enumerate(paths[:num_classes]) if p is None]
    if missing:
        raise ImageReadError(f"{sample.name}: no mask in masks/{missing[0]}/ (every class folder needs "
                             f"a mask for every image; an empty mask is all black)")
    if image_hw is None:
        return np.stack([load_mask(p, size, max_pixels) for p in paths[:num_classes]])
    masks = [load_mask(p, None, max_pixels) for p in paths[:num_classes]]
    for p, m in zip(paths, masks):
        check_truth_size(p, m.shape, image_hw)
    truth = np.stack(masks)
    return resize_truth(truth, size) if size is not None else truth


def classes_problem(samples: list[Sample], num_classes: int) -> str | None:
    """Why the ground truth of `samples` cannot score a `num_classes` model: it holds fewer classes
    (None when it can, or when there is no ground truth). A one-class model reads nothing; label
    images are read to find their largest value (an unreadable one raises ImageReadError)."""
    if num_classes <= 1:
        return None
    found = dataset_classes(samples)
    if found is None or found >= num_classes:
        return None
    layout = truth_description(next(s for s in samples if s.mask is not None))
    return (f"the model has {num_classes} classes but the dataset's ground truth has {found} ({layout}); "
            f"give one with masks/0/ ... masks/{num_classes - 1}/ or label values 1..{num_classes}")


def classes_check(samples: list[Sample], num_classes: int, where, unusable: str | None = "ground truth") -> str | None:
    """classes_problem as one message naming `where` (None: the ground truth can score the model).
    An unreadable label image is "<unusable> unusable: ...", or no problem when `unusable` is None
    (the caller skips and reports that image itself)."""
    try:
        problem = classes_problem(samples, num_classes)
    except ImageReadError as exc:
        return None if unusable is None else f"{unusable} unusable: {exc}"
    return f"{where}: {problem}" if problem else None


def classes_note(samples: list[Sample], num_classes: int, where) -> str | None:
    """One line naming `where` when the ground truth of `samples` holds more classes than a
    `num_classes` model: it is scored on the first `num_classes`, and the other classes' regions
    count as background to it (None otherwise, or when a label image cannot be read: that image's
    own error says so)."""
    try:
        found = dataset_classes(samples)
    except ImageReadError:
        return None
    if found is None or found <= num_classes:
        return None
    layout = truth_description(next(s for s in samples if s.mask is not None))
    scored = "class 0" if num_classes == 1 else f"classes 0 ... {num_classes - 1}"
    return (f"{where}: the ground truth holds {found} classes ({layout}), the model {num_classes}: "
            f"scored on {scored} only; the regions of the other {found - num_classes} class(es) count as background")


def resize_truth(truth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """C x H x W ground truth at another (H, W), nearest: the same as `load_truth(sample, C, size)`
    (nearest resizing picks the same source pixels before or after thresholding)."""
    return np.stack([cv2.resize(t.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
                     for t in truth]).astype(bool)


def truth_description(sample: Sample) -> str:
    """How `sample`'s ground truth is stored, for messages and manifests."""
    if sample.mask is None:
        return "no ground truth"
    if sample.label_image:
        return "label images (labels/)"
    n = len(sample.class_masks)
    return "masks/0/" if n == 1 else f"per-class masks (masks/0/ ... masks/{n - 1}/)"
