"""The acceptance check of the bench's timing: it adds nothing measurable over a bare runtime loop.

`check_ort_overhead` compares the batch-1 p50 measured the way the bench measures it
(`time_calls` around `Backend.infer`, which validates and converts the input) with a bare
`onnxruntime.InferenceSession.run` loop on the same input, in this process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.runtime.registry import open_backend
from cmunext_edge.bench.inputs import load_images
from cmunext_edge.bench.timing import latency_stats, time_calls


def check_ort_overhead(path, iters: int = 200, warmup: int = 20, rounds: int = 5, images: Path | None = None,
                       backend=None, tolerance: float = 0.15) -> dict:
    """Batch-1 p50 of the bench's timing (`time_calls` around `Backend.infer`) against a plain
    `onnxruntime.InferenceSession.run` loop on the same input, in this process.

    The two are measured in alternating blocks (`rounds` each) so that background load
    disturbs both alike. `within_tolerance` is |bench / plain - 1| <= `tolerance`.
    """
    ort = require("onnxruntime")
    own = backend is None
    backend = backend or open_backend(path, device="cpu")
    try:
        bgrs = load_images(images, 4)
        xs = [backend.spec.preprocess(b)[None] for b in bgrs]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else 1
        feeds = [{inp.name: np.ascontiguousarray(np.repeat(x, fixed, axis=0))} for x in xs]
        per = max(1, iters // rounds)
        bench_ms, plain_ms = [], []
        time_calls(backend.infer, xs, warmup, 0)
        time_calls(lambda f: session.run(None, f), feeds, warmup, 0)
        for _ in range(rounds):
            bench_ms += time_calls(backend.infer, xs, 0, per)
            plain_ms += time_calls(lambda f: session.run(None, f), feeds, 0, per)
        b, p = latency_stats(bench_ms), latency_stats(plain_ms)
        ratio = b["p50"] / p["p50"]
        return {"artifact": str(path), "bench_backend": backend.describe(), "bench_ms": b, "plain_ort_ms": p,
                "plain_ort": f"onnxruntime {ort.__version__} InferenceSession(CPUExecutionProvider), "
                             f"default session options",
                "ratio_p50": ratio, "tolerance": tolerance, "within_tolerance": abs(ratio - 1) <= tolerance,
                "load_average": list(os.getloadavg())}
    finally:
        if own:
            backend.close()
