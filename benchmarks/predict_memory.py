"""Peak memory of cmunext-predict against the folder size: bounded read-ahead (issue 22).

Makes folders of N images of SIDE x SIDE (the bundled BUSI samples upscaled, PNG) for each N
in --counts, runs `cmunext-predict FOLDER --out OUT --quiet` on each under `/usr/bin/time -v`
(its "Maximum resident set size": the peak RSS of the process), alternating the counts over
--repeats rounds, and writes benchmarks/results/predict_memory_<date>.{json,md} with the exact
commands, the CPU model and every measurement. Acceptance: the largest folder's peak within 15%
of the smallest's (peak memory depends on batch size and workers, not on the folder). --heaps
compares cmunext-predict as shipped with other CMUNEXT_MMAP_THRESHOLD settings in the same run
(0: glibc's dynamic default, what the job had before cmunext_edge/predict/heap.py).

    .venv/bin/python benchmarks/predict_memory.py --counts 20,160 --side 1500 --repeats 3 --heaps default,0
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


def peak_rss_mb(cmd: list[str], log: list[str]) -> tuple[float, float, int, str]:
    """(peak RSS MB, wall seconds, exit code, the job's summary line) of `cmd` under /usr/bin/time -v."""
    done = run(["/usr/bin/time", "-v", *cmd], log, capture=True, with_stderr=True)
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stdout)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stdout)
    if not found or not wall:
        raise SystemExit(f"no peak RSS or wall time in the output of {cmd}:\n{done.stdout[-2000:]}")
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    summary = next((ln for ln in done.stdout.splitlines() if "images segmented" in ln), "")
    return int(found.group(1)) / 1024, seconds, done.returncode, summary


def heap_prefix(heap: str) -> list[str]:
    """The command prefix of a --heaps entry: 'default' runs cmunext-predict as shipped (its bounded
    heap, cmunext_edge/predict/heap.py); a number sets CMUNEXT_MMAP_THRESHOLD (0: glibc's dynamic default)."""
    return [] if heap == "default" else ["env", f"CMUNEXT_MMAP_THRESHOLD={int(heap)}"]


def measure(args, folders: dict, heaps: list[str], log: list[str], work: Path) -> list[dict]:
    """Every (round, heap, count) run, alternating, so that load drifts hit all alike."""
    runs = []
    for r in range(args.repeats):
        for heap in heaps:
            for n, folder in folders.items():
                out = work / f"out{n}_{r}"
                cmd = [*heap_prefix(heap), *tool("cmunext-predict"), str(folder), "--weights", args.weights,
                       "--out", str(out), "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--quiet"]
                mb, wall, rc, summary = peak_rss_mb(cmd, log)
                runs.append({"heap": heap, "images": n, "round": r, "peak_rss_mb": round(mb, 1),
                             "wall_s": round(wall, 2), "exit": rc, "summary": summary})
                print(f"  heap {heap}, {n} images: peak RSS {mb:.1f} MB, {wall:.1f} s (exit {rc})", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    return runs


def per_heap(runs: list[dict], heaps: list[str], counts: list[int]) -> dict:
    """Per heap: the peaks' range per folder size, largest over smallest, mean wall per image."""
    out = {}
    for heap in heaps:
        mine = [x for x in runs if x["heap"] == heap]
        best = {n: min(x["peak_rss_mb"] for x in mine if x["images"] == n) for n in counts}
        worst = {n: max(x["peak_rss_mb"] for x in mine if x["images"] == n) for n in counts}
        ratio = max(worst.values()) / min(best.values())
        per_image = sum(x["wall_s"] for x in mine) / sum(x["images"] for x in mine)
        out[heap] = {"peak_rss_mb_min": best, "peak_rss_mb_max": worst, "largest_over_smallest": round(ratio, 3),
                     "within_15_percent": ratio <= 1.15, "wall_s_per_image": round(per_image, 3)}
    return out


def markdown(record: dict, args) -> list[str]:
    pp = record["pythonpath"]
    lines = [f"# cmunext-predict peak RSS vs folder size ({record['date']})", "",
             f"CPU: {record['cpu']} (machine shared with other work while measured)",
             f"Images: {args.side}x{args.side} PNG, batch size {args.batch_size}, {args.workers} worker(s); "
             f"peak RSS and wall time from /usr/bin/time -v; heap 'default' is cmunext-predict as shipped, a "
             f"number is CMUNEXT_MMAP_THRESHOLD (0: glibc's dynamic default)", "",
             f"Reproduce: `{'PYTHONPATH=' + pp + ' ' if pp else ''}{rel(sys.executable)} {record['command']}`", "",
             "| heap | images | round | peak RSS MB | wall s | exit |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {x['heap']} | {x['images']} | {x['round']} | {x['peak_rss_mb']} | {x['wall_s']} | {x['exit']} |"
              for x in record["runs"]]
    lines += ["", "| heap | peak MB (min-max over every run) | largest peak over smallest | wall s per image |",
              "|---|---:|---:|---:|"]
    for heap, h in record["heaps"].items():
        lo, hi = min(h["peak_rss_mb_min"].values()), max(h["peak_rss_mb_max"].values())
        verdict = "within" if h["within_15_percent"] else "OUTSIDE"
        lines.append(f"| {heap} | {lo}-{hi} | {h['largest_over_smallest']:.3f} ({verdict} 15%) | {h['wall_s_per_image']} |")
    lines += ["", "Commands run:", ""] + [f"    {c}" for c in record["commands"]]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="20,160", help="folder sizes (comma list)")
    ap.add_argument("--side", type=int, default=1500, help="image side in pixels")
    ap.add_argument("--repeats", type=int, default=2, help="rounds, alternating the folder sizes")
    ap.add_argument("--heaps", default="default", help="comma list: 'default' (cmunext-predict as shipped) and/or "
                    "CMUNEXT_MMAP_THRESHOLD values in bytes (0: glibc's dynamic default), e.g. default,0")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--weights", default="cmunext-s-busi", help="model (default: the shipped one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="", help="suffix of the record's name, and a note in it (e.g. the code "
                                          "measured, when PYTHONPATH points at another checkout)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    heaps = [h.strip() for h in args.heaps.split(",") if h.strip()]
    for heap in heaps:                          # a bad entry fails before any folder is made
        if heap != "default" and not heap.isdigit():
            ap.error(f"--heaps: {heap!r} is neither 'default' nor a byte count")
    work = Path(tempfile.mkdtemp(prefix="predict_memory."))
    log: list[str] = []
    try:
        runs = measure(args, {n: make_folder(work / f"n{n}", n, args.side) for n in counts}, heaps, log, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"schema": "cmunext-bench/predict-memory/2", "date": datetime.date.today().isoformat(),
              "cpu": cpu_model(), "side": args.side, "batch_size": args.batch_size, "workers": args.workers,
              "command": "benchmarks/predict_memory.py " + " ".join(sys.argv[1:]),
              "tag": args.tag, "pythonpath": os.environ.get("PYTHONPATH"), "runs": runs,
              "heaps": per_heap(runs, heaps, counts), "commands": [c.replace(str(work), "$TMP") for c in log]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"predict_memory_{record['date']}{'_' + args.tag if args.tag else ''}"
    Path(f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    Path(f"{stem}.md").write_text("\n".join(markdown(record, args)) + "\n")
    print(f"wrote {rel(stem)}.json and .md; largest/smallest peak per heap: "
          + ", ".join(f"{h} {v['largest_over_smallest']:.3f}" for h, v in record["heaps"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
