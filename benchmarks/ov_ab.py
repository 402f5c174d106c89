"""A/B timing of OpenVINO graph / quantization variants in one process, alternating rounds.

The experiments of benchmarks/int8_notes.md. A variant is LABEL=KEY+KEY+..., keys:
  fold (BN folding), dense (grouped convs dense), split (grouped convs split per group),
  int8 (NNCF model_type TRANSFORMER, preset performance), int8default (NNCF defaults),
  f32 / bf16 (inference precision; default: the artifact's own, f32 for FP32 IRs and
  OpenVINO's choice for INT8 ones).
Every variant is built by the toolkit's export (auto selection's `export_candidate`, no
verification) and timed through its runtime backend with the bench's `alternating_rounds`.
(The G4 experiment of int8_notes.md, a GELU tanh approximation, changed the model itself and
is not an export option; it was recorded with an earlier version of this script.)

    .venv/bin/python benchmarks/ov_ab.py --weights W --threads 1 \\
        plain-bf16=bf16 fold-bf16=fold+bf16 fold-int8=fold+int8 dense-int8=fold+dense+int8
    add --profile to print where the time of each variant goes (OpenVINO PERF_COUNT, by op type).
"""
from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import numpy as np

KEYS = {"fold", "dense", "split", "int8", "int8default", "f32", "bf16"}


def variant_candidate(label: str, keys: set, threads: int):
    """The auto-selection Candidate (one row of the same table shape) that builds a variant."""
    from cmunext_edge.export.auto import Candidate
    unknown = keys - KEYS
    if unknown:
        raise SystemExit(f"{label}: unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(KEYS))}")
    int8 = keys & {"int8", "int8default"}
    precision = "int8" if int8 else ("bf16" if "bf16" in keys else "fp32")
    nncf = ({"model_type": "transformer", "preset": "performance"} if "int8" in keys
            else {"model_type": None, "preset": "mixed"}) if int8 else None
    runtime = {"hint": "latency", "threads": threads}
    runtime.update({"inference_precision": p for p in ("f32", "bf16") if p in keys})
    graph = {"fold_bn": "fold" in keys, "dense_groups": "dense" in keys, "split_groups": "split" in keys}
    return Candidate(label, ("CPU",), "openvino", precision, graph, nncf, runtime=runtime)


def profile(artifact: str, x: np.ndarray, threads: int, precision: str | None, calls: int = 20) -> str:
    """Where the time goes: OpenVINO's PERF_COUNT per (op type, kernel), top six, ms per call,
    compiled with the inference precision the timed backend ran (`precision`: fp32, bf16, ...)."""
    import openvino as ov
    core = ov.Core()
    cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}.get(precision or "")
    cfg.update({"INFERENCE_PRECISION_HINT": hint} if hint else {})
    req = core.compile_model(core.read_model(artifact), "CPU", cfg).create_infer_request()
    agg = collections.Counter()
    for _ in range(calls):
        req.infer({0: x})
        for p in req.profiling_info:
            agg[(p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1e3 / calls
    return ", ".join(f"{t}/{e} {v:.2f}" for (t, e), v in agg.most_common(6))


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
    from cmunext_edge.bench.timing import alternating_rounds
    from cmunext_edge.export.auto import export_candidate
    from cmunext_edge.export.calibration import make_calibration_set
    from cmunext_edge.runtime.registry import open_backend
    from cmunext_edge.checkpoints.weights import load_checkpoint

    x = make_calibration_set(args.calib, load_checkpoint(args.weights).spec, 64, 0).inputs[:1]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for text in args.variants:
            label, _, spec = text.partition("=")
            cand = variant_candidate(label, set(spec.split("+")), args.threads)
            artifacts[label] = str(export_candidate(args.weights, cand, Path(tmp), args.calib, 64,
                                                    args.threads, log=lambda msg: None).artifact)
        backends = {k: open_backend(a, device="cpu") for k, a in artifacts.items()}
        precisions = {k: be.inference_precision for k, be in backends.items()}
        try:
            rounds = alternating_rounds({k: be.infer for k, be in backends.items()}, [x],
                                        args.rounds, args.iters, warmup=3)
        finally:
            for be in backends.values():
                be.close()
        res = {k: [float(np.median(r)) for r in v] for k, v in rounds.items()}
        print(f"threads {args.threads}, {args.rounds} rounds x {args.iters} calls, median of round medians:")
        for k, v in res.items():
            print(f"  {k:28s} {np.median(v):7.2f} ms  (best round {min(v):.2f})")
        if args.profile:
            for k, a in artifacts.items():
                print(f"{k}: {profile(a, x, args.threads, precisions[k])}")


if __name__ == "__main__":
    main()
