"""The candidates of `cmunext-export --target auto`, as data: one row per backend x precision x
quantization options x exact graph rewrites x runtime settings, and the devices it is tried on.
Adding a candidate is adding a row here; `run.run_auto` exports, measures and selects.

The table follows the CPU (issue 11): BF16 candidates are offered for the CPU only where BF16 is
native (capabilities.py; elsewhere OpenVINO would run them f32 or fail to compile them), and the
INT8 candidates' recipe per ISA (NNCF overflow_fix, ONNX Runtime reduce_range) is applied by the
export itself (cpu_fit.py) unless a row sets it.

Faithful INT8 (issue 21): every OpenVINO INT8 row keeps the export's default float layers
(openvino_export.FLOAT_LAYERS["faithful-wide"], the convolutions whose quantization flips held-out
masks) unless it sets `float_layers`; the `-onefloat` row pins the one-layer list and the
`-allint8` rows the earlier recipe (every convolution INT8), so that auto selection, and its
report, show what the float layers cost and buy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEVICES = ("CPU", "GPU", "NPU")
FAST = ("transformer", "performance")        # NNCF model_type / preset measured fastest on CPU
DENSE = {"fold_bn": True, "dense_groups": True}   # exact rewrites: best for CMUNeXt-S (8-16 channels)
SPLIT = {"fold_bn": True, "split_groups": True}   # exact rewrites: best for CMUNeXt base (wide groups)


@dataclass(frozen=True)
class Candidate:
    name: str
    devices: tuple[str, ...]
    target: str                                   # an export target of targets.TARGETS
    precision: str
    graph: dict = field(default_factory=dict)     # onnx_export.GRAPH_OPTIONS
    nncf: dict | None = None                      # openvino_export.NNCF_DEFAULTS overrides
    ort_quant: dict | None = None                 # ort_quant.ORT_DEFAULTS overrides
    runtime: dict = field(default_factory=dict)   # stored in the artifact, applied by its backend
    note: str = ""


def _nncf(model_type=None, preset="mixed", **kw) -> dict:
    return {"model_type": model_type, "preset": preset, **kw}


OV_LAT = {"hint": "latency"}
ALL_INT8 = {"float_layers": "none"}   # every convolution INT8 (the export default keeps a few float)
ORT_MEM = {"max_images": 8}    # ORT percentile calibration holds every activation in memory
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("ort-fp32", ("CPU",), "onnx", "fp32", note="ONNX Runtime FP32"),
    Candidate("ort-fp32-fold", ("CPU",), "onnx", "fp32", {"fold_bn": True}, note="+ BN folding"),
    Candidate("ov-fp32", ("CPU", "GPU"), "openvino", "fp32", runtime={**OV_LAT, "inference_precision": "f32"}),
    Candidate("ov-bf16", ("CPU",), "openvino", "bf16", runtime={**OV_LAT, "inference_precision": "bf16"}),
    Candidate("ov-bf16-fold", ("CPU",), "openvino", "bf16", {"fold_bn": True},
              runtime={**OV_LAT, "inference_precision": "bf16"}, note="+ BN folding"),
    Candidate("ov-fp16", ("GPU", "NPU"), "openvino", "fp16", runtime=OV_LAT),
    Candidate("ov-int8-nncf-default", ("CPU", "GPU", "NPU"), "openvino", "int8", nncf=_nncf(),
              runtime=OV_LAT, note="NNCF defaults (model_type None, preset mixed), overflow_fix per CPU"),
    Candidate("ov-int8-transformer", ("CPU", "GPU", "NPU"), "openvino", "int8", nncf=_nncf(*FAST),
              runtime=OV_LAT, note="NNCF model_type TRANSFORMER, preset performance, five convolutions in "
                                   "float (faithful-wide): the `cmunext-export --int8` default"),
    Candidate("ov-int8-transformer-allint8", ("CPU",), "openvino", "int8", nncf=_nncf(*FAST, **ALL_INT8),
              runtime=OV_LAT, note="every convolution INT8 (the recipe before issue 21)"),
    Candidate("ov-int8-transformer-bf16", ("CPU",), "openvino", "int8", nncf=_nncf(*FAST),
              runtime={**OV_LAT, "inference_precision": "bf16"},
              note="the default INT8 recipe with its float layers in bf16 (BF16-native CPUs only; "
                   "elsewhere they run f32)"),
    Candidate("ov-int8-transformer-onefloat", ("CPU",), "openvino", "int8",
              nncf=_nncf(*FAST, float_layers="faithful"), runtime=OV_LAT,
              note="one convolution in float (FLOAT_LAYERS['faithful']): faster, less agreement margin"),
    Candidate("ov-int8-transformer-dense", ("CPU", "GPU", "NPU"), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST), runtime=OV_LAT, note="+ BN folding, dense grouped convs (INT8 brgconv)"),
    Candidate("ov-int8-transformer-dense-allint8", ("CPU",), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST, **ALL_INT8), runtime=OV_LAT,
              note="+ BN folding, dense grouped convs, every convolution INT8 (before issue 21)"),
    Candidate("ov-int8-transformer-split", ("CPU", "GPU", "NPU"), "openvino", "int8", SPLIT,
              nncf=_nncf(*FAST), runtime=OV_LAT, note="+ BN folding, grouped convs split per group"),
    Candidate("ov-int8-transformer-dense-biascorr", ("CPU",), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST, fast_bias_correction=False), runtime=OV_LAT,
              note="+ full bias correction instead of fast"),
    Candidate("ov-int8-transformer-dense-bf16", ("CPU",), "openvino", "int8", DENSE, nncf=_nncf(*FAST),
              runtime={**OV_LAT, "inference_precision": "bf16"},
              note="float parts in bf16 (the default runs them f32; BF16-native CPUs only)"),
    Candidate("ov-int8-transformer-dense-headfloat", ("CPU",), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST, ignored_names=[".*stem/conv/conv.0/.*", ".*Conv_1x1.*"]), runtime=OV_LAT,
              note="first and last convolution kept in float too"),
    Candidate("ov-int8-accuracy-control", ("CPU",), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST, max_drop="budget"), runtime=OV_LAT,
              note="nncf.quantize_with_accuracy_control, Dice on the calibration masks"),
    Candidate("ort-int8-qdq", ("CPU",), "onnxruntime", "int8", ort_quant=ORT_MEM,
              note="QDQ, per-channel, percentile, reduce_range per CPU"),
    Candidate("ort-int8-qoperator-conv", ("CPU",), "onnxruntime", "int8", DENSE,
              ort_quant={**ORT_MEM, "format": "qoperator", "op_types": ["Conv"]}, note="QOperator, Conv only"),
    Candidate("ort-int8-qdq-reduce-range", ("CPU",), "onnxruntime", "int8", DENSE,
              ort_quant={**ORT_MEM, "reduce_range": True}, note="QDQ, 7-bit weights"),
)
QUICK = ("ort-fp32", "ov-bf16", "ov-int8-transformer-dense")    # tests and smoke runs


def fits(cand: Candidate, device: str, caps=None) -> bool:
    """Whether `cand` belongs in the default list for `device` on this CPU (`caps`: a
    capabilities.Capabilities, default detect()): BF16 on the CPU (a BF16 artifact, or an INT8
    one whose float parts run bf16) only where it is native."""
    if device not in cand.devices:
        return False
    if device == "CPU" and "bf16" in (cand.precision, cand.runtime.get("inference_precision")):
        from cmunext_edge.capabilities import detect
        return (caps or detect()).bf16_native
    return True


def candidates_for(device: str = "CPU", names=None, caps=None) -> list[Candidate]:
    """The candidates for `device` that fit this CPU; `names` (explicit) are taken as given."""
    device = device.upper()
    if device not in DEVICES:
        raise ValueError(f"--device {device!r}: auto selection knows {', '.join(DEVICES)}")
    chosen = [c for c in CANDIDATES if fits(c, device, caps)]
    if names:
        unknown = set(names) - {c.name for c in CANDIDATES}
        if unknown:
            raise ValueError(f"unknown candidate(s) {sorted(unknown)}; known: {', '.join(c.name for c in CANDIDATES)}")
        chosen = [c for c in CANDIDATES if c.name in names]
    return chosen
