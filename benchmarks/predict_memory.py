"""Peak memory of cmunext-predict against the folder size: bounded read-ahead (issue 22).

Makes folders of N images of SIDE x SIDE (the bundled BUSI samples upscaled, PNG) for each N
in --counts, runs `cmunext-predict FOLDER --out OUT --quiet` on each under `/usr/bin/time -v`
(its "Maximum resident set size": the peak RSS of the process), alternating the counts over
--repeats rounds, and writes benchmarks/results/predict_memory_<date>.{json,md} with the exact
commands, the CPU model and every measurement. Acceptance: the largest folder's peak within 15%
of the smallest's (peak memory depends on batch size and workers, not on the folder).

    .venv/bin/python benchmarks/predict_memory.py --counts 20,160 --side 1500 --repeats 2
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, rel, run, tool  # noqa: E402

SAMPLES = ROOT / "cmunext_edge" / "samples" / "busi" / "images"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_folder(folder: Path, count: int, side: int) -> Path:
    folder.mkdir(parents=True)
    sources = sorted(SAMPLES.glob("*.png"))
    for k in range(count):
        img = cv2.resize(cv2.imread(str(sources[k % len(sources)])), (side, side), interpolation=cv2.INTER_CUBIC)
        img[k % side, :] = k % 256                   # no two files identical
        cv2.imwrite(str(folder / f"img{k:04d}.png"), img)
    return folder


def peak_rss_mb(cmd: list[str], log: list[str]) -> tuple[float, int, str]:
    done = run(["/usr/bin/time", "-v", *cmd], log, capture=True, with_stderr=True)
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stdout)
    if not found:
        raise SystemExit(f"no peak RSS in the output of {cmd}:\n{done.stdout[-2000:]}")
    summary = next((ln for ln in done.stdout.splitlines() if "images segmented" in ln), "")
    return int(found.group(1)) / 1024, done.returncode, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="20,160", help="folder sizes (comma list)")
    ap.add_argument("--side", type=int, default=1500, help="image side in pixels")
    ap.add_argument("--repeats", type=int, default=2, help="rounds, alternating the folder sizes")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--weights", default="cmunext-s-busi", help="model (default: the shipped one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="", help="suffix of the record's name, and a note in it (e.g. the code "
                                          "measured, when PYTHONPATH points at another checkout)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="predict_memory."))
    log: list[str] = []
    runs: list[dict] = []
    try:
        folders = {n: make_folder(work / f"n{n}", n, args.side) for n in counts}
        for r in range(args.repeats):
            for n in counts:
                out = work / f"out{n}_{r}"
                cmd = [*tool("cmunext-predict"), str(folders[n]), "--weights", args.weights, "--out", str(out),
                       "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--quiet"]
                mb, rc, summary = peak_rss_mb(cmd, log)
                runs.append({"images": n, "round": r, "peak_rss_mb": round(mb, 1), "exit": rc, "summary": summary})
                print(f"  {n} images: peak RSS {mb:.1f} MB (exit {rc})", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {n: min(x["peak_rss_mb"] for x in runs if x["images"] == n) for n in counts}
    worst = {n: max(x["peak_rss_mb"] for x in runs if x["images"] == n) for n in counts}
    ratio = max(worst.values()) / min(best.values())
    record = {"schema": "cmunext-bench/predict-memory/1", "date": datetime.date.today().isoformat(),
              "cpu": cpu_model(), "side": args.side, "batch_size": args.batch_size, "workers": args.workers,
              "command": "benchmarks/predict_memory.py " + " ".join(sys.argv[1:]),
              "tag": args.tag, "pythonpath": os.environ.get("PYTHONPATH"),
              "runs": runs, "peak_rss_mb_min": best, "peak_rss_mb_max": worst,
              "largest_over_smallest": round(ratio, 3), "within_15_percent": ratio <= 1.15,
              "commands": [c.replace(str(work), "$TMP") for c in log]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"predict_memory_{record['date']}{'_' + args.tag if args.tag else ''}"
    Path(f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# cmunext-predict peak RSS vs folder size ({record['date']})", "",
             f"CPU: {record['cpu']} (machine shared with other work while measured)",
             f"Images: {args.side}x{args.side} PNG, batch size {args.batch_size}, {args.workers} worker(s); "
             f"peak RSS from /usr/bin/time -v", "",
             f"Reproduce: `{'PYTHONPATH=' + record['pythonpath'] + ' ' if record['pythonpath'] else ''}"
             f"{rel(sys.executable)} {record['command']}`", "",
             "| images | round | peak RSS MB | exit |", "|---:|---:|---:|---:|"]
    lines += [f"| {x['images']} | {x['round']} | {x['peak_rss_mb']} | {x['exit']} |" for x in runs]
    lines += ["", f"Largest peak over smallest peak (worst case across rounds): {ratio:.3f} "
                  f"({'within' if ratio <= 1.15 else 'OUTSIDE'} the 15% acceptance)", "", "Commands run:", ""]
    lines += [f"    {c}" for c in record["commands"]]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {rel(stem)}.json and .md; largest/smallest peak {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
