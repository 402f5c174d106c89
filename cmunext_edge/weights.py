"""Safe checkpoint loading and saving.

`.pth`/`.pt` files are read with `torch.load(weights_only=True)`: a pickle that would
run code is refused, never executed. Wrappers `{"state_dict": ...}` / `{"model": ...}`
and DataParallel `module.` prefixes are accepted. The variant, input channels and class
count are detected from tensor shapes. `.safetensors` files are read and written with
their metadata (variant, channels, classes, preprocessing contract).
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._deps import require
from .fileio import atomic_path, sha256_file
from .model import VARIANTS, build_model, canonical_variant
from .preprocess import PreprocessSpec, get_preset

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


class CheckpointError(ValueError):
    """A file that cannot be used as CMUNeXt weights; the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    variant: str
    in_channels: int
    num_classes: int


def _sniff(path: Path) -> None:
    """Reject files that are neither a zip-format nor a legacy-pickle checkpoint, before unpickling."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint (incomplete zip archive)")
    elif not head.startswith(b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle; "
                              f"starts with {head!r})")


def _unpickling_detail(msg: str) -> str:
    found = re.search(r"^.*(?:unsupported|Unsupported).*$", msg.split("\n", 1)[-1], re.M)
    return found.group(0).strip() if found else msg.splitlines()[0]


def _torch_load(path: Path):
    torch = require("torch")
    _sniff(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file contains objects other than tensors and "
            f"plain containers (it would run code on load). Re-save it as a plain state dict or "
            f".safetensors. Detail: {_unpickling_detail(str(exc))}") from None
    except (EOFError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({exc})") from None
    except RuntimeError as exc:
        msg = str(exc)
        if "zip archive" in msg or "central directory" in msg or "file_read" in msg:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({msg.splitlines()[0]})") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({msg.splitlines()[0]})") from None
    except Exception as exc:  # legacy pickle of random bytes etc.
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def unwrap_state_dict(obj) -> dict:
    """Strip training wrappers and `module.` prefixes; return a flat name -> tensor dict."""
    torch = require("torch")
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("not a state dict: expected a mapping of parameter names to tensors "
                              f"(optionally under one of {WRAPPER_KEYS})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def detect_model_info(state_dict: dict) -> ModelInfo:
    """Variant, input channels and classes from tensor shapes; error lists the mismatches."""
    stem, head = state_dict.get("stem.conv.0.weight"), state_dict.get("Conv_1x1.weight")
    if stem is None or head is None:
        missing = [k for k in ("stem.conv.0.weight", "Conv_1x1.weight") if k not in state_dict]
        raise CheckpointError(
            "not a CMUNeXt checkpoint: missing keys " + ", ".join(missing)
            + f"; first keys found: {', '.join(list(state_dict)[:5])}")
    in_ch, classes = int(stem.shape[1]), int(head.shape[0])
    best = None
    for name in VARIANTS:
        expected = {k: tuple(v.shape) for k, v in _reference_shapes(name, in_ch, classes).items()}
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {expected[k]}"
                  for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
        if not (missing or unexpected or shapes):
            return ModelInfo(name, in_ch, classes)
        score = len(missing) + len(unexpected) + len(shapes)
        if best is None or score < best[0]:
            best = (score, name, missing, unexpected, shapes)
    _, name, missing, unexpected, shapes = best
    lines = [f"weights match no CMUNeXt variant; closest is {name}:"]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            lines.append(f"  {label} ({len(items)}): " + "; ".join(items[:8])
                         + (" ..." if len(items) > 8 else ""))
    raise CheckpointError("\n".join(lines))


_SHAPE_CACHE: dict = {}


def _reference_shapes(variant: str, in_ch: int, classes: int) -> dict:
    key = (variant, in_ch, classes)
    if key not in _SHAPE_CACHE:
        torch = require("torch")
        with torch.device("meta"):
            _SHAPE_CACHE[key] = build_model(variant, in_ch, classes).state_dict()
    return _SHAPE_CACHE[key]


@dataclass
class Checkpoint:
    state_dict: dict
    info: ModelInfo
    spec: PreprocessSpec
    path: Path
    sha256: str

    def build(self):
        """A CMUNeXt in eval mode with these weights loaded strictly."""
        model = build_model(self.info.variant, self.info.in_channels, self.info.num_classes)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    spec = get_preset("official")
    if path.suffix == ".safetensors":
        state_dict, meta = _load_safetensors(path)
        if "preprocess" in meta:
            spec = PreprocessSpec.from_json(meta["preprocess"])
    else:
        state_dict = unwrap_state_dict(_torch_load(path))
    try:
        info = detect_model_info(state_dict)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return Checkpoint(state_dict, info, spec, path, sha256_file(path))


def _load_safetensors(path: Path):
    st = require("safetensors.torch")
    safe_open = require("safetensors").safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        return st.load_file(str(path)), meta
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc})") from None


def save_safetensors(model_or_sd, path: str | Path, spec: PreprocessSpec | None = None,
                     extra: dict | None = None) -> Path:
    st = require("safetensors.torch")
    state_dict = model_or_sd.state_dict() if hasattr(model_or_sd, "state_dict") else model_or_sd
    info = detect_model_info(state_dict)
    meta = {"format": "cmunext-edge", "variant": info.variant, "in_channels": str(info.in_channels),
            "num_classes": str(info.num_classes),
            "preprocess": (spec or get_preset("official")).to_json()}
    meta.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in (extra or {}).items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def save_official_pth(model_or_sd, path: str | Path) -> Path:
    """Plain `torch.save(state_dict)`, exactly what the official training script writes."""
    torch = require("torch")
    state_dict = model_or_sd.state_dict() if hasattr(model_or_sd, "state_dict") else model_or_sd
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    return Path(path)


def model_from_name(variant: str, in_channels: int = 3, num_classes: int = 1):
    return build_model(canonical_variant(variant), in_channels, num_classes)
