"""What a bench row is fed and what it weighs: latency images and an artifact's files on disk.

Latency images come from the user (`--images`, any folder or official-layout dataset) or,
by default, from the BUSI samples bundled with the package (`resources.SAMPLES_DIR`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmunext_edge.artifacts.kinds import artifact_files
from cmunext_edge.data.discovery import discover
from cmunext_edge.core.preprocess import load_image, to_bgr_uint8
from cmunext_edge.resources import SAMPLES_DIR


def load_images(folder: Path | None, limit: int) -> list[np.ndarray]:
    """Decoded BGR uint8 images (the first `limit` by name) for latency input."""
    folder = Path(folder) if folder is not None else SAMPLES_DIR
    samples = discover(folder)[:limit]
    if not samples:
        raise FileNotFoundError(f"{folder}: no images for latency input (pass a folder with --images)")
    return [to_bgr_uint8(load_image(s.image, frame=s.frame)) for s in samples]


def artifact_bytes(path: Path) -> int:
    """Size on disk of an artifact with its companions (OpenVINO .bin, ONNX external data, sidecars)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    companions = {*artifact_files(path), path.with_name(path.name + ".data"), path.with_suffix(".data")}
    return sum(p.stat().st_size for p in companions if p.is_file())
