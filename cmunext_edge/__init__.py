"""cmunext-edge: CMUNeXt from PyTorch weights to a verified, fast edge artifact.

`import cmunext_edge` needs only numpy and OpenCV; torch, onnxruntime, openvino and
tensorrt are imported when a backend or exporter needs them.
"""
from cmunext_edge._version import __version__
from cmunext_edge.core.preprocess import PRESETS, PreprocessSpec, get_preset  # noqa: E402
from cmunext_edge.runtime.segmenter import EdgeSegmenter, Segmentation  # noqa: E402

__all__ = ["EdgeSegmenter", "Segmentation", "PreprocessSpec", "PRESETS", "get_preset", "__version__"]
