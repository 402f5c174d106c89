"""A model's own split (split.json): which images trained it and which validated it.

cmunext-train writes split.json beside its checkpoint (the training and validation names and the
training images' pixel fingerprints, data/fingerprint.py); a shipped model carries
models/<name>.split.json. An export verifies on the validation images; a device bundle picks its
verification images outside the training images."""
from __future__ import annotations

from pathlib import Path

from cmunext_edge.data.fingerprint import FINGERPRINTS_KEY, LOOKALIKES_KEY, Seen
from cmunext_edge.resources import models_dir, run_split, shipped_model_name
from cmunext_edge.fileio import loads_json


def model_split(weights: str | Path | None, sha256: str | None) -> Path | None:
    """The model's split: a shipped model's `models/<name>.split.json`, else `split.json` beside a
    cmunext-train checkpoint `weights`; None when unknown."""
    shipped = shipped_model_name(sha256) if sha256 else None
    candidates = ([models_dir() / f"{shipped}.split.json"] if shipped else []) + \
        ([run_split(weights, sha256)[0]] if weights is not None else [])
    return next((path for path in candidates if path is not None and path.is_file()), None)


def split_lists(path: str | Path | None) -> tuple[list, list, Seen]:
    """(training names, validation names, the training images as fingerprints: exact and look-alike)
    of a split.json; empty when there is none or it cannot be read."""
    if path is None:
        return [], [], Seen()
    try:
        data = loads_json(Path(path).read_text())
        return (list(data.get("train") or []), list(data.get("val") or []),
                Seen([str(f) for f in data.get(FINGERPRINTS_KEY) or []],
                     [str(h) for h in data.get(LOOKALIKES_KEY) or []]))
    except (OSError, ValueError, AttributeError, TypeError):
        return [], [], Seen()


def training_images(samples, split: str | Path | None) -> set:
    """The names of `samples` that trained the model of `split` (its split.json): by name, and by
    fingerprint where it records them (a renamed copy, or a near copy, of a training image)."""
    from cmunext_edge.data.fingerprint import sample_fingerprints
    train, _, seen = split_lists(split)
    trained = {s.name for s in samples if s.name in set(train)}
    if seen:
        rest = [s for s in samples if s.name not in trained]
        trained |= {name for name, f in sample_fingerprints(rest).items() if seen.holds(f)}
    return trained
