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


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def _load(self) -> None:
        ort = require("onnxruntime")
        device = self.requested_device.lower()
        device = {"gpu": "cuda", "trt": "tensorrt", "ov": "openvino"}.get(device, device.split(":")[0])
        if device not in PROVIDERS:
            raise BackendError(f"onnxruntime: unknown device {self.requested_device!r}; "
                               f"use one of {', '.join(PROVIDERS)}")
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device != "cpu":
            if PROVIDERS[device] in available:
                providers.insert(0, PROVIDERS[device])
            else:
                self._fallback("cpu", f"{PROVIDERS[device]} is not in this onnxruntime build "
                                      f"(available: {', '.join(available)})")
        self.session = self._session(ort, providers, self.options.get("threads"))
        stored = runtime_settings(parse_metadata(self.session.get_modelmeta().custom_metadata_map))
        if not self.options.get("threads") and stored.get("threads"):   # the artifact's own setting
            self.session = self._session(ort, providers, stored["threads"])
        self.runtime = {"threads": self.options.get("threads") or stored.get("threads")}
        actual = self.session.get_providers()[0]
        if actual != providers[0]:
            self._fallback(_DEVICE_OF.get(actual, actual), f"{providers[0]} was requested but the "
                                                          f"session runs {actual}")
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
