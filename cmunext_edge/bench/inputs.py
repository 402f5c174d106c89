"""What a bench row is fed and what it weighs: latency images and an artifact's files on disk.

Latency images come from the user (`--images`, any folder or official-layout dataset) or,
by default, from the BUSI samples bundled with the package (`resources.SAMPLES_DIR`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cmunext_edge.artifacts.kinds import artifact_files
from cmunext_edge.data.discovery import discover
from cmunext_edge.core.preprocess import ImageReadError, load_image, naming, to_bgr_uint8
from cmunext_edge.resources import SAMPLES_DIR


def load_images(folder: Path | None, limit: int, skipped: list | None = None) -> list[np.ndarray]:
    """Decoded BGR uint8 images (the first `limit` by name) for latency input; one that does not
    decode is reported on stderr, added to `skipped` and left out (none decodes: ValueError)."""
    folder = Path(folder) if folder is not None else SAMPLES_DIR
    samples = discover(folder)[:limit]
    if not samples:
        raise FileNotFoundError(f"{folder}: no images for latency input (pass a folder with --images)")
    images = []
    for s in samples:
        try:
            images.append(to_bgr_uint8(load_image(s.image, frame=s.frame)))
        except (ImageReadError, ValueError, OSError) as exc:
            report_skipped("latency image", naming(s.image, exc), skipped)
    if not images:
        raise ValueError(f"{folder}: none of its {len(samples)} latency images could be read")
    return images


def report_skipped(what: str, reason: str, skipped: list | None) -> None:
    """One stderr line for an input the bench leaves out, kept in `skipped` for the exit code."""
    print(f"cmunext-bench: skipped {what}: {reason}", file=sys.stderr)
    if skipped is not None:
        skipped.append(reason)


def artifact_bytes(path: Path) -> int:
    """Size on disk of an artifact with its companions (OpenVINO .bin, ONNX external data, sidecars)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    companions = {*artifact_files(path), path.with_name(path.name + ".data"), path.with_suffix(".data")}
    return sum(p.stat().st_size for p in companions if p.is_file())
