"""EdgeSegmenter: the embedding API. One artifact, one device, images in, masks out.

Thread safety: `segment` and `segment_batch` may be called from several threads.
Pre- and post-processing run in the calling thread; calls into the backend are
serialised by a lock (one inference at a time per EdgeSegmenter). For parallel
inference, create one EdgeSegmenter per thread.

Verified load: an exported artifact is checked before its first inference (its files against
manifest.json or the embedded content hash, then its embedded self-test; see integrity.py);
a mismatch raises integrity.IntegrityError. `verify=False` skips this, for those who know why.
Trust policy: with `trusted_keys=[PUB.pem, ...]` (or $CMUNEXT_TRUSTED_KEYS) the artifact runs only
if its files carry a valid signature by one of those keys (artifacts/signing.py), checked before the
runtime reads them; `describe()["signature"]` says what was found ("unsigned" without a policy).
Image files are measured from their header before decoding and refused above `max_pixels`
(core.image_limits.DEFAULT_MAX_PIXELS by default; None for no limit); arrays above it are refused
too (their mask and probability at that size would take gigabytes).
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmunext_edge.capabilities import MAX_BATCH
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS
from cmunext_edge.core.preprocess import (ImageReadError, NonFiniteOutputError, is_image_source, load_image,
                                          to_bgr_uint8)
from cmunext_edge.resources import resolve_weights
from cmunext_edge.runtime.registry import open_backend


@dataclass
class Segmentation:
    mask: np.ndarray            # HxW bool at the original image size (HxWxC for several classes)
    probability: np.ndarray     # HxW float32 sigmoid probability at the original size (HxWxC for several classes)
    logits: np.ndarray          # CxHxW float32 at network size (what the official metric uses)
    timings: dict = field(default_factory=dict)   # preprocess_ms, infer_ms, postprocess_ms, total_ms
    source: str | None = None


class EdgeSegmenter:
    def __init__(self, artifact: str | Path | None = None, device: str = "cpu",
                 strict_device: bool = False, verify: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, trusted_keys=None, **backend_options):
        """`artifact`: a checkpoint, an exported artifact, a shipped model name, or None (default model).
        `verify`: check the artifact's hash and self-test before use; `max_pixels`: largest image
        (file decoded, or array) segmented; `trusted_keys`: public keys (PEM paths) the artifact must be signed by (default
        $CMUNEXT_TRUSTED_KEYS; none: no trust policy); `backend_options`: as declared for its backend
        (runtime.registry)."""
        self.max_pixels = _checked_max_pixels(max_pixels)
        path = resolve_weights(artifact)
        self.backend = open_backend(path, device=device, strict_device=strict_device, verify=verify,
                                    trusted_keys=trusted_keys, **backend_options)
        self.spec = self.backend.spec
        self._closed = False
        self.verification = getattr(self.backend, "verification", None)
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path=None, device: str = "cpu", **options) -> "EdgeSegmenter":
        return cls(path, device=device, **options)

    @classmethod
    def from_artifact(cls, path, device: str = "cpu", strict_device: bool = False,
                      verify: bool = True, **options) -> "EdgeSegmenter":
        if path is None:    # from_artifact(os.environ.get("MODEL")) unset would silently run the shipped checkpoint
            raise ValueError("from_artifact needs the artifact's path, got None (EdgeSegmenter() runs the shipped "
                             "model through PyTorch)")
        return cls(path, device=device, strict_device=strict_device, verify=verify, **options)

    # --- public API -----------------------------------------------------------------
    def segment(self, image, channel_order: str = "bgr") -> Segmentation:
        """One image (a path, a single-frame pydicom Dataset, or an array; arrays are BGR unless
        channel_order='rgb'). A multi-frame DICOM object goes through `segment_frames`."""
        return self.segment_batch([image], channel_order=channel_order, batch_size=1)[0]

    def segment_frames(self, dicom, batch_size: int = 8) -> list[Segmentation]:
        """Every frame of a DICOM file or pydicom Dataset (single- or multi-frame), in frame order."""
        from cmunext_edge._deps import MissingDependencyError
        from cmunext_edge.core.dicom import DicomError, read_frames
        dicom = _as_path(dicom)
        if not is_image_source(dicom):      # os.fspath's TypeError ("expected str, bytes or os.PathLike") else
            raise ImageReadError(f"segment_frames takes a DICOM file path or a pydicom Dataset, got "
                                 f"{type(dicom).__name__}" + ("; for an image array call segment()"
                                                              if isinstance(dicom, np.ndarray) else ""))
        _check_call(batch_size, "bgr")      # before reading (and decoding) every frame of the file
        self._check_open()
        try:
            frames = read_frames(dicom, self.max_pixels)
        except DicomError as exc:
            raise ImageReadError(str(exc)) from None
        except MissingDependencyError as exc:
            raise ImageReadError(f"DICOM input: {exc}") from None
        results = self.segment_batch(frames, batch_size=batch_size)
        for r in results:
            r.source = None if not isinstance(dicom, (str, Path)) else str(dicom)
        return results

    def segment_batch(self, images, channel_order: str = "bgr", batch_size: int = 8) -> list[Segmentation]:
        """Several images (a sequence of paths, Datasets or arrays, or an NxHxWxC array); they are
        inferred `batch_size` at a time."""
        images = _image_list(images)
        _check_call(batch_size, channel_order)
        self._check_open()
        results = []
        for start in range(0, len(images), batch_size):
            results += self._segment_chunk(images[start:start + batch_size], channel_order, start, len(images))
        return results

    def stream(self, source, batch_size: int = 1, max_frames: int | None = None):
        """Segment a video file, camera index (0, 1, ...) or stream URL frame by frame: a
        generator of (frame index, BGR frame, Segmentation); decoding runs on a background
        thread while frames are inferred (cmunext_edge.predict.video.stream). Arguments are checked
        here, when it is called, before a camera or file is opened."""
        from cmunext_edge.predict.video import stream
        source = _as_path(source)
        if not (isinstance(source, (str, Path)) or _whole_number(source, 0)):
            # else an array or None was opened as a video file named by its repr ("OpenCV cannot open ...")
            raise ValueError(f"stream takes a video file path, a camera index (0, 1, ...) or a stream URL, got "
                             f"{type(source).__name__} {source!r:.60}: for an image call segment()")
        _check_call(batch_size, "bgr")
        if max_frames is not None and not _whole_number(max_frames, 1):
            raise ValueError(f"max_frames must be a positive whole number or None (every frame), got {max_frames!r}")
        self._check_open()
        return stream(self, source, batch_size=batch_size, max_frames=max_frames)

    def describe(self) -> dict:
        """What runs (backend, device, precision, artifact, fallback, ...); "verified": the load
        checks; "export_verification": how the export verified the artifact against PyTorch (as
        cmunext-info says it; None for a checkpoint); `closed` once closed."""
        return {**self.backend.describe(), "export_verification": self._export_verification,
                **({"closed": True} if self._closed else {})}

    @functools.cached_property
    def _export_verification(self) -> str | None:
        """The export's verification record (manifest.json beside the artifact), read once."""
        from cmunext_edge.artifacts.info import export_verification_of
        return export_verification_of(self.backend.path)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this EdgeSegmenter was closed: create a new one")

    def self_test(self):
        """Run the artifact's embedded self-test on this device -> SelfTestResult (bool: passed).

        Compares the output for a fixed input with the digest stored at export time (mean mask
        Dice agreement and max pooled-logit delta); status "unavailable" for plain checkpoints.
        """
        from cmunext_edge.artifacts.meta import check_selftest
        with self._lock:
            self._check_open()
            result = check_selftest(self.backend.metadata.get("selftest"), self.spec, self.backend.infer,
                                    self.backend.precision)
        result.device, result.precision = self.backend.device, self.backend.precision
        return result

    def close(self) -> None:
        """Release the runtime; an inference running on another thread finishes first (the lock),
        and every later call is refused with "was closed"."""
        with self._lock:
            self._closed = True
            self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- internals --------------------------------------------------------------------
    def _check_array_size(self, image) -> None:
        """An array above max_pixels is refused like an image file above it (before any copy of it)."""
        shape = getattr(image, "shape", None)
        if self.max_pixels is not None and shape is not None and len(shape) >= 2 \
                and int(shape[0]) * int(shape[1]) > self.max_pixels:
            raise ImageReadError(f"array of {shape[1]}x{shape[0]} pixels is above the limit of {self.max_pixels} "
                                 f"(max_pixels; None for no limit)")

    def _to_bgr(self, img, channel_order, index: int, total: int) -> np.ndarray:
        """One input as BGR uint8; an array refused in a batch of several says which one it is
        (a file's error names its path already)."""
        if is_image_source(img):                       # a file path or a pydicom Dataset
            return to_bgr_uint8(load_image(img, self.max_pixels), "bgr")
        try:
            self._check_array_size(img)
            return to_bgr_uint8(img, channel_order)
        except ImageReadError as exc:
            if total == 1:
                raise
            raise ImageReadError(f"image {index} (0-based) of the {total}: {exc}") from None

    def _segment_chunk(self, images, channel_order, first: int = 0, total: int = 1):
        t0 = time.perf_counter()
        images = [_as_path(img) for img in images]
        bgrs = [self._to_bgr(img, channel_order, first + i, total) for i, img in enumerate(images)]
        sources = [str(img) if isinstance(img, (str, Path)) else None for img in images]
        batch = np.stack([self.spec.preprocess(b) for b in bgrs])
        t1 = time.perf_counter()
        with self._lock:
            self._check_open()          # closed by another thread while this one preprocessed
            logits = self.backend.infer(batch)
        t2 = time.perf_counter()
        bad = int((~np.isfinite(logits).reshape(len(logits), -1).all(axis=1)).sum())
        if bad:                         # a mask from NaN/inf logits would be silently empty or full
            raise NonFiniteOutputError(
                f"the model's output holds NaN or infinite values for {bad} of {len(logits)} image(s): no mask "
                f"made (its weights overflow or are broken; check the checkpoint it came from)")
        results = []
        for bgr, lg, src in zip(bgrs, logits, sources):
            prob, mask = self.spec.postprocess(lg, bgr.shape[:2])
            results.append(Segmentation(mask, prob, lg, source=src))
        t3 = time.perf_counter()
        n = len(results)
        for r in results:  # per-image share of the chunk's time
            r.timings = {"preprocess_ms": (t1 - t0) * 1e3 / n, "infer_ms": (t2 - t1) * 1e3 / n,
                         "postprocess_ms": (t3 - t2) * 1e3 / n, "total_ms": (t3 - t0) * 1e3 / n,
                         "batch_size": n}
        return results


def _as_path(obj):
    """An os.PathLike other than str/Path (PurePath, a custom __fspath__ object) as a Path, so that it is
    read as the image path it is; anything else unchanged."""
    if isinstance(obj, os.PathLike) and not isinstance(obj, Path):
        return Path(os.fsdecode(obj))
    return obj


def _whole_number(value, low: int, high: float = float("inf")) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and low <= value <= high


def _checked_max_pixels(max_pixels):
    """None (no limit) or a positive pixel count; anything else is a ValueError naming it."""
    if max_pixels is None:
        return None
    if not _whole_number(max_pixels, 1):
        raise ValueError(f"max_pixels must be a positive whole number of pixels or None (no limit), "
                         f"got {max_pixels!r}")
    return int(max_pixels)


def _check_call(batch_size, channel_order) -> None:
    if not _whole_number(batch_size, 1, MAX_BATCH):
        raise ValueError(f"batch_size must be a whole number from 1 to {MAX_BATCH}, got {batch_size!r}")
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")


def _image_list(images) -> list:
    """segment_batch's input as a list of images. One image (a path, a Dataset or a single HxW(xC)
    array) is refused rather than split into characters or pixel rows."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"segment_batch takes a sequence of images or an NxHxWxC array, got an array "
                             f"of shape {images.shape}: for one image call segment(), for a stack of gray "
                             "images pass a list or add a channel axis")
        return list(images)
    if isinstance(images, (str, bytes, os.PathLike)) or is_image_source(images):
        raise ValueError(f"segment_batch takes a sequence of images, got one ({images!r:.80}): "
                         "call segment() for one image")
    if isinstance(images, (Mapping, Set)):     # iterated, a dict gives its keys and a set no order
        raise ValueError(f"segment_batch takes a sequence of images (results come back in its order), got a "
                         f"{type(images).__name__}: pass a list, e.g. list(images.values()) or sorted(images)")
    try:
        return list(images)
    except TypeError:
        raise ValueError(f"segment_batch takes a sequence of images, got {type(images).__name__}") from None
