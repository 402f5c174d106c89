"""What an INT8 export records and says about its recipe on this CPU: the resolved quantization
settings (the exporters' defaults with the per-CPU choices of cpu_fit.py applied) for the manifest,
and why a failed agreement gate may have failed here and what to try."""
from __future__ import annotations

from cmunext_edge.capabilities import Capabilities, detect
from cmunext_edge.export.cpu_fit import AUTO, FAITHFUL, resolve_overflow_fix
from cmunext_edge.export.openvino_export import resolved_nncf_options
from cmunext_edge.export.ort_quant import resolved_ort_options


def int8_settings(target: str, options) -> dict | None:
    """The quantization settings an INT8 export of `target` uses with `options` (ExportOptions),
    per-CPU choices resolved: what the manifest records. None for targets without such settings."""
    if target == "openvino":
        return {"nncf": resolved_nncf_options(options.nncf or {})}
    if target == "onnxruntime":
        return {"ort_quant": resolved_ort_options(options.ort_quant or {}),
                "calibrate_method": options.calibrate_method or "percentile"}
    return None


def manifest_fields(target: str, precision, options) -> dict:
    """What every manifest entry records about the machine (and INT8 recipe) it was made on."""
    fields = {"capabilities": detect().as_dict()}
    if str(getattr(precision, "value", precision)) == "int8":
        fields["int8_settings"] = int8_settings(target, options)
    return fields


def gate_failure_hint(target: str, precision, device: str = "cpu", options=None,
                      caps: Capabilities | None = None) -> str:
    """Why an INT8 artifact may miss its agreement gate on this CPU and what to try ("" when the
    precision is not INT8 or the artifact does not run on the CPU)."""
    if str(getattr(precision, "value", precision)) != "int8" or not str(device).lower().startswith("cpu"):
        return ""
    caps = caps or detect()
    why = (f" Likely cause: no VNNI (this CPU: {caps.isa}, no VNNI/AMX): u8 x s8 saturation in the "
           f"x86 INT8 kernels costs agreement." if caps.is_x86 and not caps.int8_native else "")
    tries = []
    if target == "openvino":
        used = resolved_overflow_fix_of(options)
        tries.append("--target auto (tries several INT8 recipes and keeps the fastest faithful artifact)")
        tries.append(_more_float_layers(options))
        if used != "enable":     # Python API only: no command-line option sets NNCF settings
            tries.append("NNCF overflow_fix ENABLE (Python: export(..., nncf={'overflow_fix': 'enable'}))")
        tries.append("--target onnxruntime")
    elif target == "onnxruntime":
        tries.append(_more_float_layers(options, "ort_quant"))
        if not resolved_ort_options(getattr(options, "ort_quant", None) or {})["reduce_range"]:
            tries.append("reduce_range (Python: export(..., ort_quant={'reduce_range': True}))")
        tries.append("--target openvino")
    tries += ["more representative calibration images (--calib)", "--bf16 where the CPU has native BF16",
              "fp32 (--fp32)"]
    return why + " Try: " + "; ".join(tries) + "."


def _more_float_layers(options, setting: str = "nncf") -> str:
    """What to try for float layers, from the set this export used (`setting`: the ExportOptions
    field holding them, nncf or ort_quant; the default set is faithful-wide for both)."""
    asked = (getattr(options, setting, None) or {}).get("float_layers") if options is not None else None
    used = (resolved_nncf_options(_nncf_overrides(options))["float_layers"] if setting == "nncf"
            else resolved_ort_options({"float_layers": asked})["float_layers"])
    found = "the set benchmarks/int8_faithful.py finds for this model (--int8-float-layers PATTERNS)"
    if used == FAITHFUL:
        return f"more convolutions in float than the default five ({FAITHFUL}): {found}"
    return f"more convolutions in float: --int8-float-layers {FAITHFUL} (the default), or {found}"


def _nncf_overrides(options) -> dict:
    """The NNCF settings an ExportOptions (or None) asks for."""
    return (getattr(options, "nncf", None) or {}) if options is not None else {}


def resolved_overflow_fix_of(options) -> str | None:
    return resolve_overflow_fix(_nncf_overrides(options).get("overflow_fix") or AUTO)
