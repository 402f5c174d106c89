"""One table from artifact kind to backend class, optional dependency and pip extra."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from .._deps import MissingDependencyError, available
from .base import Backend, BackendError


@dataclass(frozen=True)
class BackendEntry:
    name: str
    suffixes: tuple[str, ...]
    target: str          # "module:Class", imported lazily
    requires: str        # python module the backend needs
    extra: str           # pip extra that installs it
    aliases: tuple[str, ...] = ()

    def load_class(self) -> type[Backend]:
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry("pytorch", (".pth", ".pt", ".safetensors"),
                 "cmunext_edge.runtime.torch_backend:TorchBackend", "torch", "torch", ("torch",)),
    BackendEntry("onnxruntime", (".onnx",),
                 "cmunext_edge.runtime.onnxruntime_backend:OnnxRuntimeBackend", "onnxruntime", "onnxruntime",
                 ("ort", "onnx")),
    BackendEntry("openvino", (".xml",),
                 "cmunext_edge.runtime.openvino_backend:OpenVINOBackend", "openvino", "openvino", ("ov",)),
    BackendEntry("tensorrt", (".engine", ".plan"),
                 "cmunext_edge.runtime.tensorrt_backend:TensorRTBackend", "tensorrt", "tensorrt", ("trt",)),
)


def entry_for(name: str) -> BackendEntry:
    for e in BACKENDS:
        if name == e.name or name in e.aliases:
            return e
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(e.name for e in BACKENDS)}")


def entry_for_path(path: str | Path) -> BackendEntry:
    path = Path(path)
    suffix = path.suffix.lower()
    for e in BACKENDS:
        if suffix in e.suffixes:
            return e
    known = ", ".join(s for e in BACKENDS for s in e.suffixes)
    raise BackendError(f"{path}: unknown artifact kind {suffix!r}; known suffixes: {known}")


def open_backend(path: str | Path, device: str = "cpu", backend: str | None = None,
                 strict_device: bool = False, **options) -> Backend:
    """Load `path` with the backend its suffix (or `backend`) selects."""
    entry = entry_for(backend) if backend else entry_for_path(path)
    if not available(entry.requires):
        raise MissingDependencyError(
            f"{entry.name} backend needs {entry.requires}; install it with: "
            f"pip install \"cmunext-edge[{entry.extra}]\"")
    return entry.load_class()(path, device=device, strict_device=strict_device, **options).load()


def list_devices() -> dict[str, list[str]]:
    """What this machine offers to each backend (empty list: library missing or no device)."""
    out = {}
    for e in BACKENDS:
        out[e.name] = e.load_class().list_devices() if available(e.requires) else []
    return out
