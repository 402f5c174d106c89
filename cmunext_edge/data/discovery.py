"""Finding images (and their ground-truth masks) in what a user points us at.

A SOURCE is one image file, a folder of images, or an official-layout dataset:
`images/<name>.<ext>` with masks in `masks/0/<name>.png` and optionally a split file
(one name per line, no extension) that restricts which images are used.

Several classes (groundtruth.py reads them):
- the official layout: one binary mask folder per class, `masks/0/`, `masks/1/`, ... `masks/<N-1>/`
  (numbered from 0 without gaps; class k is output channel k);
- label images: `labels/<name>.png`, one grayscale image per image whose pixel value is the class
  (0 background, k = class k-1, i.e. output channel k-1).
A dataset has one of the two, not both.

Every input not processed is reported: `unread_files` lists the files of a folder (of `images/`
in the official layout) that the image job does not read, each with the reason (a video beside
images, DICOM, GIF, anything else); NOT_READ maps a suffix to its reason (a reader added for a
format removes its suffix here and adds it to the readable ones).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from cmunext_edge.core.preprocess import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts")
NOT_READ: dict[str, str] = {
    **dict.fromkeys(VIDEO_SUFFIXES, "a video: not read when a folder holds images (give the video file "
                                    "itself, or a folder of videos only, as SOURCE)"),
    ".dcm": "DICOM is not supported by this installation (DICOM support needs the [dicom] extra)",
    ".dicom": "DICOM is not supported by this installation (DICOM support needs the [dicom] extra)",
    ".gif": "GIF is not a supported image format (PNG, JPEG, BMP, TIFF, WebP)",
}
OTHER_FILE = "not a supported image format (PNG, JPEG, BMP, TIFF, WebP)"


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    mask: Path | None = None                        # class-0 mask (masks/0/) or the label image (labels/)
    more_masks: tuple[Path | None, ...] = ()        # masks/1/, masks/2/, ... of a multi-class dataset
    label_image: bool = False                       # `mask` is a label image (pixel value = class)

    @property
    def class_masks(self) -> tuple[Path | None, ...]:
        """Per-class mask files in class order (one entry per masks/<k>/ folder)."""
        return () if self.label_image else (self.mask, *self.more_masks)


def _images_in(folder: Path) -> list[Path]:
    """Image files by suffix; a broken symbolic link (dangling or a loop) with an image suffix is
    kept, so that it is reported as unreadable instead of silently dropped."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and (p.is_file() or (p.is_symlink() and not p.exists())))


def not_read_reason(path: Path) -> str | None:
    """Why a file is not read as an image (None if its suffix is an image suffix)."""
    suffix = Path(path).suffix.lower()
    return None if suffix in IMAGE_SUFFIXES else NOT_READ.get(suffix, OTHER_FILE)


def unread_files(source: str | Path, split: str | Path | None = None) -> list[dict]:
    """Files of SOURCE the image job does not read, as {"path", "error"} with the reason.

    A folder: its files (hidden ones and sub-folders aside) without an image suffix; an official
    layout: those of images/. With a split file the names are chosen on purpose: none reported."""
    source = Path(source)
    if split is not None or not source.is_dir():
        return []
    folder = source / "images" if is_official_layout(source) else source
    out = []
    for p in sorted(folder.iterdir()):
        reason = not_read_reason(p)
        if reason and not p.name.startswith(".") and p.is_file():
            out.append({"path": str(p), "error": f"{p}: not processed: {reason}"})
    return out


def is_official_layout(folder: Path) -> bool:
    return (folder / "images").is_dir()


def read_name_list(path: str | Path) -> list[str]:
    """Names from a text file (one per line, '#' comments) or a training split.json ('val' list)."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("val"), list):
            raise ValueError(f"{path}: a split JSON needs a 'val' list of names")
        return [str(n) for n in data["val"]]
    names = [line.strip() for line in path.read_text().splitlines()]
    return [n for n in names if n and not n.startswith("#")]


def class_mask_folders(dataset: Path) -> list[Path]:
    """masks/0/, masks/1/, ... of an official-layout dataset (numbered from 0 without gaps)."""
    root = dataset / "masks"
    if not root.is_dir():
        return []
    numbered = sorted((int(p.name), p) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if [k for k, _ in numbered] != list(range(len(numbered))):
        raise ValueError(f"{root}: class mask folders must be numbered 0, 1, 2, ... without gaps, "
                         f"found {[k for k, _ in numbered]}")
    return [p for _, p in numbered]


def _attach_truth(source: Path, images: list[Path]) -> list[Sample]:
    """Samples with their per-class masks (masks/<k>/) or label images (labels/)."""
    folders, labels = class_mask_folders(source), source / "labels"
    if folders and labels.is_dir():
        raise ValueError(f"{source}: has both masks/ and labels/; keep one ground-truth layout")
    if labels.is_dir():
        found = {p.stem: p for p in _images_in(labels)}
        return [Sample(p.stem, p, found.get(p.stem), label_image=p.stem in found) for p in images]
    per_class = [{p.stem: p for p in _images_in(f)} for f in folders]
    samples = []
    for p in images:
        paths = [m.get(p.stem) for m in per_class]
        samples.append(Sample(p.stem, p, paths[0] if paths else None, tuple(paths[1:])))
    return samples


def discover(source: str | Path, split: str | Path | None = None) -> list[Sample]:
    """All samples under SOURCE, sorted by name; masks attached where the layout has them."""
    source = Path(source)
    if source.is_file():
        if Path(source).suffix.lower() in NOT_READ:
            raise ValueError(f"{source}: {NOT_READ[source.suffix.lower()]}")
        return [Sample(source.stem, source, None)]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if not is_official_layout(source):
        if split is not None:
            raise ValueError(f"--split needs an official-layout dataset (images/, masks/0/); {source} is a plain folder")
        return [Sample(p.stem, p, None) for p in _images_in(source)]
    samples = _attach_truth(source, _images_in(source / "images"))
    if split is not None:
        wanted = read_name_list(split)
        by_name = {s.name: s for s in samples}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(f"{split}: {len(unknown)} names have no image in {source / 'images'}, "
                             f"e.g. {unknown[:3]}")
        samples = [by_name[n] for n in wanted]
    return samples


def seeded_sample(samples: list[Sample], size: int | None, seed: int) -> list[Sample]:
    """`size` of `samples` drawn with `seed` (all of them when there are no more), sorted by name.

    The one sampler of the toolkit: calibration sets and auto's evaluation images pick the
    same images for the same seed."""
    if not size or len(samples) <= size:
        return list(samples)
    return sorted(random.Random(seed).sample(list(samples), size), key=lambda s: s.name)


def seeded_split(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of names (independent of input order)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"validation fraction must lie in (0, 1), got {val_fraction}")
    ordered = sorted(names)
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(len(ordered) * val_fraction))
    return sorted(ordered[n_val:]), sorted(ordered[:n_val])
