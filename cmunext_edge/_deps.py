"""Lazy import of heavy optional dependencies, with an error that names the pip extra."""
from __future__ import annotations

import importlib

# module -> extra of cmunext-edge that installs it
# (runtime extras: onnxruntime, openvino, tensorrt; export extras add the tooling)
EXTRAS = {
    "torch": "torch", "safetensors": "torch", "onnx": "onnx-export", "onnxruntime": "onnxruntime",
    "onnxslim": "onnx-export", "openvino": "openvino", "nncf": "openvino-export", "tensorrt": "tensorrt",
    "matplotlib": "bench", "ray": "ray", "tritonclient": "ray", "fastapi": "ray", "uvicorn": "ray",
    "model_signing": "sign", "cryptography": "sign", "cyclonedx": "sbom", "cyclonedx_py": "sbom",
    "pydicom": "dicom", "highdicom": "dicom",
}


class MissingDependencyError(ImportError):
    pass


def require(module: str):
    """Import `module` or raise an error telling which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module.split(".")[0], "all")
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install \"cmunext-edge[{extra}]\"") from exc


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
