"""Image fingerprints: the same picture under another name, or a near copy of it, is the same image.

An image's fingerprint has two parts. The exact one is the sha256 of its decoded pixels (BGR uint8 as
the model's preprocessing receives them, with their shape): renaming a file, re-compressing a lossless
one or editing its metadata keeps it. The look-alike one is a 64-bit perceptual hash (the signs of the
8x8 lowest DCT frequencies of the image shrunk to 32x32 gray, against their median): a resize, a lossy
re-encode, a slightly different crop or caliper marks move it by at most a few bits. Two images whose
look-alike hashes differ in at most NEAR_COPY_BITS bits are near copies. Measured on the 452 BUSI
training images (benchmarks/results/near_copies_2026-12-06.md): resized and JPEG-50 copies move 2 bits
or fewer; distinct scans differ in 12 or more, but BUSI holds many near copies of one scan (0-6 bits,
e.g. with and without calipers, or cropped a few pixels differently), and 26 of the shipped model's 90
validation images are near copies of its training images.

cmunext-train records both parts for its training images in split.json ("train_fingerprints",
"train_lookalikes"), and an export compares its verification images with them and with its
calibration images as well as by name, so neither a renamed nor a near copy of a training or
calibration image is taken for a held-out one."""
from __future__ import annotations

import hashlib

import numpy as np

FINGERPRINTS_KEY = "train_fingerprints"
LOOKALIKES_KEY = "train_lookalikes"
NEAR_COPY_BITS = 6          # at most this many of 64 bits apart: a near copy (module docstring)


def pixel_fingerprint(bgr: np.ndarray) -> str:
    """sha256 over the shape and bytes of a decoded image (BGR uint8)."""
    bgr = np.ascontiguousarray(bgr, dtype=np.uint8)
    return hashlib.sha256(repr(bgr.shape).encode() + bgr.tobytes()).hexdigest()


def lookalike_hash(bgr: np.ndarray) -> str:
    """64-bit perceptual hash (16 hex digits) of a decoded image (BGR uint8, or gray)."""
    import cv2
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    low = cv2.dct(cv2.resize(np.ascontiguousarray(gray, dtype=np.uint8), (32, 32),
                             interpolation=cv2.INTER_AREA).astype(np.float32))[:8, :8].flatten()
    return np.packbits(low > np.median(low[1:])).tobytes().hex()


def image_fingerprint(bgr: np.ndarray) -> str:
    """Both parts of an image's fingerprint: "<sha256 of the pixels>~<look-alike hash>"."""
    return f"{pixel_fingerprint(bgr)}~{lookalike_hash(bgr)}"


class Seen:
    """Images already seen (e.g. a model's training images), to tell whether another one is among them:
    the same pixels, or a near copy."""

    def __init__(self, exact=(), lookalikes=()):
        self.exact = set(exact)
        self.lookalikes = [int(h, 16) for h in lookalikes]

    @classmethod
    def of(cls, fingerprints) -> "Seen":
        """From image_fingerprint() values (a bare sha256 has no look-alike part)."""
        parts = [str(f).partition("~") for f in fingerprints]
        return cls([sha for sha, _, _ in parts], [look for _, _, look in parts if look])

    def __bool__(self) -> bool:
        return bool(self.exact or self.lookalikes)

    def __or__(self, other: "Seen") -> "Seen":
        both = Seen(self.exact | other.exact)
        both.lookalikes = self.lookalikes + other.lookalikes
        return both

    def lists(self) -> tuple[list, list]:
        """(sorted sha256s, sorted look-alike hashes): as split.json holds them."""
        return sorted(self.exact), sorted({f"{h:016x}" for h in self.lookalikes})

    def holds(self, fingerprint: str) -> bool:
        sha, _, look = str(fingerprint).partition("~")
        if sha in self.exact:
            return True
        if not look:
            return False
        mine = int(look, 16)
        return any((mine ^ other).bit_count() <= NEAR_COPY_BITS for other in self.lookalikes)


def sample_fingerprints(samples) -> dict[str, str]:
    """{sample name: fingerprint} of the samples whose image decodes (the others are left out:
    reading them reports why, where they are used)."""
    from cmunext_edge.core.preprocess import ImageReadError, load_image, to_bgr_uint8
    out = {}
    for s in samples:
        try:
            out[s.name] = image_fingerprint(to_bgr_uint8(load_image(s.image, frame=s.frame)))
        except (ImageReadError, ValueError, OSError):
            continue
    return out
