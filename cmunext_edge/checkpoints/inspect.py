"""What a checkpoint is, from tensor shapes alone: no torch needed.

A `.safetensors` file starts with an 8-byte little-endian header length and a JSON header
(name -> dtype, shape, offsets, plus `__metadata__`), so its shapes and metadata are read
with the standard library. The variant, input channels and class count are detected by
comparing shapes with `variants.state_shapes`. (`.pth` files: `pth_reader`.)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from cmunext_edge.core.variants import VARIANTS, Shapes, state_shapes
from cmunext_edge.fileio import loads_json

MAX_HEADER_BYTES = 100 * 2**20      # the safetensors reference reader's own limit
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


class CheckpointError(ValueError):
    """A file that cannot be used as CMUNeXt weights; the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    variant: str
    in_channels: int
    num_classes: int


def shapes_of(state_dict: dict) -> Shapes:
    """Name -> shape tuple of a state dict of tensors (or of a mapping that already holds shapes)."""
    return {k: tuple(getattr(v, "shape", v)) for k, v in state_dict.items()}


def unwrap_tensors(obj, is_tensor) -> dict:
    """Strip training wrappers and `module.` prefixes; return a flat name -> tensor dict.

    `is_tensor` tells a tensor (a torch.Tensor, or a shape-only stand-in) from anything else.
    """
    for _ in range(3):
        if isinstance(obj, dict) and not any(is_tensor(v) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(is_tensor(v) for v in obj.values()):
        raise CheckpointError("not a state dict: expected a mapping of parameter names to tensors "
                              f"(optionally under one of {WRAPPER_KEYS})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_safetensors_header(path: str | Path) -> tuple[Shapes, dict]:
    """(name -> shape, metadata) of a .safetensors file, read from its JSON header only."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER_BYTES, path.stat().st_size - 8):
                raise ValueError(f"header length {length} exceeds the file")
            header = loads_json(fh.read(length))
        meta = header.pop("__metadata__", None) or {}
        shapes = {name: tuple(int(n) for n in entry["shape"]) for name, entry in header.items()}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc})") from None
    return shapes, dict(meta)


def _mismatches(shapes: Shapes, expected: Shapes) -> tuple[list, list, list]:
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k}: checkpoint {shapes[k]} vs model {expected[k]}"
             for k in expected if k in shapes and shapes[k] != expected[k]]
    return missing, unexpected, wrong


def _no_match_error(name: str, missing: list, unexpected: list, wrong: list) -> CheckpointError:
    found = [f"{label} ({len(items)}): " + "; ".join(items[:8]) + (" ..." if len(items) > 8 else "")
             for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                  ("shape mismatches", wrong)) if items]
    return CheckpointError(f"weights match no CMUNeXt variant; closest is {name}: " + " | ".join(found))


def detect_model_info(state_dict: dict) -> ModelInfo:
    """Variant, input channels and classes from shapes (tensors or shape tuples); error lists the mismatches."""
    shapes = shapes_of(state_dict)
    stem, head = shapes.get("stem.conv.0.weight"), shapes.get("Conv_1x1.weight")
    if stem is None or head is None:
        missing = [k for k in ("stem.conv.0.weight", "Conv_1x1.weight") if k not in shapes]
        raise CheckpointError(
            "not a CMUNeXt checkpoint: missing keys " + ", ".join(missing)
            + f"; first keys found: {', '.join(list(shapes)[:5])}")
    in_ch, classes = int(stem[1]), int(head[0])
    best = None
    for name in VARIANTS:
        found = _mismatches(shapes, state_shapes(name, in_ch, classes))
        score = sum(len(items) for items in found)
        if score == 0:
            return ModelInfo(name, in_ch, classes)
        if best is None or score < best[0]:
            best = (score, name, found)
    raise _no_match_error(best[1], *best[2])
