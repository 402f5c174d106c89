"""Scale-out measurement: cmunext-predict single-process vs. --engine ray with 1 and 2 actors on
the same folder, then cmunext-serve with 1 and 2 replicas under a bounded localhost load.

    .venv/bin/python benchmarks/run_scale.py --data ../shared/data/busi-train --n 400

Batch: each run is a separate `cmunext-predict` process on the same ONNX FP32 dynamic artifact
(exported here from the shipped model unless --artifact), into a fresh output folder; reported
are the end-to-end wall time (process start to exit: Ray start-up and actor start included) and
the steady rate (masks written per second between the first and the last mask file, i.e.
without start-up). Serving: `cmunext-serve` in the background, then --clients threads POST the
same images for at most --requests requests or --seconds seconds (localhost only), after a
warm-up; requests/s and p50/p99 latency. Writes benchmarks/results/scale_<date>.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, rel, run, tool  # noqa: E402

import numpy as np  # noqa: E402


def load_line() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def batch_run(name, cmd, out: Path, n: int, log) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    done = run(cmd + ["--out", rel(out), "--quiet", "--no-overlay"], log, capture=True)
    wall = time.perf_counter() - t0
    stamps = sorted(p.stat().st_mtime for p in (out / "masks").iterdir())
    steady = (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9) if len(stamps) > 1 else None
    row = {"run": name, "images": len(stamps), "exit": done.returncode, "wall_s": round(wall, 2),
           "images_per_s_end_to_end": round(n / wall, 2),
           "images_per_s_steady": round(steady, 2) if steady else None, "load": load_line()}
    print(row, flush=True)
    return row


def _post(url: str, body: bytes) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=120) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
    return (time.perf_counter() - t) * 1e3


def load_test(url: str, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """`clients` threads, each posting in a loop until `requests` in all or `seconds` pass."""
    for b in bodies[:clients]:
        _post(url, b)                                   # warm-up
    lat, errors, lock, counter = [], [], threading.Lock(), iter(range(requests))
    deadline = time.perf_counter() + seconds

    def client():
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                ms = _post(url, bodies[i % len(bodies)])
                with lock:
                    lat.append(ms)
            except Exception as exc:   # counted, not fatal: the figure says how many failed
                with lock:
                    errors.append(str(exc))
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": len(errors), "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "clients": clients, "load": load_line()}


def serve_run(artifact: Path, replicas: int, port: int, bodies, args, log) -> dict:
    cmd = tool("cmunext-serve") + [rel(artifact), "--replicas", str(replicas), "--port", str(port)]
    log.append(" ".join(cmd) + "  # background, SIGTERM after the load")
    logfile = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logfile, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while "serving" not in Path(logfile.name).read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("cmunext-serve did not start:\n" + Path(logfile.name).read_text()[-2000:])
            time.sleep(1)
        row = {"replicas": replicas, **load_test(f"http://127.0.0.1:{port}/segment", bodies, args.clients,
                                                 args.requests, args.seconds)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(row, flush=True)
    return row


def make_folder(data: Path, n: int, folder: Path) -> Path:
    """Official layout with the first `n` images of `data` (symlinks, masks included)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks" / "0").mkdir(parents=True)
    images = sorted((data / "images").iterdir())[:n]
    if len(images) < n:
        raise SystemExit(f"{data} has only {len(images)} images, {n} asked")
    for img in images:
        os.symlink(img.resolve(), folder / "images" / img.name)
        if (data / "masks" / "0" / img.name).exists():
            os.symlink((data / "masks" / "0" / img.name).resolve(), folder / "masks" / "0" / img.name)
    return folder


def markdown(res: dict) -> str:
    b = {r["run"]: r for r in res["batch"]}
    lines = [f"# Scale-out measurement, {res['date']}", "", f"Machine: {res['machine']}", "",
             f"Artifact: `{res['artifact']}`; {res['n']} images of `{res['data']}`; batch size "
             f"{res['batch_size']}; commands in `{res['name']}.json` (`commands`).", "",
             "## Batch (`cmunext-predict`)", "",
             "| run | images | wall s | img/s end to end | img/s steady | fixed cost s | load during run |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["batch"]:   # fixed cost: wall time beyond what the steady rate explains (start-up, load)
        fixed = r["wall_s"] - r["images"] / r["images_per_s_steady"] if r["images_per_s_steady"] else None
        lines.append(f"| {r['run']} | {r['images']} | {r['wall_s']} | {r['images_per_s_end_to_end']} | "
                     f"{r['images_per_s_steady']} | {fixed:.1f} | {r['load']} |")
    one, ray1, ray2 = b.get("single-process"), b.get("ray 1 actor"), b.get("ray 2 actors")
    if one and ray1 and ray2:
        lines += ["", f"Ray 1 actor / single process (steady): "
                  f"{ray1['images_per_s_steady'] / one['images_per_s_steady']:.2f} (acceptance >= 0.80); "
                  f"end to end {ray1['images_per_s_end_to_end'] / one['images_per_s_end_to_end']:.2f}. "
                  f"2 actors / 1 actor (steady): {ray2['images_per_s_steady'] / ray1['images_per_s_steady']:.2f}."]
    if res.get("serve"):
        lines += ["", "## Serving (`cmunext-serve`, localhost, bounded load)", "",
                  "| replicas | clients | requests | errors | s | req/s | p50 ms | p99 ms | load |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in res["serve"]:
            lines.append(f"| {r['replicas']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['seconds']} | "
                         f"{r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['load']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="official-layout dataset (images/, masks/0/)")
    p.add_argument("--n", type=int, default=400, help="images (default 400)")
    p.add_argument("--artifact", type=Path, help="ONNX artifact (default: export the shipped model)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--clients", type=int, default=8, help="concurrent serving clients (default 8)")
    p.add_argument("--requests", type=int, default=200, help="serving requests per run at most (default 200)")
    p.add_argument("--seconds", type=float, default=60, help="serving seconds per run at most (default 60)")
    p.add_argument("--port", type=int, default=18765)
    p.add_argument("--skip-serve", action="store_true")
    p.add_argument("--name", default=f"scale_{date.today().isoformat()}")
    p.add_argument("--render", type=Path, help="only rewrite the .md of a recorded .json")
    args = p.parse_args()
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return
    if args.data is None:
        p.error("--data is required")
    log: list[str] = []
    artifact = args.artifact
    if artifact is None:
        run(tool("cmunext-export") + ["--weights", "models/cmunext-s-busi.safetensors", "--target", "onnx",
                                      "--dynamic", "--out", "exports/scale"], log)
        artifact = ROOT / "exports/scale/cmunext-s-busi_fp32_dynamic.onnx"
    work = Path(tempfile.mkdtemp(prefix="cmunext_scale_"))
    try:
        folder = make_folder(args.data, args.n, work / "data")
        base = tool("cmunext-predict") + [str(folder), "--weights", rel(artifact), "--batch-size", str(args.batch_size)]
        batch = [batch_run("single-process", base, work / "one", args.n, log),
                 batch_run("ray 1 actor", base + ["--engine", "ray", "--actors", "1"], work / "ray1", args.n, log),
                 batch_run("ray 2 actors", base + ["--engine", "ray", "--actors", "2"], work / "ray2", args.n, log)]
        bodies = [img.read_bytes() for img in sorted((folder / "images").iterdir())[:64]]
        served = [] if args.skip_serve else [serve_run(artifact, r, args.port + r, bodies, args, log) for r in (1, 2)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {"name": args.name, "date": date.today().isoformat(), "machine": load_line(), "artifact": rel(artifact),
           "data": rel(args.data), "n": args.n, "batch_size": args.batch_size, "batch": batch, "serve": served,
           "commands": log}
    out = ROOT / "benchmarks" / "results"
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
