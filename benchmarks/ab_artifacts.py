"""A/B latency of exported artifacts in one process, alternating rounds (batch 1, Backend.infer).

On a shared or virtualised 2-core machine two `cmunext-bench` runs minutes apart differ by 10-20%
in p50; alternating the configurations round by round lets background load disturb all of them
alike, so the ratios are what this script is for. Each configuration is LABEL=PATH[@key=value,...]
(the bench's '@' backend options, e.g. model.xml@inference_precision=bf16).

    .venv/bin/python benchmarks/ab_artifacts.py --rounds 15 --iters 30 \\
        int8=exports/m/int8.xml int8-bf16=exports/m/int8.xml@inference_precision=bf16 \\
        fp32-ovdefault=exports/m/fp32.xml@inference_precision=bf16 [--json OUT.json]

Prints, per configuration, the median of the round medians, the spread of the round medians and
the ratio to the first configuration (and writes them with every round's median to --json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmunext_edge.bench.timing import alternating_rounds       # noqa: E402
from cmunext_edge.capabilities import detect                   # noqa: E402
from cmunext_edge.cli.bench import parse_options               # noqa: E402
from cmunext_edge.runtime.registry import open_backend         # noqa: E402


def parse_config(text: str) -> tuple[str, Path, dict]:
    label, sep, rest = text.partition("=")
    if not sep or not label:
        raise SystemExit(f"{text!r}: give LABEL=PATH[@key=value,...]")
    path, _, extra = rest.partition("@")
    return label, Path(path), parse_options(extra)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", metavar="LABEL=PATH[@key=value,...]")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=30, help="timed calls per configuration and round")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    configs = [parse_config(c) for c in args.configs]
    backends = {label: open_backend(path, device="cpu", **opts) for label, path, opts in configs}
    try:
        shape = next(iter(backends.values())).input_shape
        x = np.random.default_rng(0).standard_normal((1, *shape[1:])).astype(np.float32)
        rounds = alternating_rounds({k: be.infer for k, be in backends.items()}, [x], args.rounds, args.iters)
        ran_at = {k: getattr(be, "inference_precision", None) for k, be in backends.items()}
    finally:
        for be in backends.values():
            be.close()
    medians = {k: [statistics.median(r) for r in v] for k, v in rounds.items()}
    first = statistics.median(next(iter(medians.values())))
    caps = detect()
    print(f"CPU: {caps.summary()}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{args.rounds} alternating rounds x {args.iters} calls, batch 1")
    result = {"cpu": caps.summary(), "rounds": args.rounds, "iters": args.iters, "configs": {}}
    for (label, path, opts), (k, ms) in zip(configs, medians.items()):
        med = statistics.median(ms)
        print(f"{label:24s} {med:7.2f} ms (round medians {min(ms):.2f}-{max(ms):.2f})  {med / first:.2f}x  "
              f"ran at {ran_at[k]}  [{path}{'@' + str(opts) if opts else ''}]")
        result["configs"][label] = {"artifact": str(path), "options": opts, "ran_at": ran_at[k],
                                    "median_ms": med, "round_medians_ms": ms, "ratio_to_first": med / first}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
