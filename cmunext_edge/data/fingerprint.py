"""Image fingerprints: the same picture under another name is the same image.

A fingerprint is the sha256 of an image's decoded pixels (BGR uint8 as the model's preprocessing
receives them, with their shape): renaming a file, re-compressing a lossless one or editing its
metadata keeps it; lossy re-encoding, resizing or cropping does not. cmunext-train records the
fingerprints of its training images in split.json ("train_fingerprints"), and an export compares
its verification images with them and with its calibration images by fingerprint as well as by
name, so a renamed training or calibration image is not taken for a held-out one."""
from __future__ import annotations

import hashlib

import numpy as np

FINGERPRINTS_KEY = "train_fingerprints"


def pixel_fingerprint(bgr: np.ndarray) -> str:
    """sha256 over the shape and bytes of a decoded image (BGR uint8)."""
    bgr = np.ascontiguousarray(bgr, dtype=np.uint8)
    return hashlib.sha256(repr(bgr.shape).encode() + bgr.tobytes()).hexdigest()


def sample_fingerprints(samples) -> dict[str, str]:
    """{sample name: fingerprint} of the samples whose image decodes (the others are left out:
    reading them reports why, where they are used)."""
    from cmunext_edge.core.preprocess import ImageReadError, load_image, to_bgr_uint8
    out = {}
    for s in samples:
        try:
            out[s.name] = pixel_fingerprint(to_bgr_uint8(load_image(s.image, frame=s.frame)))
        except (ImageReadError, ValueError, OSError):
            continue
    return out
