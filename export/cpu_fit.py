"""Export choices that follow the CPU (issue 11), from the measurements in benchmarks/int8_notes.md
("INT8 per instruction set"):

- OpenVINO INT8 (NNCF): model_type TRANSFORMER and **overflow_fix ENABLE on every x86 CPU**. Without
  VNNI/AMX the x86 INT8 kernels multiply u8 x s8 with a saturating 16-bit multiply-add; NNCF's
  default (FIRST_LAYER) then fails the 0.97 agreement gate on CMUNeXt-S (0.966 on the bundled
  samples, 0.953 on 90 unseen images, AVX2), ENABLE (7-bit weights) passes (0.986 / 0.982); with
  VNNI/AMX ENABLE measured as good as FIRST_LAYER (0.986 vs 0.984). Elsewhere (ARM): NNCF's default.
- ONNX Runtime INT8: `reduce_range` (7-bit weights, ORT's own remedy for the same saturation) where
  INT8 dot products are not native. ONNX Runtime's MLAS kernels ignore ONEDNN_MAX_CPU_ISA, so this
  could not be measured on a lowered ISA; it is applied by capability. The decision follows the
  effective ISA (ONEDNN_MAX_CPU_ISA included): with 7-bit weights no u8 x s8 pair sum can saturate
  (2 x 255 x 64 < 32768), so a VNNI host running a reduce_range model computes what an AVX2 host does.
- A failed INT8 gate says why when the CPU lacks VNNI, and what to try (int8_recipe.py, which also
  records the resolved recipe in the manifest: it reads the exporters' defaults, this module does not).
- Faithful INT8 (issue 21, benchmarks/int8_notes.md "Faithful INT8" and "Calibration on training
  images"): NNCF `float_layers` "auto" is the "faithful-wide" list (openvino_export.FLOAT_LAYERS,
  five convolutions in float) on every CPU. Calibrated on the 64 default training images and
  verified on the 90 held-out ones: 0 of 90 below 0.90 on AVX-512 VNNI BF16 (Zen 4) and under
  ONEDNN_MAX_CPU_ISA=AVX2, and on a real Zen 3 (AVX2) with the same 64 images; the one-layer
  "faithful" list failed the mean floor on Zen 4 with that calibration (an empty FP32 mask
  got a false blob) and left 1-2 of 90 below 0.90 across calibration draws. It costs about 7%
  (Zen 4) to 12% (Zen 3) of INT8 latency. The float layers run f32 on every CPU (the OpenVINO
  backend asks for it). `float_layers="faithful"` is the one-layer list, "none" every
  convolution INT8.
"""
from __future__ import annotations

from cmunext_edge.capabilities import Capabilities, detect

# NNCF OverflowFix members by the names export options use
OVERFLOW_FIX = {"enable": "ENABLE", "disable": "DISABLE", "first_layer": "FIRST_LAYER"}
AUTO = "auto"


def nncf_overflow_fix(caps: Capabilities | None = None) -> str | None:
    """The overflow_fix for this CPU: "enable" on x86, None (NNCF's own default) elsewhere."""
    caps = caps or detect()
    return "enable" if caps.is_x86 else None


FAITHFUL = "faithful-wide"


def nncf_float_layers(caps: Capabilities | None = None) -> str:
    """The float-layer recipe for this CPU: "faithful-wide" on every CPU (see the module docstring)."""
    return FAITHFUL


def resolve_float_layers(value, named: dict, caps: Capabilities | None = None):
    """"auto" -> this CPU's recipe name; a name of `named` (openvino_export.FLOAT_LAYERS) checked;
    a list of NNCF ignored-scope patterns as given; None/empty -> "none"."""
    if value == AUTO:
        return nncf_float_layers(caps)
    if not value:
        return "none"
    if isinstance(value, str):
        if value.lower() not in named:
            raise ValueError(f"NNCF float_layers {value!r}; known: auto, {', '.join(named)}, "
                             f"or a list of node-name patterns")
        return value.lower()
    return [str(p) for p in value]


def ort_reduce_range(caps: Capabilities | None = None) -> bool:
    """7-bit ONNX Runtime weights where x86 INT8 dot products are not native (no VNNI/AMX)."""
    caps = caps or detect()
    return caps.is_x86 and not caps.int8_native


def resolve_overflow_fix(value, caps: Capabilities | None = None) -> str | None:
    """"auto" -> the per-CPU choice; otherwise the given value checked (None: NNCF's default)."""
    if value == AUTO:
        return nncf_overflow_fix(caps)
    if value is not None and str(value).lower() not in OVERFLOW_FIX:
        raise ValueError(f"NNCF overflow_fix {value!r}; known: auto, {', '.join(OVERFLOW_FIX)}")
    return None if value is None else str(value).lower()
