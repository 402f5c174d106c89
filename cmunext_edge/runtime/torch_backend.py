"""PyTorch backend: checkpoints (.pth/.pt/.safetensors) on CPU or CUDA, fp32/fp16/bf16.

Options: `channels_last`; `fold_bn` (core/fold.py: exact, one pass less per folded BatchNorm);
`cuda_graphs` (CUDA only: the first call of each input shape captures the forward pass into a
CUDA graph, and later calls of that shape copy the input into its static buffer and replay it,
which removes the per-layer launch cost that dominates batch 1; on the CPU the option is
reported as a fallback and ignored); `threads`: PyTorch's intra-op thread count, which is
process-wide (torch.set_num_threads), set when the backend opens: the last segmenter opened with
it sets it for every PyTorch model of the process."""
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
        if self.options.get("threads"):      # process-wide (the docstring); it was accepted and ignored
            torch.set_num_threads(int(self.options["threads"]))
        precision = self.options.get("precision") or "fp32"
        if precision not in self._DTYPES:
            raise ValueError(f"pytorch precision must be one of {list(self._DTYPES)}, got {precision!r}")
        if precision == "fp16" and device == "cpu":
            self._fallback_precision("fp32", "fp16 convolutions are not supported well on CPU")
            precision = "fp32"
        self.precision = precision
        self.dtype = getattr(torch, self._DTYPES[precision])
        model = ckpt.build()
        if self.options.get("fold_bn"):
            from cmunext_edge.core.fold import fold_bn_into_next_conv
            model = fold_bn_into_next_conv(model)
        self.model = model.to(device=device, dtype=self.dtype)
        if self.options.get("channels_last"):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.graphs: dict | None = None
        if self.options.get("cuda_graphs"):
            if device.startswith("cuda"):
                self.graphs = {}
            else:
                self.fallback_reason = "; ".join(filter(None, (           # keep a precision fallback's reason
                    self.fallback_reason, "cuda_graphs needs a CUDA device: ran without graphs")))

    def _fallback_precision(self, actual: str, reason: str) -> None:
        self.fallback_reason = f"requested precision {self.options.get('precision')}, ran {actual}: {reason}"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, dtype=self.dtype)
            if self.options.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)
            if self.graphs is None:
                return self.model(x).float().cpu().numpy()
            graph, static_in, static_out = self._graph(tuple(x.shape), x)
            static_in.copy_(x)
            graph.replay()
            return static_out.float().cpu().numpy()

    def _graph(self, shape: tuple, example):
        """The captured (graph, input buffer, output buffer) for one input shape (warm-up on a
        side stream first, as torch.cuda.graphs documents)."""
        if shape not in self.graphs:
            torch = self.torch
            static_in = example.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            self.graphs[shape] = (graph, static_in, static_out)
        return self.graphs[shape]

    def _close(self) -> None:
        self.model, self.graphs = None, None

    @classmethod
    def list_devices(cls) -> list[str]:
        try:
            torch = require("torch")
        except ImportError:
            return []
        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
