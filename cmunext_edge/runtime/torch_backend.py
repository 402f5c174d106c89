"""PyTorch backend: checkpoints (.pth/.pt/.safetensors) on CPU or CUDA, fp32/fp16/bf16."""
from __future__ import annotations

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.checkpoints.weights import load_checkpoint
from cmunext_edge.runtime.base import Backend


class TorchBackend(Backend):
    name = "pytorch"
    dynamic_spatial = True
    _DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

    def _load(self) -> None:
        torch = self.torch = require("torch")
        ckpt = load_checkpoint(self.path)
        self.checkpoint, self.spec, self.num_classes = ckpt, ckpt.spec, ckpt.info.num_classes
        self.metadata = {"variant": ckpt.info.variant, "sha256": ckpt.sha256}
        self.input_shape = (None, ckpt.info.in_channels, self.spec.height, self.spec.width)
        device = self.requested_device.lower()
        if device.startswith("cuda") or device == "gpu":
            device = "cuda" if device == "gpu" else device
            if not torch.cuda.is_available():
                self._fallback("cpu", "torch.cuda.is_available() is False")
                device = "cpu"
        elif device != "cpu":
            self._fallback("cpu", f"PyTorch backend has no device {device!r}")
            device = "cpu"
        self.device = device
        precision = self.options.get("precision") or "fp32"
        if precision not in self._DTYPES:
            raise ValueError(f"pytorch precision must be one of {list(self._DTYPES)}, got {precision!r}")
        if precision == "fp16" and device == "cpu":
            self._fallback_precision("fp32", "fp16 convolutions are not supported well on CPU")
            precision = "fp32"
        self.precision = precision
        self.dtype = getattr(torch, self._DTYPES[precision])
        self.model = ckpt.build().to(device=device, dtype=self.dtype)
        if self.options.get("channels_last"):
            self.model = self.model.to(memory_format=torch.channels_last)

    def _fallback_precision(self, actual: str, reason: str) -> None:
        self.fallback_reason = f"requested precision {self.options.get('precision')}, ran {actual}: {reason}"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, dtype=self.dtype)
            if self.options.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).float().cpu().numpy()

    def _close(self) -> None:
        self.model = None

    @classmethod
    def list_devices(cls) -> list[str]:
        try:
            torch = require("torch")
        except ImportError:
            return []
        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
