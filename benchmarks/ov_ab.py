"""A/B timing of OpenVINO graph / quantization variants in one process, alternating rounds.

The experiments of benchmarks/int8_notes.md. A variant is LABEL=KEY+KEY+..., keys:
  fold (BN folding), dense (grouped convs dense), split (grouped convs split per group),
  tanh (GELU tanh approximation, lossy), int8 (NNCF model_type TRANSFORMER, preset performance),
  int8default (NNCF defaults), f32 / bf16 (inference precision; default: OpenVINO's choice).

    .venv/bin/python benchmarks/ov_ab.py --weights W --threads 1 \\
        plain-bf16=bf16 fold-bf16=fold+bf16 fold-int8=fold+int8 dense-int8=fold+dense+int8
    add --profile to print where the time of each variant goes (OpenVINO PERF_COUNT, by op type).
"""
from __future__ import annotations

import argparse
import collections
import copy
import time
import warnings

import numpy as np


def build_variant(model, keys: set, calib, tmp: str):
    import nncf
    import onnx
    import onnxslim
    import openvino as ov
    import torch

    from cmunext_edge.export.onnx_export import prepare_model
    m = prepare_model(model, {"fold_bn": "fold" in keys, "dense_groups": "dense" in keys,
                              "split_groups": "split" in keys})
    if "tanh" in keys:
        m = copy.deepcopy(m)
        for mod in m.modules():
            for name, child in mod.named_children():
                if isinstance(child, torch.nn.GELU):
                    setattr(mod, name, torch.nn.GELU(approximate="tanh"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 3, 256, 256),), tmp + ".raw.onnx", dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    onnx.save(onnxslim.slim(onnx.load(tmp + ".raw.onnx")), tmp + ".onnx")
    ir = ov.Core().read_model(tmp + ".onnx")
    if keys & {"int8", "int8default"}:
        kw = ({"model_type": nncf.ModelType.TRANSFORMER, "preset": nncf.QuantizationPreset.PERFORMANCE}
              if "int8" in keys else {})
        ir = nncf.quantize(ir, nncf.Dataset(list(calib.batches(1))), subset_size=len(calib), **kw)
    return ir


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", metavar="LABEL=KEY+KEY")
    p.add_argument("--weights", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calib", help="calibration images (default: bundled samples)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    import openvino as ov
    import tempfile

    from cmunext_edge.export.calibration import make_calibration_set
    from cmunext_edge.weights import load_checkpoint
    ckpt = load_checkpoint(args.weights)
    model, calib = ckpt.build(), make_calibration_set(args.calib, ckpt.spec, 64, 0)
    core, reqs = ov.Core(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(args.variants):
            label, _, spec = text.partition("=")
            keys = set(spec.split("+"))
            cfg = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": args.profile}
            for prec in ("f32", "bf16"):
                if prec in keys:
                    cfg["INFERENCE_PRECISION_HINT"] = prec
            ir = build_variant(model, keys, calib, f"{tmp}/v{i}")
            reqs[label] = core.compile_model(ir, "CPU", cfg).create_infer_request()
    x = calib.inputs[:1]
    res = {k: [] for k in reqs}
    for _ in range(args.rounds):            # alternating: every variant once per round
        for k, req in reqs.items():
            for _ in range(3):
                req.infer({0: x})
            times = []
            for _ in range(args.iters):
                t0 = time.perf_counter()
                req.infer({0: x})
                times.append(time.perf_counter() - t0)
            res[k].append(np.median(times) * 1e3)
    print(f"threads {args.threads}, {args.rounds} rounds x {args.iters} calls, median of round medians:")
    for k, v in res.items():
        print(f"  {k:28s} {np.median(v):7.2f} ms  (best round {min(v):.2f})")
    if args.profile:
        for k, req in reqs.items():
            agg = collections.Counter()
            for p_ in req.profiling_info:
                agg[(p_.node_type, p_.exec_type)] += p_.real_time.total_seconds() * 1e3
            print(f"{k}: " + ", ".join(f"{t}/{e} {v:.2f}" for (t, e), v in agg.most_common(6)))


if __name__ == "__main__":
    main()
