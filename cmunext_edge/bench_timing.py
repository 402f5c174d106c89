"""Timing primitives of `cmunext-bench`, and the check that they add nothing measurable.

All latencies are wall-clock `time.perf_counter()` around one call, in milliseconds.
`check_ort_overhead` is the acceptance check for the engine: the batch-1 p50 measured the
way the bench measures it (`time_calls` around `Backend.infer`, which validates and
converts the input) against a bare `onnxruntime.InferenceSession.run` loop.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np


def latency_stats(ms) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()),
            "std": float(a.std()), "min": float(a.min()), "n": int(a.size)}


def time_calls(fn, inputs: list, warmup: int, iters: int, min_time_s: float = 0.0) -> list[float]:
    """Milliseconds of each timed `fn(x)`, cycling through `inputs` after `warmup` calls."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    out, start, i = [], time.perf_counter(), 0
    while i < iters or time.perf_counter() - start < min_time_s:
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return out


def allowed_batches(backend, requested) -> list[int]:
    """A static-batch artifact runs only its own batch; a dynamic one every requested size."""
    fixed = backend.input_shape[0]
    return [fixed] if isinstance(fixed, int) and fixed > 0 else sorted(set(requested))


def measure_throughput(backends: list, batch: np.ndarray, seconds: float) -> float:
    """Images/s with one thread per backend, each calling infer(batch) until the deadline.

    One stream runs in the calling thread, like the latency loop: thread pools of some
    runtimes (PyTorch's OpenMP team) behave differently in a fresh thread.
    """
    if len(backends) == 1:
        be, n = backends[0], 0
        be.infer(batch)
        t0 = time.perf_counter()
        while True:
            be.infer(batch)
            n += batch.shape[0]
            if time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0)
    barrier = threading.Barrier(len(backends) + 1)
    counts = [0] * len(backends)

    def worker(i, be):
        be.infer(batch)                     # per-thread warm-up
        barrier.wait()
        deadline = time.perf_counter() + seconds
        while True:
            be.infer(batch)
            counts[i] += batch.shape[0]
            if time.perf_counter() >= deadline:
                break

    threads = [threading.Thread(target=worker, args=(i, be), daemon=True) for i, be in enumerate(backends)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def median_ms(fn, items) -> float:
    ms = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        ms.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ms))


def check_ort_overhead(path, iters: int = 200, warmup: int = 20, rounds: int = 5, images: Path | None = None,
                       backend=None, tolerance: float = 0.15) -> dict:
    """Batch-1 p50 of the bench's timing (`time_calls` around `Backend.infer`) against a plain
    `onnxruntime.InferenceSession.run` loop on the same input, in this process.

    The two are measured in alternating blocks (`rounds` each) so that background load
    disturbs both alike. `within_tolerance` is |bench / plain - 1| <= `tolerance`.
    """
    from ._deps import require
    from .bench import load_images
    from .runtime.registry import open_backend
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
