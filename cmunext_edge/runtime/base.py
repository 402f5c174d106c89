"""The one backend interface (shape after Polygraphy's runners).

Public methods check state and validate input; subclasses fill in
`_load`, `_infer` and `_close`. Every backend returns NCHW float32 logits and tells
which device and precision actually ran, so a fallback is never silent.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from cmunext_edge.core.preprocess import PreprocessSpec, get_preset


class BackendError(RuntimeError):
    """An artifact that cannot be loaded or run by its backend."""


class DeviceUnavailableError(BackendError):
    """The requested device is not present (raised with strict_device, else a fallback is reported)."""


class Backend(ABC):
    name = "backend"        # registry key, e.g. "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", strict_device: bool = False, **options):
        self.path = Path(path)
        self.requested_device = device
        self.strict_device = strict_device
        self.options = options
        self.device = device            # what actually runs; subclasses update on fallback
        self.precision = "fp32"         # what actually runs
        self.fallback_reason: str | None = None
        self.spec: PreprocessSpec = get_preset("official")
        self.metadata: dict = {}
        self.input_shape: tuple = (None, 3, self.spec.height, self.spec.width)
        self.num_classes = 1
        self.loaded = False
        self.verification = None        # integrity.VerifyReport, set by a verified open_backend
        self.signature: str | None = None   # trust-policy result or "unsigned" (open_backend)

    # --- public API --------------------------------------------------------------
    def load(self) -> "Backend":
        if not self.loaded:
            if not self.path.exists():
                raise BackendError(f"{self.path}: no such artifact")
            self._load()
            self.loaded = True
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 input -> NCHW float32 logits. Splits or pads to a static batch size."""
        if not self.loaded:
            raise BackendError(f"{self.name}: call load() before infer()")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        expected = self.input_shape
        if batch.ndim != 4 or batch.shape[1] != expected[1]:
            raise ValueError(f"{self.name}: expected input N x {expected[1]} x H x W, got {batch.shape}")
        if tuple(batch.shape[2:]) != tuple(expected[2:]) and not self.dynamic_spatial:
            raise ValueError(f"{self.name}: artifact expects spatial size {tuple(expected[2:])}, "
                             f"got {tuple(batch.shape[2:])}")
        fixed = expected[0]
        if isinstance(fixed, int) and fixed > 0 and batch.shape[0] != fixed:
            out = self._infer_static(batch, fixed)
        else:
            out = self._infer(batch)
        return np.asarray(out, dtype=np.float32)

    def _infer_static(self, batch: np.ndarray, fixed: int) -> np.ndarray:
        outs = []
        for i in range(0, batch.shape[0], fixed):
            chunk = batch[i:i + fixed]
            n = chunk.shape[0]
            if n < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), np.float32)])
            outs.append(self._infer(chunk)[:n])
        return np.concatenate(outs)

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()

    # --- helpers for subclasses ------------------------------------------------------
    dynamic_spatial = False

    def _fallback(self, actual: str, reason: str) -> None:
        """Record (or, with strict_device, refuse) running on another device than requested."""
        if self.strict_device:
            raise DeviceUnavailableError(f"{self.name}: device {self.requested_device!r} is not "
                                         f"available ({reason}); strict_device forbids falling back")
        self.device, self.fallback_reason = actual, f"requested {self.requested_device}, ran on {actual}: {reason}"

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "requested_device": self.requested_device,
                "precision": self.precision, "fallback": self.fallback_reason,
                "input_shape": list(self.input_shape), "artifact": str(self.path),
                "verified": self.verification.message() if self.verification else None,
                "signature": self.signature}

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:
        pass

    @classmethod
    def list_devices(cls) -> list[str]:
        """Devices this backend can use on this machine (empty if its library is missing)."""
        return ["cpu"]
