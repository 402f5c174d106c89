"""The one table of export targets: it drives argument checks, aliases and the --help text."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# option name -> what it is for (the help text of the table)
OPTIONS = {"calib": "calibration images (INT8)", "dynamic": "dynamic batch", "batch": "static batch",
           "opset": "ONNX opset", "workspace": "builder workspace (GiB)", "dla_core": "Jetson DLA core",
           "int8_mode": "qdq or calibrator (INT8)",
           "calibrate_method": "QDQ activation calibration (INT8)", "nncf": "NNCF quantization options (INT8)",
           "ort_quant": "ONNX Runtime quantization options (INT8)"}


class ExportUsageError(ValueError):
    """An unknown target, or an option or precision the chosen target does not support."""


@dataclass(frozen=True)
class ExportTarget:
    name: str
    aliases: tuple[str, ...]
    suffix: str                      # the artifact a user loads
    precisions: tuple[str, ...]      # the first one is the default
    options: frozenset[str]
    builder: str                     # "module:function", imported lazily
    requires: tuple[str, ...]        # python modules it needs
    extra: str                       # pip extra that installs them
    description: str

    def load_builder(self):
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)


TARGETS: tuple[ExportTarget, ...] = (
    ExportTarget("onnx", (), ".onnx", ("fp32", "fp16"), frozenset({"dynamic", "batch", "opset"}),
                 "cmunext_edge.export.onnx_export:build", ("onnx", "onnxslim"), "onnx",
                 "ONNX, simplified with onnxslim (runs on ONNX Runtime, OpenVINO, TensorRT)"),
    ExportTarget("openvino", ("ov",), ".xml", ("fp32", "fp16", "bf16", "int8"),
                 frozenset({"dynamic", "batch", "opset", "calib", "nncf"}),
                 "cmunext_edge.export.openvino_export:build", ("openvino",), "openvino",
                 "OpenVINO IR (.xml+.bin); FP16 compressed weights, BF16 inference hint, INT8 by NNCF PTQ"),
    ExportTarget("onnxruntime", ("ort",), ".onnx", ("int8",),
                 frozenset({"dynamic", "batch", "opset", "calib", "calibrate_method", "ort_quant"}),
                 "cmunext_edge.export.ort_quant:build", ("onnx", "onnxruntime"), "onnx",
                 "ONNX Runtime INT8: static QDQ quantization, per-channel weights"),
    ExportTarget("tensorrt", ("trt",), ".engine", ("fp16", "fp32", "bf16", "int8"),
                 frozenset({"dynamic", "batch", "opset", "calib", "workspace", "dla_core", "int8_mode",
                            "calibrate_method"}),
                 "cmunext_edge.export.tensorrt_export:build", ("tensorrt",), "tensorrt",
                 "TensorRT plan + sidecar JSON; INT8 from Q/DQ or a calibrator (JetPack 5)"),
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


def check_request(target: ExportTarget, precision: str | None, used: dict) -> str:
    """Validate precision and the options actually given (name -> value); return the precision."""
    precision = precision or target.precisions[0]
    if precision not in target.precisions:
        raise ExportUsageError(f"target {target.name} does not support {precision}; "
                               f"it supports {', '.join(target.precisions)}")
    for opt, value in used.items():
        if value in (None, False):
            continue
        if opt not in target.options:
            raise ExportUsageError(f"target {target.name} does not take --{opt.replace('_', '-')} "
                                   f"({OPTIONS.get(opt, opt)}); its options: "
                                   + ", ".join("--" + o.replace("_", "-") for o in sorted(target.options)))
        if opt in ("calib", "int8_mode", "nncf", "calibrate_method", "ort_quant") and precision != "int8":
            raise ExportUsageError(f"--{opt.replace('_', '-')} only applies to INT8 exports "
                                   f"(use --verify-data to choose verification images)")
    if used.get("dynamic") and used.get("batch") not in (None, 1):
        raise ExportUsageError("--batch and --dynamic exclude each other")
    return precision


def help_table() -> str:
    lines = ["targets (alias) | precisions (default first) | options:"]
    for t in TARGETS:
        alias = f" ({', '.join(t.aliases)})" if t.aliases else ""
        opts = " ".join("--" + o.replace("_", "-") for o in sorted(t.options) if o not in ("nncf", "ort_quant"))
        lines.append(f"  {t.name}{alias}: {', '.join(t.precisions)} | {opts}\n      {t.description}")
    lines.append(f"  {AUTO}: per --device | --device --max-dice-drop --split --candidates --threads --calib\n"
                 "      every candidate (backend x precision x quantization x graph options) built, measured "
                 "and the\n      fastest within the Dice budget kept (Python: cmunext_edge.export.auto.run_auto)")
    return "\n".join(lines)


@dataclass
class BuildContext:
    """Everything a target's build(ctx) needs; it writes only inside `workdir`."""
    model: object                    # torch CMUNeXt, FP32, eval mode
    spec: object                     # PreprocessSpec of the artifact
    in_channels: int
    precision: str
    workdir: object                  # pathlib.Path of the staging folder
    stem: str                        # artifact file name without suffix
    metadata: dict                   # flat cmunext_edge.* metadata to embed
    calib: object = None             # CalibrationSet (INT8)
    batch: int = 1
    dynamic: bool = False
    opset: int = 17
    options: dict | None = None      # target-specific (workspace, dla_core, nncf, int8_mode, ...)

    def scratch(self, name: str):
        """A path for intermediate files that are never published."""
        folder = self.workdir / "scratch"
        folder.mkdir(exist_ok=True)
        return folder / name
