"""Timing primitives of `cmunext-bench`, shared by auto selection and the benchmark scripts.

All latencies are wall-clock `time.perf_counter()` around one call, in milliseconds.
`overhead.check_ort_overhead` shows that these loops add nothing measurable.
"""
from __future__ import annotations

import contextlib
import threading
import time

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


def alternating_rounds(fns: dict, inputs: list, rounds: int, iters: int, warmup: int = 3) -> dict:
    """{name: [round 1 ms list, round 2 ...]}: every `fns[name](x)` timed once per round, in turn.

    Alternating the configurations round by round lets background load disturb all of them
    alike (a fair A/B on a shared machine); each round starts with `warmup` untimed calls."""
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name].append(time_calls(fn, inputs, warmup, iters))
    return out


@contextlib.contextmanager
def torch_threads(n: int | None):
    """PyTorch's intra-op thread count set to `n` inside the block and restored after it
    (process-wide state); `n` None or 0 leaves it alone and does not import torch."""
    if not n:
        yield
        return
    from cmunext_edge._deps import require
    torch = require("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    stop = threading.Event()
    finished = [threading.Event() for _ in backends]
    errors: list[Exception] = []

    def worker(i, be):
        try:
            be.infer(batch)                     # per-thread warm-up
            barrier.wait()
            deadline = time.perf_counter() + seconds
            while not stop.is_set():
                be.infer(batch)
                counts[i] += batch.shape[0]
                if time.perf_counter() >= deadline:
                    break
        except threading.BrokenBarrierError:    # the caller was interrupted, or another stream failed
            pass
        except Exception as exc:                # a stream that fails stops them all; the caller raises it
            errors.append(exc)
            stop.set()
            barrier.abort()
        finally:
            finished[i].set()

    threads = [threading.Thread(target=worker, args=(i, be), daemon=True) for i, be in enumerate(backends)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
        t0 = time.perf_counter()
        for done in finished:
            done.wait()
    except threading.BrokenBarrierError:        # a stream failed before the start (warm-up)
        for done in finished:
            done.wait()
    except BaseException:
        # Ctrl-C/SIGTERM: stop the streams and wait until none is inside the runtime (a daemon
        # thread left there when the interpreter exits aborts the process: exit 134, not 130/143).
        # Not Thread.join: a join interrupted by a signal marks the running thread stopped
        # (CPython before 3.13), so a second join would return at once.
        stop.set()
        barrier.abort()
        for done in finished:
            while True:
                try:
                    done.wait()
                    break
                except KeyboardInterrupt:
                    continue
        raise
    if errors:          # a stream failed: its error, not a rate over the streams that ran on
        raise errors[0]
    return sum(counts) / (time.perf_counter() - t0)


def median_ms(fn, items) -> float:
    """Median milliseconds of `fn(item)` over `items`, each called once."""
    return float(np.median(time_calls(fn, list(items), 0, len(items))))
