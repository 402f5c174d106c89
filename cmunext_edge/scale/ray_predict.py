"""`cmunext-predict SOURCE --engine ray [--address ADDR] [--actors N]`: the command-line side of
ray_batch.run_ray_job (same outputs, report lines and exit codes as the single-machine job)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from cmunext_edge._deps import MissingDependencyError
from cmunext_edge.cli.common import fail
from cmunext_edge.predict.job import write_reports
from cmunext_edge.progress import Progress

PROG = "cmunext-predict"


def predict_with_ray(args, samples) -> int:
    from cmunext_edge.scale.ray_batch import run_ray_job
    if args.actors < 1:
        return fail(PROG, "--actors must be >= 1")
    where = f"Ray cluster at {args.address}" if args.address else "a local Ray instance"
    print(f"engine: ray ({args.actors} actor{'s' if args.actors > 1 else ''} on {where})")
    started = time.perf_counter()
    try:
        with Progress(len(samples), "segmenting") as bar:
            result = run_ray_job(args.weights, samples, Path(args.out), address=args.address,
                                 actors=args.actors, batch_size=args.batch_size, device=args.device,
                                 write_overlays=not args.no_overlay, progress=bar, trusted_keys=args.trusted_key,
                                 log=lambda m: print(m, file=sys.stderr))
    except (MissingDependencyError, FileNotFoundError, ConnectionError) as exc:
        return fail(PROG, str(exc))
    elapsed = time.perf_counter() - started
    print("(the time below includes Ray's start-up)")
    from cmunext_edge.cli.predict import _report          # the same report, summary and exit code as the local job
    return _report(args, result, elapsed, write_reports)
