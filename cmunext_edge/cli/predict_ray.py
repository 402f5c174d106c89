"""`cmunext-predict SOURCE --engine ray [--address ADDR] [--actors N]`: the command-line side of
ray_batch.run_ray_job (same outputs, report lines and exit codes as the single-machine job)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from cmunext_edge._deps import MissingDependencyError
from cmunext_edge.cli.common import fail
from cmunext_edge.predict.job import report_job
from cmunext_edge.progress import Progress

PROG = "cmunext-predict"


def predict_with_ray(args, samples, unread=()) -> int:
    """Run the job on Ray; `unread` (files of the source not read) is reported with the skipped."""
    from cmunext_edge.scale.ray_batch import RayJobOptions, run_ray_job
    from cmunext_edge.cli.predict_dicom import dicom_segs, fractional
    where = f"Ray cluster at {args.address}" if args.address else "a local Ray instance"
    print(f"engine: ray ({args.actors} actor{'s' if args.actors > 1 else ''} on {where})")
    started = time.perf_counter()
    try:
        with Progress(len(samples), "segmenting", enabled=not args.quiet) as bar:
            options = RayJobOptions(address=args.address, actors=args.actors, batch_size=args.batch_size,
                                    device=args.device, write_overlays=not args.no_overlay,
                                    trusted_keys=args.trusted_key, max_pixels=args.max_pixels,
                                    write_probabilities=fractional(args))
            result = run_ray_job(args.weights, samples, Path(args.out), options, progress=bar,
                                 log=lambda m: print(m, file=sys.stderr))
    except (MissingDependencyError, FileNotFoundError, ConnectionError) as exc:
        return fail(PROG, str(exc))
    elapsed = time.perf_counter() - started
    print("(the time below includes Ray's start-up)")
    dicom_segs(args, samples, result)
    return report_job(result, args.out, args.summary_json, elapsed, quiet=args.quiet, prog=PROG, unread=unread)
