"""What this CPU can do natively, as the inference runtimes will actually see it.

`detect()` reads the CPU model and instruction-set flags (/proc/cpuinfo on Linux: `flags` on
x86, `Features` on ARM) and applies the two environment variables that lower what the
runtimes use:

- ONEDNN_MAX_CPU_ISA (oneDNN, hence OpenVINO's CPU plugin and PyTorch's convolutions), e.g.
  AVX2 makes an AVX-512 VNNI/BF16 machine behave like a Zen 3: no VNNI (INT8 dot products use
  the saturating u8 x s8 multiply-add) and no native BF16;
- ATEN_CPU_CAPABILITY (PyTorch's vectorised ATen kernels: default, avx2, avx512).

Measured with OpenVINO 2026.4 on a Xeon with AMX (benchmarks/int8_notes.md): under
ONEDNN_MAX_CPU_ISA=AVX2 OpenVINO still lists BF16 in OPTIMIZATION_CAPABILITIES (it reads
CPUID), still defaults INFERENCE_PRECISION_HINT to bf16, and compiling with bf16 or f16 then
fails ("object is not initialized"); with an explicit f32 hint it compiles and runs f32. So
`openvino_precision_hint` says "f32" wherever BF16 is not native in the effective ISA.

Standard library only at import; openvino and onnxruntime are imported lazily, and only
by `runtime_info()` / `as_dict(runtimes=True)` when installed.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# Named features -> the cpuinfo flags that provide them (any one suffices).
# The most inference threads, workers or actors any option accepts: far above any CPU this runs on,
# low enough that a typo (threads=99999) is refused instead of exhausting memory before any work.
MAX_THREADS = 1024
# The largest batch any option accepts: 1024 inputs of 256x256x3 float32 are about 0.8 GB.
MAX_BATCH = 1024
# the largest square network input side an export or training accepts (a typo like 25600 ran out of
# memory in OpenCV before any message)
MAX_SIDE = 4096
# the largest count (epochs, iterations, images) and number of seconds an option accepts
MAX_COUNT = 10_000_000
MAX_SECONDS = 86_400.0

FEATURES = {
    "avx2": ("avx2",), "avx512f": ("avx512f",), "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",), "avx512_bf16": ("avx512_bf16",), "avx512_fp16": ("avx512_fp16",),
    "amx_int8": ("amx_int8",), "amx_bf16": ("amx_bf16",), "amx_fp16": ("amx_fp16",),
    "asimd": ("asimd",), "asimddp": ("asimddp",), "fp16": ("fphp", "asimdhp"),
    "arm_bf16": ("bf16",), "i8mm": ("i8mm",), "sve": ("sve",),
}
INT8_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
BF16_FEATURES = ("avx512_bf16", "amx_bf16", "arm_bf16")
FP16_FEATURES = ("avx512_fp16", "amx_fp16", "fp16")

# oneDNN's x86 ISA levels (ONEDNN_MAX_CPU_ISA values, cpu_isa_t masks): the feature groups each
# level may use. Flags outside every group (sse*, fma, ...) are never masked.
_GROUPS = {"avx2": {"avx2"}, "avx_vnni": {"avx_vnni"},
           "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"},
           "avx512_vnni": {"avx512_vnni"}, "avx512_bf16": {"avx512_bf16"},
           "avx512_fp16": {"avx512_fp16"}, "amx": {"amx_tile", "amx_int8", "amx_bf16"},
           "amx_fp16": {"amx_fp16"}}
_AVX512_BF16 = {"avx2", "avx512", "avx512_vnni", "avx512_bf16"}
ONEDNN_LEVELS = {
    "SSE41": set(), "AVX": set(), "AVX2": {"avx2"}, "AVX2_VNNI": {"avx2", "avx_vnni"},
    "AVX2_VNNI_2": {"avx2", "avx_vnni"}, "AVX512_CORE": {"avx2", "avx512"},
    "AVX512_CORE_VNNI": {"avx2", "avx512", "avx512_vnni"}, "AVX512_CORE_BF16": _AVX512_BF16,
    "AVX512_CORE_FP16": _AVX512_BF16 | {"avx_vnni", "avx512_fp16"},
    "AVX10_1_512": _AVX512_BF16 | {"avx_vnni", "avx512_fp16"},
    "AVX512_CORE_AMX": _AVX512_BF16 | {"avx_vnni", "avx512_fp16", "amx"},
    "AVX10_1_512_AMX": _AVX512_BF16 | {"avx_vnni", "avx512_fp16", "amx"},
    "AVX512_CORE_AMX_FP16": set(_GROUPS), "AVX10_1_512_AMX_FP16": set(_GROUPS),
}
# PyTorch's ATEN_CPU_CAPABILITY values on x86 -> the groups its vectorised kernels may use.
ATEN_LEVELS = {"DEFAULT": set(), "AVX2": {"avx2", "avx_vnni"}, "AVX512": set(_GROUPS)}


def parse_cpuinfo(text: str) -> tuple[str, frozenset]:
    """(CPU model, flags) from /proc/cpuinfo text; x86 `flags` or ARM `Features` lines."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key == "cpu part" and not model:
            model = f"ARM part {value.strip()}"
    return model, frozenset(flags)


def _mask(flags: frozenset, allowed_groups: set | None) -> frozenset:
    if allowed_groups is None:
        return flags
    banned = set().union(*(g for name, g in _GROUPS.items() if name not in allowed_groups))
    return frozenset(f for f in flags if f not in banned)


def _level(value: str | None, table: dict) -> set | None:
    """The allowed groups for an env value; None when unset, ALL/DEFAULT-for-oneDNN or unknown."""
    key = (value or "").strip().upper()
    return table.get(key) if key else None


def _has(flags: frozenset, names) -> dict:
    return {n: any(f in flags for f in FEATURES[n]) for n in names}


@dataclass(frozen=True)
class Capabilities:
    model: str
    arch: str
    flags: frozenset = field(repr=False)
    onednn_max_isa: str | None = None      # ONEDNN_MAX_CPU_ISA as set
    aten_capability: str | None = None     # ATEN_CPU_CAPABILITY as set

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "x86") or "avx" in self.flags or "sse2" in self.flags

    def _groups(self, engine: str) -> set | None:
        if not self.is_x86:
            return None
        onednn = _level(self.onednn_max_isa, ONEDNN_LEVELS)
        if engine != "torch":
            return onednn
        aten = _level(self.aten_capability, ATEN_LEVELS)
        if onednn is None or aten is None:
            return onednn if aten is None else aten
        return onednn & aten

    def effective_flags(self, engine: str = "onednn") -> frozenset:
        """Flags usable by `engine`: "onednn" (OpenVINO, ONNX Runtime's MLAS is not limited)
        or "torch" (oneDNN limit and ATen capability together)."""
        return _mask(self.flags, self._groups(engine))

    def features(self, effective: bool = True, engine: str = "onednn") -> dict:
        flags = self.effective_flags(engine) if effective else self.flags
        return _has(flags, FEATURES)

    def _native(self, names, engine: str = "onednn") -> bool:
        return any(self.features(True, engine)[n] for n in names)

    @property
    def int8_native(self) -> bool:
        """INT8 dot products without saturation: VNNI, AMX or ARM dotprod."""
        return self._native(INT8_FEATURES)

    @property
    def bf16_native(self) -> bool:
        return self._native(BF16_FEATURES)

    @property
    def fp16_native(self) -> bool:
        return self._native(FP16_FEATURES)

    @property
    def torch_bf16_native(self) -> bool:
        """BF16 arithmetic as PyTorch will run it (training autocast)."""
        return self._native(BF16_FEATURES, "torch")

    @property
    def isa(self) -> str:
        """The effective instruction-set level in words, e.g. "AVX-512 VNNI BF16 AMX" or "AVX2"."""
        f = self.features()
        if not self.is_x86:
            words = [w for w, k in (("NEON", "asimd"), ("dotprod", "asimddp"), ("fp16", "fp16"),
                                    ("bf16", "arm_bf16"), ("i8mm", "i8mm"), ("SVE", "sve")) if f[k]]
            return " ".join(words) or "no SIMD flags"
        if f["avx512f"]:
            extra = [w for w, k in (("VNNI", "avx512_vnni"), ("BF16", "avx512_bf16"),
                                    ("FP16", "avx512_fp16"), ("AMX", "amx_int8")) if f[k]]
            return " ".join(["AVX-512"] + extra)
        if f["avx2"]:
            return "AVX2 VNNI" if f["avx_vnni"] else "AVX2"
        return "pre-AVX2"

    @property
    def openvino_precision_hint(self) -> str | None:
        """INFERENCE_PRECISION_HINT to request so OpenVINO does not pick a precision that the
        effective ISA cannot run: "f32" on x86 without native BF16, else None (its own choice)."""
        return "f32" if self.is_x86 and not self.bf16_native else None

    def limits(self) -> dict:
        return {k: v for k, v in (("ONEDNN_MAX_CPU_ISA", self.onednn_max_isa),
                                  ("ATEN_CPU_CAPABILITY", self.aten_capability)) if v}

    def summary(self) -> str:
        """One line, e.g. "Xeon (x86_64), AVX2 (limited by ONEDNN_MAX_CPU_ISA=AVX2): int8 not
        native (no VNNI: saturating u8xs8), bf16 not native"."""
        limits = ", ".join(f"{k}={v}" for k, v in self.limits().items())
        where = f" (limited by {limits})" if limits else ""
        int8 = "int8 native" if self.int8_native else (
            "int8 not native (no VNNI: saturating u8xs8)" if self.is_x86 else "int8 not native (no dotprod)")
        return (f"{self.model or 'unknown CPU'} ({self.arch}), {self.isa}{where}: {int8}, "
                f"bf16 {'native' if self.bf16_native else 'not native'}, "
                f"fp16 {'native' if self.fp16_native else 'not native'}")

    def as_dict(self, runtimes: bool = True) -> dict:
        """JSON-ready record for manifests, bench JSON and reports."""
        out = {"cpu_model": self.model, "arch": self.arch, "isa": self.isa, "limits": self.limits(),
               "features": {k: v for k, v in self.features(effective=False).items() if v},
               "effective_features": {k: v for k, v in self.features().items() if v},
               "int8_native": self.int8_native, "bf16_native": self.bf16_native,
               "fp16_native": self.fp16_native, "torch_bf16_native": self.torch_bf16_native,
               "summary": self.summary()}
        if runtimes:
            out.update(runtime_info())
        return out


def from_cpuinfo(text: str, environ=None, arch: str | None = None) -> Capabilities:
    environ = os.environ if environ is None else environ
    model, flags = parse_cpuinfo(text)
    if arch is None:
        arch = "x86_64" if {"sse2", "avx"} & flags else ("aarch64" if "asimd" in flags else platform.machine())
    return Capabilities(model or platform.processor() or "", arch, flags,
                        environ.get("ONEDNN_MAX_CPU_ISA") or None, environ.get("ATEN_CPU_CAPABILITY") or None)


@lru_cache(maxsize=1)
def _cpuinfo_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:          # not Linux: no flags, model from platform
        return ""


def detect(cpuinfo: str = "/proc/cpuinfo", environ=None) -> Capabilities:
    """This machine's capabilities under the current environment (cpuinfo is read once)."""
    return from_cpuinfo(_cpuinfo_text(cpuinfo), environ, platform.machine() or None)


def runtime_info() -> dict:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES and ONNX Runtime's providers, where installed
    (None where not). Note: OpenVINO reports CPUID, not the ONEDNN_MAX_CPU_ISA limit."""
    from cmunext_edge._deps import available
    info = {"openvino": None, "onnxruntime": None}
    if available("openvino"):
        import openvino as ov
        try:
            caps = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        except Exception as exc:     # a broken plugin must not break a manifest
            caps = [f"error: {exc}"]
        info["openvino"] = {"version": ov.__version__, "optimization_capabilities": caps}
    if available("onnxruntime"):
        import onnxruntime as ort
        info["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    return info
