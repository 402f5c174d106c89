"""Soak: N `EdgeSegmenter.segment` calls on one verified artifact, RSS recorded every 1,000.

Usage: python benchmarks/soak.py [--calls 10000] [--artifact PATH] [--markdown OUT.md]
Without --artifact, the shipped CMUNeXt-S is exported to ONNX (FP32) in a temporary folder.
The calls cycle through the bundled sample images by path (decode, header check, preprocess,
inference, postprocess). Growth is measured from the first record (after 1,000 warm calls)
to the largest later one; tests/test_soak.py (marked slow) runs this and requires < 20 MB.
"""
from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak(artifact, calls: int = 10_000, every: int = 1_000, on_record=None, **options) -> dict:
    from cmunext_edge.resources import SAMPLES_DIR
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    images = sorted((SAMPLES_DIR / "images").glob("*.png"))
    seg = EdgeSegmenter.from_artifact(artifact, **options)
    records, started = [], time.perf_counter()
    for i in range(1, calls + 1):
        seg.segment(images[i % len(images)])
        if i % every == 0:
            gc.collect()
            records.append({"calls": i, "rss_mb": round(rss_mb(), 1),
                            "elapsed_s": round(time.perf_counter() - started, 1)})
            if on_record:
                on_record(_result(artifact, calls, records, seg))
    result = _result(artifact, calls, records, seg)
    seg.close()
    return result


def _result(artifact, calls: int, records: list, seg) -> dict:
    base = records[0]["rss_mb"]
    return {"artifact": str(artifact), "calls": calls, "done": records[-1]["calls"], "records": list(records),
            "growth_mb": round(max(r["rss_mb"] for r in records) - base, 1),
            "describe": {k: v for k, v in seg.describe().items() if k in ("backend", "device", "precision")}}


def export_default(folder: Path) -> Path:
    from cmunext_edge.export.pipeline import export
    from cmunext_edge.resources import resolve_weights
    return export(resolve_weights(None), target="onnx", out=folder, calib_size=4, log=lambda m: None).artifact


def markdown(result: dict, command: str) -> str:
    partial = (f" (in progress or stopped: {result['done']:,} of {result['calls']:,} calls recorded)"
               if result["done"] < result["calls"] else "")
    lines = [f"# Soak: {result['calls']:,} EdgeSegmenter.segment calls{partial}",
             "", f"Recorded {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
             f"({platform.python_implementation()} {platform.python_version()}), backend "
             f"{result['describe']}; command: `{command}`.",
             "Timings are not meaningful (a shared, loaded machine); the memory figures are.", "",
             "| calls | RSS (MB) | elapsed (s) |", "|---:|---:|---:|"]
    lines += [f"| {r['calls']:,} | {r['rss_mb']} | {r['elapsed_s']} |" for r in result["records"]]
    lines += ["", f"RSS growth after the first 1,000 calls: **{result['growth_mb']} MB** (limit 20 MB)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--artifact", type=Path)
    p.add_argument("--markdown", type=Path, help="written after every record (a partial run is kept)")
    p.add_argument("--threads", type=int, help="inference threads (backend option)")
    args = p.parse_args(argv)
    command = "python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def record(partial):
        print(f"{partial['done']} calls, RSS {partial['records'][-1]['rss_mb']} MB", flush=True)
        if args.markdown:
            args.markdown.write_text(markdown(partial, command))
    options = {"threads": args.threads} if args.threads else {}
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact or export_default(Path(tmp))
        result = soak(artifact, args.calls, on_record=record, **options)
    print(markdown(result, command))
    return 0 if result["growth_mb"] < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
