"""Calibration (and verification) images: a seeded, deterministic sample of a folder or an
official-layout dataset, preprocessed with the same PreprocessSpec the runtime uses.

Everything is loaded and preprocessed up front, so that an unreadable image fails the export
before any artifact is written. Adapters to NNCF / ONNX Runtime / TensorRT live beside each
target; this module only yields NCHW float32 arrays.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cmunext_edge.data.discovery import Sample, discover, seeded_sample
from cmunext_edge.data.fingerprint import image_fingerprint
from cmunext_edge.fileio import sha256_file
from cmunext_edge.data.groundtruth import classes_check, load_truth
from cmunext_edge.data.model_split import split_lists
from cmunext_edge.core.preprocess import ImageReadError, PreprocessSpec, load_image, naming, to_bgr_uint8
from cmunext_edge.resources import SAMPLES_DIR, default_calibration_dir


class CalibrationError(ValueError):
    """A calibration or verification source that cannot be used; the message names the file."""


@dataclass
class CalibrationSet:
    source: str
    seed: int
    spec: PreprocessSpec
    samples: list[Sample]
    inputs: np.ndarray                     # N x C x H x W float32
    masks: list = field(default_factory=list)   # C x H x W bool at network size, or None per image
    sha256: str = ""
    plan: object = None                    # verify_data.VerifyPlan when it is a verification set
    overlap: dict = field(default_factory=dict)   # names shared with calibration / training (verification)
    fingerprints: dict = field(default_factory=dict)   # name -> pixel fingerprint (data/fingerprint.py)
    spared: list = field(default_factory=list)   # the model's validation images the source held, left out
    drawn: int | None = None               # how many were drawn, when these are a draw of them (subset())

    def __len__(self) -> int:
        return len(self.samples)

    def batches(self, batch_size: int = 1):
        for i in range(0, len(self.inputs), batch_size):
            yield self.inputs[i:i + batch_size]

    def manifest(self) -> dict:
        return {"source": self.source, "seed": self.seed, "size": len(self), "sha256": self.sha256,
                "files": [s.image.name for s in self.samples],
                **({"drawn": self.drawn} if self.drawn is not None else {})}

    def subset(self, n: int) -> CalibrationSet:
        """`n` of its images drawn again with its seed (seeded_sample: in name order) as a set of their
        own, hashed anew; `drawn` keeps how many were drawn (a target that calibrates on at most `n`
        images reads only these). Not its first `n` by name: names sort by class in an official-layout
        dataset ("benign (1)" ... "normal (9)"), so those would all be one class's images."""
        kept = seeded_sample(self.samples, n, self.seed)
        rows = [self.samples.index(s) for s in kept]
        return replace(self, samples=kept, inputs=self.inputs[rows], masks=[self.masks[i] for i in rows] if self.masks else [],
                       sha256=set_digest(self.spec, self.seed, kept), drawn=len(self),
                       fingerprints={s.name: self.fingerprints[s.name] for s in kept if s.name in self.fingerprints})


def check_classes(samples: list[Sample], num_classes: int, source) -> None:
    """A dataset whose ground truth has fewer classes than the model cannot score it: say so."""
    problem = classes_check(samples, num_classes, source, "calibration/verification ground truth")
    if problem:
        raise CalibrationError(problem)


def _spared(names: set, split) -> set:
    """The validation images of a model's `split` (its split.json) among `names`, when `names` holds
    others too: calibration leaves them out, so they stay held out for verification (empty without
    a split, or when the source holds nothing else)."""
    _, val, _ = split_lists(split)
    kept = names & set(val)
    return kept if len(kept) < len(names) else set()


def calibration_samples(source, size: int | None, seed: int, split=None) -> list[Sample]:
    """The images make_calibration_set(source, ..., size, seed, spare_validation_of=split) calibrates
    on, without decoding them: --target auto's accounting of its INT8 candidates' calibration images."""
    try:
        found = discover(Path(source) if source is not None else default_calibration_dir())
    except (FileNotFoundError, ValueError):
        return []
    spared = _spared({s.name for s in found}, split)
    return seeded_sample([s for s in found if s.name not in spared], size, seed)


def set_digest(spec: PreprocessSpec, seed: int, samples: list[Sample]) -> str:
    """The sha256 that names a set: its preprocessing, seed, and each image's name and file hash."""
    digest = hashlib.sha256(f"{spec.to_json()}|seed={seed}".encode())
    for s in samples:    # a non-UTF-8 file name: its bytes kept as such
        digest.update(f"|{s.name}:{sha256_file(s.image)}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def make_calibration_set(source: str | Path | None, spec: PreprocessSpec, size: int | None = 64,
                         seed: int = 0, num_classes: int = 1, truth: bool = True,
                         split: str | Path | None = None, exclude=(), spare_validation_of=None) -> CalibrationSet:
    """Sample `size` images (None: all) of `source` (default: resources.default_calibration_dir()) with `seed`,
    optionally from one split's list (a names file, or a training split.json: its "val" list); with
    `truth`, each image's ground truth is loaded as `num_classes` x H x W (groundtruth.load_truth),
    and a dataset with fewer classes than `num_classes` is a CalibrationError naming both.
    `exclude`: names left out (a verification set leaves out the calibration images);
    `spare_validation_of`: a model's split.json, whose validation images are left out when the
    source holds others (`spared`). The one loader of calibration, verification and evaluation sets."""
    source = Path(source) if source is not None else default_calibration_dir()
    try:
        samples = discover(source, split)
    except (FileNotFoundError, ValueError) as exc:
        raise CalibrationError(f"calibration/verification source: {exc}") from None
    spared = _spared({s.name for s in samples}, spare_validation_of)
    samples = [s for s in samples if s.name not in set(exclude) | spared]
    if not samples:
        raise CalibrationError(f"{source}: no images found (looked for images/ or image files)")
    if size is not None and size <= 0:
        raise CalibrationError(f"calibration size must be positive, got {size}")
    if truth:
        check_classes(samples, num_classes, source)
    samples = seeded_sample(samples, size, seed)
    inputs, masks, prints = [], [], {}
    for s in samples:
        try:
            image = load_image(s.image, frame=s.frame)
            bgr = to_bgr_uint8(image)
            inputs.append(spec.preprocess(bgr))
            prints[s.name] = image_fingerprint(bgr)     # decoded once: renamed and near copies are known by these
            masks.append(load_truth(s, num_classes, spec.size, image_hw=image.shape[:2]) if (truth and s.mask) else None)
        except (ImageReadError, ValueError) as exc:
            raise CalibrationError(f"calibration/verification image unusable: {naming(s.image, exc)} (remove or fix it: "
                                   f"a set that an export's gate relies on is never silently shrunk)") from None
    if split is not None and str(split).endswith(".json"):
        split = f"{split}:val"
    label = str(source) + (f" (split {split})" if split is not None else "")
    return CalibrationSet(label, seed, spec, samples, np.stack(inputs).astype(np.float32),
                          masks, set_digest(spec, seed, samples), fingerprints=prints, spared=sorted(spared))


def load_eval_set(data, split, spec, limit: int | None = None, seed: int = 0, num_classes: int = 1,
                  exclude=()):
    """Evaluation images of `--target auto` (make_calibration_set): `limit` of an official-layout
    dataset's (optionally one split's) images with their `num_classes` ground truth, the names in
    `exclude` (the calibration images) left out; without data, 64 bundled samples (one class: no
    ground truth for a model with several)."""
    if data is None:
        return make_calibration_set(SAMPLES_DIR, spec, limit or 64, seed, num_classes, truth=num_classes == 1)
    return make_calibration_set(data, spec, limit, seed, num_classes, split=split, exclude=exclude)
