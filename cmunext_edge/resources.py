"""Where the shipped model and the bundled sample images live, installed or in a checkout."""
from __future__ import annotations

import functools
import os
from pathlib import Path

from cmunext_edge.fileio import loads_json, sha256_file

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "cmunext-s-busi"
SAMPLES_DIR = PACKAGE_DIR / "samples" / "busi"
# the 64 of the shipped model's 90 validation images that are not near copies of training images,
# at network size (samples/busi-heldout/README.md)
HELDOUT_DIR = PACKAGE_DIR / "samples" / "busi-heldout"
# 64 of its training images at network size, the default INT8 calibration set (samples/busi-calib/README.md)
CALIB_DIR = PACKAGE_DIR / "samples" / "busi-calib"
# a checkpoint's file suffixes, lower case (the "checkpoint" row of artifacts/kinds.py reads them
# here); a suffix is compared case-blind everywhere: M.SAFETENSORS is a safetensors file
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def is_safetensors(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".safetensors"


def default_calibration_dir() -> Path:
    """The calibration images used when none are given: the shipped model's training images
    (CALIB_DIR), which leave every held-out image to verification; the bundled samples where
    an installation lacks them."""
    return CALIB_DIR if CALIB_DIR.is_dir() else SAMPLES_DIR


def models_dir() -> Path:
    """`models/` of the source tree (editable install) or `cmunext_edge/models` when installed."""
    for candidate in (PACKAGE_DIR.parent / "models", PACKAGE_DIR / "models"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no models/ folder found beside the package; reinstall cmunext-edge")


def shipped_models() -> dict[str, Path]:
    """Name -> weights file of every model shipped in models/."""
    try:
        folder = models_dir()
    except FileNotFoundError:
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"))}


def resolve_weights(name_or_path: str | Path | None) -> Path:
    """A path stays a path; a shipped model's name (or None: the default) becomes its file."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"weights must be a file path or a shipped model name ({', '.join(shipped_models())}), "
                        f"got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    if path.exists() or path.is_symlink() or path.suffix:       # a broken link is a path, named as one
        return path
    models = shipped_models()
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    if not models:      # a device bundle's environment: its wheel carries no model of its own
        raise FileNotFoundError(f"{name_or_path!r} is neither a file nor a shipped model, and this install "
                                f"ships no model (a device bundle's environment, for example): pass the "
                                f"artifact to run (--weights FILE; a bundle's is in its folder)")
    raise FileNotFoundError(f"{name_or_path!r} is neither a file nor a shipped model "
                            f"(shipped: {', '.join(models)})")


def shipped_model_name(sha256: str) -> str | None:
    """The shipped model (models/) whose weights file has this sha256, if any."""
    try:
        folder = models_dir()
    except FileNotFoundError:
        return None
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            st = path.stat()
            if _file_digest(str(path), st.st_mtime_ns, st.st_size) == sha256:
                return path.stem
    return None


@functools.lru_cache(maxsize=32)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a shipped file, hashed once per process while it is unchanged (shipped_model_name is
    asked by the export, its verification plan and its size note for one checkpoint)."""
    from cmunext_edge.fileio import sha256_file
    return sha256_file(path)


SPLIT_CHECKPOINTS_KEY = "checkpoints"    # split.json: file name -> sha256 of the checkpoints its run wrote


def run_split(weights: str | Path, sha256: str | None = None) -> tuple[Path | None, str | None]:
    """The split.json of the cmunext-train run that wrote the checkpoint `weights` (it lies beside it),
    and why one lying there is not used: a split.json that records its run's checkpoints and does not
    list this one belongs to another run (a checkpoint copied beside another run's files); its input
    size and its training and validation lists are not this model's. -> (path or None, note or None)."""
    path = Path(weights).parent / "split.json"
    if not path.is_file():
        return None, None
    try:
        recorded = loads_json(path.read_text()).get(SPLIT_CHECKPOINTS_KEY)
    except (OSError, ValueError, AttributeError):
        return path, None
    if isinstance(recorded, dict) and recorded:
        try:
            digest = sha256 or sha256_file(weights)
        except OSError:
            return path, None
        if digest not in recorded.values():
            return None, (f"{path} belongs to another cmunext-train run (it lists its checkpoints, not "
                          f"{Path(weights).name}): not used (input size, training and validation lists)")
    return path, None
