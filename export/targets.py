"""The one table of export targets: it drives dispatch, argument checks, defaults, aliases,
dependency checks and the --help text. Adding a target = one row here + one builder module
(with `build(ctx) -> [files, entry last]` and `embed(entry, metadata)`)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from cmunext_edge._deps import EXTRAS
from cmunext_edge.core.precision import Precision
from cmunext_edge.export.options import ExportOptions, ExportUsageError  # noqa: F401 (raised by callers as targets.ExportUsageError)
from cmunext_edge.runtime.tensorrt_backend import INSTALL_HINT as TENSORRT_HINT

FP32, FP16, BF16, INT8 = Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8
# target-specific ExportOptions fields -> what they are for (the help text of the table)
OPTIONS = {"calib": "calibration images (INT8)", "dynamic": "dynamic batch", "batch": "static batch",
           "opset": "ONNX opset", "workspace": "builder workspace (GiB)", "dla_core": "Jetson DLA core",
           "int8_mode": "qdq or calibrator (INT8)", "calibrator": "entropy or minmax calibrator (INT8)",
           "calibrate_method": "QDQ activation calibration (INT8)", "nncf": "NNCF quantization options (INT8)",
           "ort_quant": "ONNX Runtime quantization options (INT8)"}
INT8_RECIPE = frozenset({"nncf", "ort_quant"})     # dict options; on the command line: --int8-float-layers
SHAPE = frozenset({"dynamic", "batch", "opset"})   # every ONNX-based target takes these


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _cli_flag(option: str) -> str:
    """The command-line face of an option (NNCF's and ONNX Runtime's quantization options: the float
    layers of --int8-float-layers; their other keys from Python)."""
    return "--int8-float-layers" if option in INT8_RECIPE else _flag(option)


def _load(ref: str):
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ExportTarget:
    name: str
    aliases: tuple[str, ...]
    suffix: str                          # the artifact a user loads (the entry file)
    precisions: tuple[Precision, ...]    # the first one is the default
    options: frozenset[str]              # the OPTIONS it accepts
    int8_options: frozenset[str]         # those of `options` that only apply to INT8
    builder: str                         # "module:function" build(ctx) -> files, imported lazily
    embed: str                           # "module:function" embed(entry, metadata), imported lazily
    default_device: str                  # where the artifact is verified unless told otherwise
    requires: tuple[str, ...]            # python modules it always needs
    extra: str                           # pip extra that installs them
    description: str
    precision_requires: Mapping[Precision, tuple[str, ...]] = field(default_factory=dict, hash=False)
    install_hint: str | None = None      # replaces the generic pip hint when a module is missing
    calib_cap: str = ""                  # "module:function(options) -> int | None": the most
    #                                      calibration images its INT8 reads (a seeded draw of them,
    #                                      CalibrationSet.subset); "": all
    from_artifact: bool = False          # packages an exported artifact: builder is
                                         # package(artifact, options, log) -> ExportResult, no embed

    def load_builder(self):
        return _load(self.builder)

    def load_embed(self):
        return _load(self.embed)

    def calibration_cap(self, options) -> int | None:
        """The most calibration images this target's INT8 reads for `options` (None: all of them)."""
        return _load(self.calib_cap)(options) if self.calib_cap else None

    def required_modules(self, precision: Precision) -> tuple[str, ...]:
        return self.requires + tuple(self.precision_requires.get(precision, ()))

    def missing_hint(self, module: str) -> str:
        return self.install_hint or (f"target {self.name} needs {module}; install it with: "
                                     f"pip install \"cmunext-edge[{EXTRAS.get(module, self.extra)}]\"")


TARGETS: tuple[ExportTarget, ...] = (
    ExportTarget(
        "onnx", (), ".onnx", (FP32, FP16), SHAPE, frozenset(),
        "cmunext_edge.export.onnx_export:build", "cmunext_edge.export.onnx_export:embed", "cpu",
        ("onnx", "onnxslim"), "onnx",
        "ONNX, simplified with onnxslim (runs on ONNX Runtime, OpenVINO, TensorRT)"),
    ExportTarget(
        "openvino", ("ov",), ".xml", (FP32, FP16, BF16, INT8), SHAPE | {"calib", "nncf"},
        frozenset({"calib", "nncf"}),
        "cmunext_edge.export.openvino_export:build", "cmunext_edge.export.openvino_export:embed", "cpu",
        ("openvino",), "openvino",
        "OpenVINO IR (.xml+.bin); FP16 compressed weights, BF16 inference hint, INT8 by NNCF PTQ",
        precision_requires={INT8: ("nncf",)}),
    ExportTarget(
        "onnxruntime", ("ort",), ".onnx", (INT8,), SHAPE | {"calib", "calibrate_method", "ort_quant"},
        frozenset({"calib", "calibrate_method", "ort_quant"}),
        "cmunext_edge.export.ort_quant:build", "cmunext_edge.export.onnx_export:embed", "cpu",
        ("onnx", "onnxruntime"), "onnx",
        "ONNX Runtime INT8: static QDQ quantization, per-channel weights",
        calib_cap="cmunext_edge.export.ort_quant:calibration_cap"),
    ExportTarget(
        "tensorrt", ("trt",), ".engine", (FP16, FP32, BF16, INT8),
        SHAPE | {"calib", "workspace", "dla_core", "int8_mode", "calibrator", "calibrate_method"},
        frozenset({"calib", "int8_mode", "calibrator", "calibrate_method"}),
        "cmunext_edge.export.tensorrt_export:build", "cmunext_edge.export.tensorrt_export:embed", "cuda",
        ("tensorrt",), "tensorrt",
        "TensorRT plan + sidecar JSON; INT8 from Q/DQ or a calibrator (JetPack 5)",
        install_hint=TENSORRT_HINT, calib_cap="cmunext_edge.export.ort_quant:tensorrt_calibration_cap"),
    ExportTarget(
        "triton", (), ".pbtxt", (FP32, FP16, BF16, INT8), frozenset({"batch"}), frozenset(),
        "cmunext_edge.export.triton_export:package", "", "cpu", (), "onnx",
        "Triton model repository <out>/<name>/{config.pbtxt,1/} from an exported .onnx/.xml/.engine "
        "(--batch: max batch of the dynamic batcher when above 1, else 8)", from_artifact=True),
)


AUTO = "auto"    # not a target: `cmunext-export --target auto` runs export.auto over the candidates


def get_target(name: str) -> ExportTarget:
    key = name.lower()
    for t in TARGETS:
        if key == t.name or key in t.aliases:
            return t
    known = ", ".join(t.name + (f" ({'/'.join(t.aliases)})" if t.aliases else "") for t in TARGETS)
    if key == AUTO:
        raise ExportUsageError("target auto selects among targets: use cmunext_edge.export.auto.run_auto() "
                               "(or cmunext-export --target auto)")
    raise ExportUsageError(f"unknown export target {name!r}; known targets: {known}, auto")


def check_request(target: ExportTarget, options: ExportOptions) -> Precision:
    """Validate the precision and the target-specific options given; return the precision."""
    precision = options.precision or target.precisions[0]
    if precision not in target.precisions:
        raise ExportUsageError(f"target {target.name} does not support {precision}; "
                               f"it supports {', '.join(target.precisions)}")
    used = options.given(OPTIONS)
    for opt in used:
        if opt not in target.options:
            raise ExportUsageError(f"target {target.name} does not take {_flag(opt)} ({OPTIONS[opt]}); "
                                   f"its options: " + ", ".join(_cli_flag(o) for o in sorted(target.options)))
        if opt in target.int8_options and precision != INT8:
            raise ExportUsageError(f"{_flag(opt)} only applies to INT8 exports "
                                   f"(use --verify-data to choose verification images)")
    if used.get("dynamic") and "batch" in used:
        raise ExportUsageError("--batch and --dynamic exclude each other")
    return precision


def help_table() -> str:
    lines = ["targets (alias) | precisions (default first) | options:"]
    for t in TARGETS:
        alias = f" ({', '.join(t.aliases)})" if t.aliases else ""
        opts = " ".join(sorted({_cli_flag(o) for o in t.options}))
        lines.append(f"  {t.name}{alias}: {', '.join(t.precisions)} | {opts}\n      {t.description}")
    lines.append(f"  {AUTO}: per --device | --device --max-dice-drop --split --candidates --threads --calib\n"
                 "      every candidate (backend x precision x quantization x graph options) built, measured "
                 "and the\n      fastest within the Dice budget kept (Python: cmunext_edge.export.auto.run_auto)")
    return "\n".join(lines)


@dataclass
class BuildContext:
    """Everything a target's build(ctx) needs; it writes only inside `workdir`."""
    model: object                    # torch CMUNeXt as traced (graph rewrites applied), eval mode
    spec: object                     # PreprocessSpec of the artifact
    in_channels: int
    precision: Precision             # resolved (never None)
    workdir: Path                    # the staging folder
    stem: str                        # artifact file name without suffix
    metadata: dict                   # flat cmunext_edge.* metadata to embed
    options: ExportOptions           # the request (batch, opset, target-specific options)
    calib: object = None             # CalibrationSet (INT8)

    @property
    def batch(self) -> int:
        return self.options.batch

    @property
    def dynamic(self) -> bool:
        return self.options.dynamic

    @property
    def opset(self) -> int:
        return self.options.opset or 17

    @property
    def cache_dir(self) -> Path:
        """Caches reused between exports (TensorRT timing/calibration): the output folder."""
        return Path(self.options.out)

    def scratch(self, name: str) -> Path:
        """A path for intermediate files that are never published."""
        folder = self.workdir / "scratch"
        folder.mkdir(exist_ok=True)
        return folder / name
