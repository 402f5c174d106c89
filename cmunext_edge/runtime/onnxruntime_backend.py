"""ONNX Runtime backend: .onnx artifacts on the CPU, CUDA, TensorRT or OpenVINO execution provider.

The provider that actually runs is read back from the session (`get_providers()[0]`) and
reported as the device; `threads` sets intra_op_num_threads (default: the `threads` stored in
the artifact's `cmunext_edge.runtime` settings, else ONNX Runtime's own). Asking for one that is not installed is a visible fallback to CPU
(an error with strict_device).
"""
from __future__ import annotations

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.artifacts.meta import apply_metadata, parse_metadata, runtime_settings
from cmunext_edge.runtime.base import Backend, BackendError

# device name -> execution provider
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider"}
_DEVICE_OF = {v: k for k, v in PROVIDERS.items()}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def parse_device(requested: str) -> tuple[str, int | None]:
    """(device name of PROVIDERS, GPU index or None) of a --device value: "cuda:1" -> ("cuda", 1);
    an index is taken by the GPU providers only (CUDA, TensorRT), and must be a whole number."""
    name, colon, index = requested.lower().partition(":")
    name = {"gpu": "cuda", "trt": "tensorrt", "ov": "openvino"}.get(name, name)
    if name not in PROVIDERS:
        raise BackendError(f"onnxruntime: unknown device {requested!r}; use one of {', '.join(PROVIDERS)}")
    if not colon:
        return name, None
    if name not in ("cuda", "tensorrt") or not index.isdigit():
        raise BackendError(f"onnxruntime: device {requested!r}: an index (:N, a whole number) is taken by cuda "
                           f"and tensorrt only")
    return name, int(index)


def _provider_name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def _load(self) -> None:
        ort = require("onnxruntime")
        device, index = parse_device(self.requested_device)
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device != "cpu":
            if PROVIDERS[device] in available:     # cuda:N / tensorrt:N: that GPU (ORT's device_id)
                providers.insert(0, PROVIDERS[device] if index is None else (PROVIDERS[device], {"device_id": index}))
            else:
                self._fallback("cpu", f"{PROVIDERS[device]} is not in this onnxruntime build "
                                      f"(available: {', '.join(available)})")
        self.session = self._session(ort, providers, self.options.get("threads"))
        stored = runtime_settings(parse_metadata(self.session.get_modelmeta().custom_metadata_map))
        if not self.options.get("threads") and stored.get("threads"):   # the artifact's own setting
            self.session = self._session(ort, providers, stored["threads"])
        self.runtime = {"threads": self.options.get("threads") or stored.get("threads")}
        actual, wanted = self.session.get_providers()[0], _provider_name(providers[0])
        if actual != wanted:
            self._fallback(_DEVICE_OF.get(actual, actual), f"{wanted} was requested but the session runs {actual}")
        self.device = _DEVICE_OF.get(actual, actual)
        self.provider = actual
        meta = apply_metadata(self, self.session.get_modelmeta().custom_metadata_map)
        self.precision = meta.get("precision", "fp32")
        inp = self.session.get_inputs()[0]
        self.input_name, self.output_name = inp.name, self.session.get_outputs()[0].name
        self.input_dtype = _NUMPY_TYPES.get(inp.type, np.float32)
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)

    def _session(self, ort, providers, threads):
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"{self.path}: onnxruntime cannot load this model ({exc})") from None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch.astype(self.input_dtype)})[0]
        return out.astype(np.float32)

    def _close(self) -> None:
        self.session = None

    def describe(self) -> dict:
        return {**super().describe(), "provider": getattr(self, "provider", None)}

    @classmethod
    def list_devices(cls) -> list[str]:
        try:
            ort = require("onnxruntime")
        except ImportError:
            return []
        return [d for d, p in PROVIDERS.items() if p in ort.get_available_providers()]
