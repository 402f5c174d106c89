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

DICOM files (.dcm, .dicom, or any file with the DICOM preamble) are images too: a multi-frame object
becomes one sample per frame, named `<stem>_frame0001`, `<stem>_frame0002`, ... (1-based, as DICOM
numbers frames), so that every frame gets its mask and is accounted for. A DICOM file whose header
cannot be used stays one sample, and reading it reports why (core/dicom.py); without the [dicom]
extra each one is reported naming the extra (a lone DICOM SOURCE is refused with that line).

Every input not processed is reported: `unread_files` lists the files of a folder (of `images/`
in the official layout) that the image job does not read, each with the reason (a video beside
images, GIF, anything else); `subfolder_notes` names sub-folders holding images (a folder is read
one level deep); NOT_READ maps a suffix to its reason (a reader added for a
format removes its suffix here and adds it to the readable ones, as DICOM did).
"""
from __future__ import annotations

from collections import Counter
import random
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from cmunext_edge._deps import MissingDependencyError
from cmunext_edge.core.preprocess import DICOM_SUFFIXES, IMAGE_SUFFIXES
from cmunext_edge.core import dicom
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS
from cmunext_edge.fileio import BROKEN_LINK, SPECIAL_FILE, not_a_file, opencv_path, loads_json

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts")
NOT_READ: dict[str, str] = {
    **dict.fromkeys(VIDEO_SUFFIXES, "a video: not read when a folder holds images (give the video file "
                                    "itself, or a folder of videos only, as SOURCE)"),
    ".gif": "GIF is not a supported image format (PNG, JPEG, BMP, TIFF, WebP, DICOM)",
}
OTHER_FILE = "not a supported image format (PNG, JPEG, BMP, TIFF, WebP, DICOM)"


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    mask: Path | None = None                        # class-0 mask (masks/0/) or the label image (labels/)
    more_masks: tuple[Path | None, ...] = ()        # masks/1/, masks/2/, ... of a multi-class dataset
    label_image: bool = False                       # `mask` is a label image (pixel value = class)
    frame: int | None = None                        # 0-based frame of a multi-frame DICOM object

    @property
    def class_masks(self) -> tuple[Path | None, ...]:
        """Per-class mask files in class order (one entry per masks/<k>/ folder)."""
        return () if self.label_image else (self.mask, *self.more_masks)


def _images_in(folder: Path) -> list[Path]:
    """Image files by suffix (DICOM files also by their preamble); a broken symbolic link (dangling
    or a loop) with an image suffix is kept, so that it is reported as unreadable instead of silently
    dropped."""
    def wanted(p: Path) -> bool:
        if p.name.startswith("."):          # hidden files (macOS ._name AppleDouble, .DS_Store) are not inputs
            return False
        if p.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES:
            return p.is_file() or (p.is_symlink() and not p.exists())
        return _dicom_by_preamble(p)
    return sorted(p for p in folder.iterdir() if wanted(p))


def _dicom_by_preamble(path: Path) -> bool:
    """A file without an image suffix that is DICOM by its preamble (UID-named files such as
    '1.2.826.0.1.3680043.8.498.1', 'scan.IMA', or none at all)."""
    return path.suffix.lower() not in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file() \
        and dicom.is_dicom_file(path)


def sample_name(path: Path) -> str:
    """A sample's name: the file's stem, or its whole name when its suffix is not an image or DICOM
    suffix (UID-named DICOM files of one series differ only in what the stem would drop)."""
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES else path.name


def frame_samples(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Sample]:
    """The samples of one image file: one per frame for a usable multi-frame DICOM object, else one."""
    name = sample_name(path)
    if not dicom.is_dicom_file(path):
        return [Sample(name, path)]
    try:
        frames = dicom.check_header(dicom.read_header(path), path, max_pixels)
    except (dicom.DicomError, MissingDependencyError):
        return [Sample(name, path)]          # reading it reports the reason, once per file
    if frames == 1:
        return [Sample(name, path, frame=0)]
    return [Sample(f"{name}_frame{k + 1:04d}", path, frame=k) for k in range(frames)]


def _expand(paths: list[Path], max_pixels: int | None) -> list[Sample]:
    return [s for p in paths for s in frame_samples(p, max_pixels)]


def not_read_reason(path: Path) -> str | None:
    """Why a file is not read as an image (None for an image suffix, a DICOM suffix or an
    extensionless file with the DICOM preamble: those are read, and a failure is reported then)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES + DICOM_SUFFIXES or _dicom_by_preamble(path):
        return None
    return NOT_READ.get(suffix, OTHER_FILE)


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
        if p.name.startswith(".") or p.is_dir():
            continue
        reason = (not_read_reason(p) if p.is_file() else f"{SPECIAL_FILE}: not read" if p.exists()
                  else _broken_link_reason(p))
        if reason:
            out.append({"path": str(p), "error": f"{p}: not processed: {reason}"})
    return out


def _broken_link_reason(p: Path) -> str | None:
    """A symbolic link whose target is gone: reported here unless its name is an image's (the image
    job then reports it when it cannot read it)."""
    if not p.is_symlink() or p.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES:
        return None
    return BROKEN_LINK


def subfolder_notes(source: str | Path, split: str | Path | None = None) -> list[str]:
    """Sub-folders of a plain SOURCE folder that hold images, as notes: the job reads one folder
    level, so their images are not inputs, but a user who pointed at a study folder should hear of
    them instead of finding them silently left out (hidden folders aside)."""
    source = Path(source)
    if split is not None or not source.is_dir() or is_official_layout(source):
        return []
    notes = []
    for sub in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            n = len(_images_in(sub))
        except OSError:                     # an unreadable sub-folder: not ours to report further
            continue
        if n:
            notes.append(f"sub-folder {sub} holds {n} image file(s), not read: a folder is read one level "
                         f"deep; give {sub} as its own input to segment them")
    return notes


# image files that may hold several images, read as their first one: suffix -> what the others are
MULTI_IMAGE_SUFFIXES = {".tif": "pages", ".tiff": "pages", ".webp": "frames", ".png": "frames"}


def image_count(path: Path) -> int:
    """How many images (TIFF pages, animated WebP or PNG frames) a file holds, from its headers (1 when
    it cannot tell: reading the file reports that). OpenCV's own log lines are silenced meanwhile."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with opencv_path(path) as name:
            return max(1, int(cv2.imcount(name)))
    except (cv2.error, OSError):
        return 1
    finally:
        cv2.utils.logging.setLogLevel(level)


def unread_pages(samples: list[Sample]) -> list[dict]:
    """Pages or frames after the first of multi-page TIFF and animated WebP/PNG files, as {"path",
    "error"}: an image file is read as its first image (a multi-frame DICOM object, or a video, is how
    several frames go in), so the others are inputs not processed, and reported."""
    out = []
    for s in samples:
        what = MULTI_IMAGE_SUFFIXES.get(s.image.suffix.lower())
        if what and s.image.is_file() and (n := image_count(s.image)) > 1:
            out.append({"path": str(s.image), "error": f"{s.image}: {what} 2-{n} of {n} not processed: the file is "
                                                       f"read as its first image; save each as its own file"})
    return out


def is_official_layout(folder: Path) -> bool:
    return (folder / "images").is_dir()


def read_name_list(path: str | Path) -> list[str]:
    """Names from a text file (one per line, '#' comments) or a training split.json ('val' list)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"split file {path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        text = path.read_text().removeprefix("\ufeff")    # a byte-order mark (Windows Notepad's UTF-8) is no name
        data = loads_json(text) if path.suffix == ".json" else None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"split file {path}: not readable as {'JSON' if path.suffix == '.json' else 'text'} "
                         f"({exc})") from None
    if path.suffix == ".json":
        if not isinstance(data, dict) or not isinstance(data.get("val"), list):
            raise ValueError(f"split file {path}: a split JSON needs a 'val' list of names")
        names = [str(n) for n in data["val"]]
    else:
        names = [n for n in (line.strip() for line in text.splitlines()) if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"split file {path}: names no image")
    counts = Counter(names)
    repeated = sorted(n for n, k in counts.items() if k > 1)
    if repeated:      # a name listed 49 times is one image: counted 49 times it would fake a tail claim
        raise ValueError(f"split file {path}: names {len(repeated)} image(s) more than once (e.g. {repeated[0]!r} "
                         f"{counts[repeated[0]]} times); list each image once")
    return names


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


def _by_name(named, what: str) -> dict[str, Path]:
    """{name: file} of (name, file) pairs matched by name (images by sample name, ground truth by
    file stem); two files with one name cannot be told apart: ValueError naming both (one was
    scored against the other's mask, or one mask taken silently)."""
    found: dict[str, Path] = {}
    for name, p in named:
        if found.setdefault(name, p) != p:
            raise ValueError(f"{found[name]} and {p.name} are both {what} {name!r}: ground truth is "
                             f"matched to images by name, so keep one (or rename one)")
    return found


def _stems(files: list[Path]):
    return ((p.stem, p) for p in files)


def _attach_truth(source: Path, images: list[Sample]) -> list[Sample]:
    """Samples with their per-class masks (masks/<k>/) or label images (labels/), found by sample name."""
    folders, labels = class_mask_folders(source), source / "labels"
    if folders and labels.is_dir():
        raise ValueError(f"{source}: has both masks/ and labels/; keep one ground-truth layout")
    _by_name(((s.name, s.image) for s in images), "images named")
    if labels.is_dir():
        found = _by_name(_stems(_images_in(labels)), "label images of")
        return [replace(s, mask=found.get(s.name), label_image=s.name in found) for s in images]
    per_class = [_by_name(_stems(_images_in(f)), "masks of") for f in folders]
    samples = []
    for s in images:
        paths = [m.get(s.name) for m in per_class]
        samples.append(replace(s, mask=paths[0] if paths else None, more_masks=tuple(paths[1:])))
    return samples


def truth_notes(source: str | Path, samples: list[Sample]) -> list[str]:
    """What looks wrong with an official-layout dataset's ground truth, as notes (none for a plain
    folder): masks directly in masks/ (not masks/0/), BUSI's original `<name>_mask` file names, an
    empty mask folder, masks that match no image. Each would otherwise give "no ground truth"
    without a word."""
    source = Path(source)
    masks = source / "masks"
    if not is_official_layout(source) or not masks.is_dir():
        return []
    notes = []
    loose = _images_in(masks)
    if loose:
        notes.append(f"{masks} holds {len(loose)} mask file(s) directly (e.g. {loose[0].name!r}); the official "
                     f"layout keeps one class's masks in {masks / '0'}/: move them there")
    names = {s.name for s in samples}
    for folder in class_mask_folders(source):
        files = _images_in(folder)
        orphans = [p for p in files if p.stem not in names]
        if not files:
            notes.append(f"{folder} is empty: no ground truth")
        elif len(orphans) == len(files) and all(p.stem.endswith("_mask") for p in files):
            notes.append(f"{folder}: mask names end in '_mask' (BUSI's original naming, e.g. {files[0].name!r}); "
                         f"masks are matched by name: name each mask as its image ({files[0].stem[:-5]!r})")
        elif orphans:
            notes.append(f"{folder}: {len(orphans)} mask(s) match no image in images/ (e.g. {orphans[0].name!r}) "
                         f"and are not used")
    return notes


def discover(source: str | Path, split: str | Path | None = None,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Sample]:
    """All samples under SOURCE, sorted by name; masks attached where the layout has them.
    `max_pixels` decides which multi-frame DICOM objects are expanded into their frames (one too
    large stays one sample, refused once when read)."""
    source = Path(source)
    if source.is_file():
        if dicom.is_dicom_file(source):
            try:
                dicom.pydicom()
            except MissingDependencyError as exc:    # nothing can be done: one line, exit 2
                raise ValueError(f"{source}: a DICOM file: {exc}") from None
        if source.suffix.lower() in VIDEO_SUFFIXES:      # NOT_READ's line is about a video beside images
            raise ValueError(f"{source}: a video: only cmunext-predict reads video; here give images (an image "
                             f"file, a folder of images or an official-layout dataset)")
        if source.suffix.lower() in NOT_READ:
            raise ValueError(f"{source}: {NOT_READ[source.suffix.lower()]}")
        return frame_samples(source, max_pixels)
    if not_a_file(source) == SPECIAL_FILE:               # a FIFO, socket or device (e.g. /dev/zero)
        raise ValueError(f"{source}: {SPECIAL_FILE}: not read; give an image file or a folder")
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if not is_official_layout(source):
        if split is not None:
            raise ValueError(f"--split needs an official-layout dataset (images/, masks/0/); {source} is a plain folder")
        return _expand(_images_in(source), max_pixels)
    samples = _attach_truth(source, _expand(_images_in(source / "images"), max_pixels))
    if split is not None:
        wanted = read_name_list(split)
        by_name = {s.name: s for s in samples}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            suffixed = [n for n in unknown if Path(n).suffix and Path(n).stem in by_name]
            raise ValueError(f"{split}: {len(unknown)} name(s) have no image in {source / 'images'}, "
                             f"e.g. {unknown[:3]}" + ("; give names without their file extension "
                                                      f"({Path(suffixed[0]).stem!r}, not {suffixed[0]!r})"
                                                      if suffixed else ""))
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


def source_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """seeded_split over source files, not frames: the frames of one multi-frame DICOM object (a cine
    loop's near-identical neighbours) all go to one side, so validation never scores a frame whose
    neighbour trained the model. Single images are their own group (the split of a dataset without
    multi-frame objects is seeded_split's); the fraction counts sources."""
    groups: dict[str, list[str]] = {}
    first: dict[Path, str] = {}
    for s in sorted(samples, key=lambda s: (s.name, s.frame or 0)):
        key = s.name if s.frame is None else first.setdefault(s.image, s.name)
        groups.setdefault(key, []).append(s.name)
    train, val = seeded_split(list(groups), val_fraction, seed)
    return (sorted(n for k in train for n in groups[k]), sorted(n for k in val for n in groups[k]))
