"""OpenVINO INT8 (NNCF) agreement with PyTorch FP32 per NNCF setting, on this CPU's effective ISA.

Run once natively and once with the ISA lowered (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
to cover both x86 kinds; see int8_notes.md ("INT8 per instruction set"). Agreement only, no timing.

Scenarios (calibration -> verification):
  train: 64 training-split images (seed 0)       -> the 90 held-out val images and the 16 samples
  demo:  the 16 bundled samples (the demo's way)  -> the same 16 samples and the 90 val images
  test:  6 bundled samples (tests' calib_size=6)  -> the same 6 samples

overflow_fix is not (yet) an export() option: this script adds it to NNCF's advanced parameters
by wrapping openvino_export._kwargs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {   # name -> (nncf options for export(), overflow_fix)
    "T-first": ({"model_type": "transformer"}, "first_layer"),
    "T-enable": ({"model_type": "transformer"}, "enable"),
    "T-disable": ({"model_type": "transformer"}, "disable"),
    "D-first": ({"model_type": None}, "first_layer"),
    "D-enable": ({"model_type": None}, "enable"),
    "T-first-mixed": ({"model_type": "transformer", "preset": "mixed"}, "first_layer"),
    "T-enable-mixed": ({"model_type": "transformer", "preset": "mixed"}, "enable"),
}


def _patch_overflow_fix(state: dict) -> None:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    import cmunext_edge.export.openvino_export as ove
    original = ove._kwargs

    def kwargs(nncf, opts):
        out = original(nncf, opts)
        out["advanced_parameters"] = AdvancedQuantizationParameters(
            overflow_fix=getattr(OverflowFix, state["overflow_fix"].upper()))
        return out
    ove._kwargs = kwargs


def _subset(names: list[str], data: Path, dest: Path) -> Path:
    (dest / "images").mkdir(parents=True)
    (dest / "masks" / "0").mkdir(parents=True)
    for n in names:
        os.symlink(data / "images" / f"{n}.png", dest / "images" / f"{n}.png")
        os.symlink(data / "masks" / "0" / f"{n}.png", dest / "masks" / "0" / f"{n}.png")
    return dest


def _figures(artifact, model, sets: dict) -> dict:
    from cmunext_edge.export.verify import compare, reference_logits
    from cmunext_edge.runtime.registry import open_backend
    out = {}
    with open_backend(artifact) as be:
        for name, cs in sets.items():
            logits = np.concatenate([be.infer(x) for x in cs.batches(1)])
            f = compare(logits, reference_logits(model, cs.inputs), cs.masks, "int8")
            out[name] = {"n": f["n_images"], "mean": round(f["mask_dice_agreement"], 4),
                         "worst": round(f["min_mask_dice_agreement"], 4),
                         "dice": f["dice_vs_ground_truth"] and round(f["dice_vs_ground_truth"], 4),
                         "dice_pytorch": f["dice_vs_ground_truth_pytorch"] and round(f["dice_vs_ground_truth_pytorch"], 4)}
        out["inference_precision"] = be.inference_precision
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "busi-train"))
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--scenarios", nargs="+", default=["train", "demo", "test"])
    p.add_argument("--out", required=True, help="JSON lines output (appended)")
    args = p.parse_args(argv)
    from cmunext_edge.capabilities import detect
    from cmunext_edge.export.calibration import make_calibration_set
    from cmunext_edge.export.pipeline import export
    from cmunext_edge.resources import SAMPLES_DIR
    from cmunext_edge.checkpoints.weights import load_checkpoint
    state = {"overflow_fix": "first_layer"}
    _patch_overflow_fix(state)
    weights = ROOT / "models" / "cmunext-s-busi.safetensors"
    split = json.loads((ROOT / "models" / "cmunext-s-busi.split.json").read_text())
    ckpt = load_checkpoint(weights)
    model, spec, caps = ckpt.build(), ckpt.spec, detect()
    tmp = Path(tempfile.mkdtemp(prefix="int8isa."))
    data = Path(args.data)
    train_dir, val_dir = _subset(split["train"], data, tmp / "train"), _subset(split["val"], data, tmp / "val")
    val = make_calibration_set(val_dir, spec, len(split["val"]))
    samples16 = make_calibration_set(SAMPLES_DIR, spec, 64)
    scenarios = {"train": (train_dir, 64, {"val90": val, "samples16": samples16}),
                 "demo": (SAMPLES_DIR, 64, {"samples16": samples16, "val90": val}),
                 "test": (SAMPLES_DIR, 6, {"samples6": make_calibration_set(SAMPLES_DIR, spec, 6)})}
    print(caps.summary(), flush=True)
    for scenario in args.scenarios:
        calib, size, sets = scenarios[scenario]
        for name in args.configs:
            nncf_opts, state["overflow_fix"] = CONFIGS[name]
            res = export(weights, target="openvino", precision="int8", out=tmp / "out", calib=calib, calib_size=size,
                         verify=False, nncf=dict(nncf_opts), name=f"{scenario}_{name}", log=lambda *_: None)
            row = {"isa": caps.isa, "limits": caps.limits(), "scenario": scenario, "config": name,
                   "nncf": nncf_opts, "overflow_fix": state["overflow_fix"], **_figures(res.artifact, model, sets)}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
