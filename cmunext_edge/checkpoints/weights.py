"""Safe checkpoint loading and saving.

`.pth`/`.pt` files are read with `torch.load(weights_only=True)`: a pickle that would
run code is refused, never executed. Wrappers `{"state_dict": ...}` / `{"model": ...}`
and DataParallel `module.` prefixes are accepted. The variant, input channels and class
count are detected from tensor shapes. `.safetensors` files are read and written with
their metadata (variant, channels, classes, preprocessing contract).

torch is imported only by the functions that make tensors (`load_checkpoint`, the savers);
`inspect_checkpoint` needs no torch: it reads a .safetensors header, or a .pth with the
restricted unpickler of `pth_reader`.

Weights are checked at load: a checkpoint holding NaN or infinite values (a diverged training
run, a damaged file) is refused with CheckpointError naming the first tensor, instead of
predicting empty masks. Every path that builds a model from weights (prediction, export,
fine-tuning, serving) loads through `load_checkpoint`, so export refuses it too.
"""
from __future__ import annotations

import errno
import json
import pickle
import re
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.capabilities import MAX_SIDE
from cmunext_edge.checkpoints.inspect import (
    CheckpointError, ModelInfo, Shapes, detect_model_info, read_safetensors_header, shapes_of, unwrap_tensors)
from cmunext_edge.core.complexity import Complexity, variant_complexity
from cmunext_edge.fileio import atomic_path, not_a_file, sha256_file, loads_json
from cmunext_edge.core.preprocess import PreprocessSpec, get_preset
from cmunext_edge.resources import is_safetensors, run_split, shipped_model_name
from cmunext_edge.checkpoints.pth_reader import TensorStub, read_pth


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


@contextmanager
def _unpickling(path: Path):
    """Turn every way unpickling a checkpoint can fail into one CheckpointError that says why."""
    try:
        yield
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


def _torch_load(path: Path):
    torch = require("torch")
    _sniff(path)
    with _unpickling(path), warnings.catch_warnings():
        # torch warns about the pickle protocol of a legacy file on the way to refusing or reading it;
        # the refusal (or the weights) is the whole story
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def _pth_shapes(path: Path) -> Shapes:
    """Shapes of a .pth/.pt state dict read by the torch-free restricted unpickler."""
    _sniff(path)
    with _unpickling(path):
        obj = read_pth(path)
    return shapes_of(unwrap_tensors(obj, lambda v: isinstance(v, TensorStub)))


def unwrap_state_dict(obj) -> dict:
    """Strip training wrappers and `module.` prefixes; return a flat name -> tensor dict."""
    torch = require("torch")
    return unwrap_tensors(obj, lambda v: isinstance(v, torch.Tensor))


@dataclass
class Checkpoint:
    state_dict: dict
    info: ModelInfo
    spec: PreprocessSpec
    path: Path
    sha256: str

    def build(self):
        """A CMUNeXt in eval mode with these weights loaded strictly."""
        from cmunext_edge.core.model import build_model
        model = build_model(self.info.variant, self.info.in_channels, self.info.num_classes)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


@dataclass(frozen=True)
class CheckpointSummary:
    """What `inspect_checkpoint` finds without loading tensors."""
    info: ModelInfo
    spec: PreprocessSpec
    path: Path
    sha256: str
    shapes: Shapes


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        what = not_a_file(path)
        raise CheckpointError(f"{path}: " + (f"{what}, not a checkpoint file" if what else "no such file"))
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    return path


def _spec_from(meta: dict) -> PreprocessSpec:
    return PreprocessSpec.from_json(meta["preprocess"]) if "preprocess" in meta else get_preset("official")


def _pth_spec(path: Path) -> PreprocessSpec:
    """A .pth holds weights only: the official preprocessing, at the input size of the cmunext-train
    run it came from when the split.json beside it records one (a run trained at 320 x 320 is
    exported and run at 320, not at the official 256)."""
    spec = get_preset("official")
    split = run_split(path)[0]
    try:
        size = loads_json(split.read_text()).get("img_size") if split is not None else None
    except (OSError, ValueError, AttributeError):
        return spec
    return spec.with_size(size) if isinstance(size, int) and 16 <= size <= MAX_SIDE and size % 16 == 0 else spec


def assumed_size_note(path, sha256: str | None = None) -> str | None:
    """What a .pth's preprocessing rests on when no split.json of its run lies beside it (it holds
    weights only: the official input size is assumed), else None (a .safetensors, a shipped model)."""
    path = Path(path)
    if is_safetensors(path) or run_split(path, sha256)[0] is not None or \
            shipped_model_name(sha256 or sha256_file(path)):
        return None
    size = get_preset("official").height
    return (f"{path.name} holds weights only and no split.json of its cmunext-train run lies beside it: the "
            f"official {size}x{size} input is assumed (a run trained at another size: keep its split.json beside "
            f"it, or export its best.safetensors)")


def _detect(path: Path, state_dict: dict) -> ModelInfo:
    try:
        return detect_model_info(state_dict)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _read_weights(path: Path, shapes_only: bool) -> tuple[dict, PreprocessSpec]:
    """(name -> tensor, or name -> shape with `shapes_only`: no torch needed; the preprocessing
    contract) of a checkpoint file: a .safetensors by its header, a .pth/.pt by the safe loader."""
    if is_safetensors(path):
        found, meta = (read_safetensors_header if shapes_only else _load_safetensors)(path)
        return found, _spec_from(meta)
    return (_pth_shapes(path) if shapes_only else unwrap_state_dict(_torch_load(path))), _pth_spec(path)


def inspect_checkpoint(path: str | Path) -> CheckpointSummary:
    """Variant, channels, classes, preprocessing and shapes, from shapes alone: no torch needed."""
    path = _existing_file(path)
    shapes, spec = _read_weights(path, shapes_only=True)
    return CheckpointSummary(_detect(path, shapes), spec, path, sha256_file(path), shapes)


def check_finite(state_dict: dict, path: str | Path = "weights") -> None:
    """CheckpointError if any floating-point tensor holds NaN or infinite values."""
    torch = require("torch")
    bad = [(name, int((~torch.isfinite(t)).sum())) for name, t in state_dict.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        total = sum(n for _, n in bad)
        raise CheckpointError(f"{path}: {total} weight value(s) in {len(bad)} tensor(s) are NaN or infinite "
                              f"(first: {bad[0][0]}); such a model predicts nothing meaningful. Use an "
                              f"earlier checkpoint or retrain (e.g. with a lower --lr)")


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = _existing_file(path)
    state_dict, spec = _read_weights(path, shapes_only=False)
    info = _detect(path, state_dict)
    check_finite(state_dict, path)
    return Checkpoint(state_dict, info, spec, path, sha256_file(path))


def _load_safetensors(path: Path):
    _, meta = read_safetensors_header(path)
    st = require("safetensors.torch")
    try:
        return st.load_file(str(path)), meta
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc})") from None


@contextmanager
def checkpoint_write(path: str | Path):
    """atomic_path for a checkpoint writer: torch.save and safetensors report a failed write (a full
    disk) as RuntimeError / SafetensorError; they leave here as OSError naming the file (nothing is
    left at `path`)."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except OSError:
        raise
    except Exception as exc:
        if not (isinstance(exc, RuntimeError) or type(exc).__name__ == "SafetensorError"):
            raise
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise OSError(errno.EIO, f"cannot write {path} ({reason}; disk full or not writable?)") from None


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
    with checkpoint_write(path) as tmp:
        st.save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def save_official_pth(model_or_sd, path: str | Path) -> Path:
    """Plain `torch.save(state_dict)`, exactly what the official training script writes."""
    torch = require("torch")
    state_dict = model_or_sd.state_dict() if hasattr(model_or_sd, "state_dict") else model_or_sd
    with checkpoint_write(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    return Path(path)


def checkpoint_complexity(path, input_hw: tuple[int, int] | None = None) -> Complexity:
    """Complexity of the model in a checkpoint, at its preprocessing size unless given."""
    ckpt = inspect_checkpoint(path)
    hw = tuple(input_hw or ckpt.spec.size)
    return variant_complexity(ckpt.info.variant, hw, ckpt.info.in_channels, ckpt.info.num_classes)
