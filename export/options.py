"""ExportOptions: every choice of one export, in one frozen object; ExportResult: what it made;
ExportUsageError: a request the targets cannot do. (The types the target table, the pipeline and
every builder share: this module imports none of them.)

`export(weights, ExportOptions(target="openvino", precision="int8", calib="data/"))`, or the same
fields as keywords: `export(weights, target="openvino", precision="int8", calib="data/")`.
Which of the target-specific fields a target accepts (and which only apply to INT8) is the
target table's business (targets.py); this module only holds and normalises the values.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from cmunext_edge.core.precision import Int8Mode, Precision

# ONNX opsets an export accepts: below 11 bilinear upsampling exports wrongly (opset 9-10: agreement
# 0.89) or not at all (7-8); above 23 torch 2.13's exporter refuses (measured 2026-12-05)
OPSETS = (11, 23)


class ExportUsageError(ValueError):
    """An unknown target, or an option or precision the chosen target does not support."""


@dataclass
class ExportResult:
    artifact: Path
    files: list[Path]
    manifest: Path
    target: str
    precision: Precision
    verification: dict | None
    selftest: dict
    next_commands: list[str] = field(default_factory=list)


def _enum(kind, value, what: str):
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(str(value).lower())
    except ValueError:
        raise ExportUsageError(f"unknown {what} {value!r}; known: {', '.join(kind.names())}") from None


@dataclass(frozen=True)
class ExportOptions:
    """The options of `export()`; see `cmunext-export --help` for the command-line spelling.

    `nncf`: NNCF overrides for OpenVINO INT8 (openvino_export.NNCF_DEFAULTS); `calibrate_method`:
    minmax/entropy/percentile for Q/DQ INT8 (ONNX Runtime, TensorRT); `int8_mode`: qdq or
    calibrator and `calibrator`: entropy or minmax for TensorRT INT8; `ort_quant`: ONNX Runtime
    quantization overrides (ort_quant.ORT_DEFAULTS); `graph`: exact rewrites before tracing
    (onnx_export.GRAPH_OPTIONS: fold_bn, dense_groups, split_groups); `runtime`: settings stored in
    the artifact that its backend applies by default (e.g. {"inference_precision": "bf16",
    "threads": 2, "hint": "latency"} for OpenVINO, {"threads": 2} for ONNX Runtime).
    """
    target: str = "onnx"                  # a name or alias of targets.TARGETS
    precision: Precision | None = None    # None: the target's default (first of its precisions)
    out: str | Path = "exports"           # output folder (manifest.json lives there)
    name: str | None = None               # artifact file name without suffix
    # network input
    imgsz: int | None = None              # square input size (None: the checkpoint's)
    batch: int = 1
    dynamic: bool = False
    opset: int | None = None              # None: 17; OPSETS bounds it
    # calibration and verification images
    calib: str | Path | None = None       # None: resources.default_calibration_dir()
    calib_size: int = 64
    seed: int = 0
    verify: bool = True
    verify_data: str | Path | None = None  # None: the calibration set
    verify_size: int | None = None        # None: a held-out list whole (<= 200), else calib_size
    split: str | Path | None = None       # names file / split.json ('val') choosing --verify-data images
    device: str | None = None             # None: the target's default device
    strict_device: bool = False           # refuse to verify on another device than `device`
    # target-specific (accepted per targets.ExportTarget.options)
    workspace: float | None = None        # TensorRT builder workspace, GiB
    dla_core: int | None = None           # Jetson DLA core
    int8_mode: Int8Mode | None = None     # TensorRT INT8: None means qdq
    calibrator: str | None = None         # TensorRT calibrator: entropy (default) or minmax
    calibrate_method: str | None = None   # Q/DQ activation calibration: None means percentile
    nncf: dict | None = None
    ort_quant: dict | None = None
    # graph rewrites and stored runtime settings (every target)
    graph: dict | None = None
    runtime: dict | None = None
    # provenance: private key (PEM) that signs the artifact's files -> <entry>.sig (signing.py)
    sign_key: str | Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "precision", _enum(Precision, self.precision, "precision"))
        object.__setattr__(self, "int8_mode", _enum(Int8Mode, self.int8_mode, "INT8 mode"))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def given(self, names) -> dict:
        """name -> value of the fields among `names` that differ from their defaults."""
        defaults = {f.name: f.default for f in fields(self)}
        return {n: getattr(self, n) for n in names if getattr(self, n) != defaults[n]}

    def graph_rewrites(self) -> list[str]:
        """The graph rewrites switched on, sorted."""
        return sorted(k for k, v in (self.graph or {}).items() if v)

    def runtime_settings(self) -> dict:
        """The runtime settings that are set (None values dropped)."""
        return {k: v for k, v in (self.runtime or {}).items() if v is not None}
