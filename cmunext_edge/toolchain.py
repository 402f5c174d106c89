"""Versions of the toolchain that made (or measured) a result: Python and the installed
distributions this project uses. One list, recorded by export manifests and bench reports."""
from __future__ import annotations

import platform
from importlib import metadata

TOOLCHAIN = ("cmunext-edge", "torch", "onnx", "onnxslim", "onnxruntime", "openvino", "nncf",
             "tensorrt", "numpy", "opencv-python-headless")


def toolchain_versions(dists: tuple[str, ...] = TOOLCHAIN) -> dict:
    """{"python": version, distribution: version, ...} for those of `dists` that are installed."""
    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
