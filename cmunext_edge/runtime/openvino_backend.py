"""OpenVINO backend: IR (.xml + .bin) on CPU, GPU, NPU or AUTO.

Options: `hint` ("latency" or "throughput", OpenVINO's PERFORMANCE_HINT), `threads`
(INFERENCE_NUM_THREADS), `num_streams` (NUM_STREAMS), `cache_dir`
(compiled-model cache, what makes NPU/GPU start-up fast), `inference_precision` ("f32",
"bf16", "f16"; default on CPUs: f32 for FP32 and INT8 artifacts, bf16 for BF16 ones, else the
device's choice), `batch` (static batch for the NPU, which
needs static shapes). Defaults come from the settings an export stored in the artifact
(`cmunext_edge.runtime`, e.g. written by `cmunext-export --target auto`), so that an artifact
runs at its measured best with no options; explicit options override them. The precision that actually runs is read back from the compiled model's
INFERENCE_PRECISION_HINT (e.g. bf16 on CPUs with AMX) and reported.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.artifacts.kinds import companion_problem
from cmunext_edge.artifacts.meta import KEYS, PREFIX, apply_metadata, runtime_settings
from cmunext_edge.runtime.base import Backend, BackendError

DEVICES = ("CPU", "GPU", "NPU", "AUTO")


def device_family(device: str) -> str:
    """OpenVINO's device family of a device name: GPU.1 -> GPU, CPU -> CPU."""
    return device.upper().split(".")[0]


HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def read_rt_metadata(model) -> dict:
    """The cmunext_edge.* entries of rt_info["model_info"] as a flat str dict."""
    out = {}
    for key in KEYS:
        path = ["model_info", PREFIX + key]
        if model.has_rt_info(path):
            out[PREFIX + key] = model.get_rt_info(path).astype(str)
    return out


def _check_ir(path) -> None:
    """An .xml that is not an OpenVINO IR (root <net>) is refused here: OpenVINO would try every
    frontend on it (the TensorFlow one prints parser errors to stderr) before giving up."""
    import xml.etree.ElementTree as ET
    path = Path(path)
    try:
        with open(path, "rb") as f:      # the first element is enough: the file is closed at once
            root_tag = next(ET.iterparse(f, events=("start",)))[1].tag
    except (ET.ParseError, StopIteration) as exc:
        raise BackendError(f"{path}: not an OpenVINO IR (XML: {exc or 'empty file'})") from None
    if root_tag != "net":
        raise BackendError(f"{path}: not an OpenVINO IR (root element <{root_tag}>, expected <net>)")
    problem = companion_problem(path)          # its weights .bin
    if problem:
        raise BackendError(problem)


def _reason(exc: Exception) -> str:
    """OpenVINO's exception text without its source-location lines, on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.strip().startswith("Exception from src/") and ln.strip() != ")"]
    return " ".join(lines)[:300] or type(exc).__name__


class OpenVINOBackend(Backend):
    name = "openvino"

    def _load(self) -> None:
        ov = require("openvino")
        core = ov.Core()
        device = self._resolve_device(core)
        _check_ir(self.path)
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:
            raise BackendError(f"{self.path}: OpenVINO cannot read this IR ({_reason(exc)})") from None
        meta = apply_metadata(self, read_rt_metadata(model))
        self._fix_input_shape(model, device)
        opts = {**runtime_settings(meta), **{k: v for k, v in self.options.items() if v is not None}}
        self.runtime = opts
        try:
            self.compiled = core.compile_model(model, device, self._compile_config(opts, meta, device))
        except Exception as exc:
            raise BackendError(f"{self.path}: OpenVINO cannot compile for {device} ({exc})") from None
        self.request = self.compiled.create_infer_request()
        self._read_back(device, meta.get("precision", "fp32"))

    def _resolve_device(self, core) -> str:
        """The requested device in OpenVINO's spelling; a missing one falls back to CPU (reported)."""
        device = self.requested_device.upper()
        if device_family(device) not in DEVICES:
            raise BackendError(f"openvino: unknown device {self.requested_device!r}; use one of "
                               f"{', '.join(d.lower() for d in DEVICES)}")
        present = core.available_devices
        if device != "AUTO" and not any(d == device or device_family(d) == device for d in present):
            self._fallback("CPU", f"OpenVINO sees no {device} (available: {', '.join(present)})")
            device = "CPU"
        return device

    def _fix_input_shape(self, model, device: str) -> None:
        """Make a dynamic batch static where asked (`batch`) or needed (the NPU); record the shape."""
        shape = model.input(0).get_partial_shape()
        batch = self.options.get("batch") or (1 if device_family(device) == "NPU" else None)
        if shape[0].is_dynamic and batch:   # the NPU compiles static shapes only
            model.reshape([int(batch)] + [d.get_length() for d in list(shape)[1:]])
            shape = model.input(0).get_partial_shape()
        asked = self.options.get("batch")
        if asked and shape[0].is_static and shape[0].get_length() != int(asked):   # was ignored silently
            self.fallback_reason = "; ".join(filter(None, (
                self.fallback_reason, f"requested batch {asked}, ran {shape[0].get_length()}: this IR's batch is "
                                      f"static (export it with --dynamic to choose one)")))
        self.input_shape = tuple(d.get_length() if d.is_static else None for d in shape)

    @staticmethod
    def _compile_config(opts: dict, meta: dict, device: str) -> dict:
        """OpenVINO properties from the runtime options (artifact settings overridden by explicit ones);
        an indexed device (GPU.1) gets its family's (GPU's) settings."""
        config, device = {}, device_family(device)
        if opts.get("hint"):
            config["PERFORMANCE_HINT"] = HINTS[opts["hint"]]
        if opts.get("threads") and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(opts["threads"])
        if opts.get("num_streams"):
            config["NUM_STREAMS"] = int(opts["num_streams"])
        if opts.get("cache_dir"):
            config["CACHE_DIR"] = str(opts["cache_dir"])
        # An FP32 (BF16) artifact asks for f32 (bf16) inference: CPUs with bf16 units would otherwise
        # silently run bf16. An INT8 IR's float parts (the layers left unquantized, the dequantized
        # outputs) run at f32 on every CPU, the precision its held-out gate measured: OpenVINO would
        # pick f16 on ARM cores with FP16 arithmetic (emulated Neoverse-N1, 49 held-out images:
        # agreement 0.9688, one lesion lost, against 0.9948 at f32) and bf16 on x86 with native BF16
        # (Zen 4, 90 held-out images: 0.9866, 1 below 0.90, against 0.9878, 0 below at f32; an
        # artifact that stores inference_precision=bf16, auto's ov-int8-transformer-bf16, asks for
        # it). FP16 IRs run at the device's own default, reported below.
        from cmunext_edge.capabilities import detect
        # AUTO's CPU part gets exactly what the CPU device gets (an FP32 IR under AUTO would otherwise
        # run bf16 on a CPU with native BF16 and fail its own self-test).
        caps, precision, on_cpu = detect(), meta.get("precision", "fp32"), device in ("CPU", "AUTO")
        default = {"fp32": "f32", "bf16": "bf16"}.get(precision)
        if precision == "int8" and on_cpu:
            default = "f32"
        wanted = opts.get("inference_precision") or default
        # Where the effective ISA has no native BF16, OpenVINO runs f32 (on a Zen 3 it does so itself;
        # under ONEDNN_MAX_CPU_ISA=AVX2 on a BF16 host it would pick bf16 from CPUID and fail to compile).
        fallback = caps.openvino_precision_hint
        if fallback and on_cpu and wanted in (None, "bf16", "f16"):
            wanted = fallback
        if wanted and device in ("CPU", "GPU"):
            config["INFERENCE_PRECISION_HINT"] = wanted
        if wanted and device == "AUTO":
            config["DEVICE_PROPERTIES"] = {"CPU": {"INFERENCE_PRECISION_HINT": wanted}}
        return config

    def _read_back(self, device: str, artifact_precision: str) -> None:
        """Record the device and precision the compiled model actually runs."""
        self.device = device
        try:
            if device == "AUTO":          # AUTO exposes each execution device's properties instead
                ran = self.compiled.get_property("EXECUTION_DEVICES")
                self.device = "AUTO:" + ",".join(ran)
                hint = self.compiled.get_property("DEVICE_PROPERTIES")[ran[0]]["INFERENCE_PRECISION_HINT"]
            else:
                hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            hint = hint.get_type_name()
        except Exception:      # some plugins do not expose it
            hint = None
        self.inference_precision = _PRECISION.get(hint, hint)
        self.precision = ("int8" if artifact_precision == "int8"
                          else (self.inference_precision or artifact_precision))
        asked = self.options.get("inference_precision")      # the caller's, not the artifact's stored setting
        if asked and hint and asked != hint:                  # e.g. f16 on an x86 CPU runs bf16: never silent
            self.fallback_reason = "; ".join(filter(None, (
                self.fallback_reason, f"requested inference_precision {asked}, {self.device} ran {hint}")))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: batch})
        return np.asarray(result[self.compiled.output(0)], dtype=np.float32).copy()

    def _close(self) -> None:
        self.request = self.compiled = None

    def describe(self) -> dict:
        return {**super().describe(), "inference_precision": getattr(self, "inference_precision", None),
                "artifact_precision": self.metadata.get("precision"), "runtime": getattr(self, "runtime", None)}

    @classmethod
    def list_devices(cls) -> list[str]:
        try:
            ov = require("openvino")
        except ImportError:
            return []
        return [d.lower() for d in ov.Core().available_devices] + ["auto"]
