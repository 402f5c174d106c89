"""Memory of `cmunext-serve` under one oversized chunked upload (docs/scale-out.md, "The body is
read as a stream"): a `Transfer-Encoding: chunked` POST of --mib MiB of zeros, no Content-Length.

    .venv/bin/python benchmarks/serve_upload_memory.py --mib 300 --runs 3

Starts `cmunext-serve` on the shipped model with its defaults (--max-bytes 20 MiB), finds Ray
Serve's replica and HTTP proxy processes, samples their resident memory every 20 ms before and
during the upload, and records: the answer (413 expected), how many MiB the client had sent when
the server stopped reading (connection reset), and each process's memory before and at its peak.
Writes benchmarks/results/serve_upload_memory_<date>.{md,json}.
"""
from __future__ import annotations

import argparse
import http.client
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, python, tool  # noqa: E402

MIB = 1 << 20
ROLES = {"replica": "ServeReplica", "proxy": "ProxyActor"}     # Ray's process titles


def cpu_name() -> str:
    """Model name, family and model (AMD's 'AMD EPYC' alone does not tell Zen 3 from Zen 4)."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor() or "unknown"
    return f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


def serve_processes() -> dict[str, psutil.Process]:
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        for role, title in ROLES.items():
            if title in line and role not in found:
                found[role] = proc
    return found


class Sampler(threading.Thread):
    """Peak RSS (MB) of each process, sampled every 20 ms until stopped."""

    def __init__(self, procs: dict[str, psutil.Process]):
        super().__init__(daemon=True)
        self.procs, self.peak, self.halt = procs, {r: 0.0 for r in procs}, threading.Event()
        self.series: list[tuple] = []               # (seconds since start, MB of each process)
        self.t0 = time.perf_counter()

    def run(self):
        while not self.halt.is_set():
            row = [round(time.perf_counter() - self.t0, 2)]
            for role, proc in self.procs.items():
                try:
                    mb = proc.memory_info().rss / 1e6
                except psutil.Error:
                    mb = 0.0
                self.peak[role] = max(self.peak[role], mb)
                row.append(round(mb))
            self.series.append(tuple(row))
            time.sleep(0.02)


def chunked_upload(port: int, mib: int) -> dict:
    """POST `mib` MiB of zeros in 1 MiB chunks -> answer status (or None) and MiB sent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/segment")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.endheaders()
    chunk, sent, stopped_by = b"\0" * MIB, 0, None
    try:
        for _ in range(mib):
            conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += 1
        conn.send(b"0\r\n\r\n")
    except OSError as exc:                   # the server closed the connection: it stopped reading
        stopped_by = type(exc).__name__
    status = None
    try:
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        pass
    conn.close()
    return {"status": status, "mib_sent": sent, "client_stopped_by": stopped_by}


def start_server(port: int, log: Path) -> subprocess.Popen:
    cmd = tool("cmunext-serve") + ["cmunext-s-busi", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while "serving" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.terminate()
            raise SystemExit("cmunext-serve did not start:\n" + log.read_text()[-2000:])
        time.sleep(1)
    return proc


def measure(port: int, mib: int) -> dict:
    log = Path(tempfile.mkdtemp()) / "serve.log"
    server = start_server(port, log)
    try:
        time.sleep(3)                        # let the replica settle after its self-test
        procs = serve_processes()
        missing = set(ROLES) - set(procs)
        if missing:
            raise SystemExit(f"no Ray Serve process found for {sorted(missing)}")
        before = {r: round(p.memory_info().rss / 1e6) for r, p in procs.items()}
        sampler = Sampler(procs)
        sampler.start()
        answer = chunked_upload(port, mib)
        answer["upload_s"] = round(time.perf_counter() - sampler.t0, 2)
        time.sleep(5)
        sampler.halt.set()
        sampler.join()
        after = {r: round(p.memory_info().rss / 1e6) for r, p in procs.items()}
    finally:
        server.terminate()
        server.wait(timeout=60)
    every = max(1, len(sampler.series) // 40)       # about 40 points of the series are kept
    return {**answer, "rss_mb_before": before, "rss_mb_peak": {r: round(v) for r, v in sampler.peak.items()},
            "rss_mb_5s_after": after, "series_columns": ["s", *procs], "series": sampler.series[::every]}


def markdown(res: dict) -> str:
    head = [f"# cmunext-serve: memory under a {res['mib']} MiB chunked upload, {res['date']}", "",
            f"Machine: {res['machine']}; Ray {res['ray']}", "", f"Command: `{res['command']}`", "",
            "Server: `cmunext-serve cmunext-s-busi` with its defaults (--max-bytes 20 MiB, 1 replica), "
            "started afresh for each run.", ""]
    return "\n".join(head + [line for i, run in enumerate(res["runs"], 1)
                              for line in [f"## Run {i}", ""] + run_lines(run)])


def run_lines(res: dict) -> list[str]:
    b, p = res["rss_mb_before"], res["rss_mb_peak"]
    return [
        f"- answer: {res['status']} (client: {res['client_stopped_by'] or 'sent everything'} after "
        f"{res['mib_sent']} MiB sent)",
        f"- replica resident memory: {b['replica']} -> {p['replica']} MB at its peak, "
        f"{res['rss_mb_5s_after']['replica']} MB 5 s after the answer",
        f"- Ray HTTP proxy resident memory: {b['proxy']} -> {p['proxy']} MB at its peak, "
        f"{res['rss_mb_5s_after']['proxy']} MB 5 s after the answer",
        f"- the upload took {res['upload_s']} s; memory over time (s, MB) in the JSON (`series`)", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=300, help="MiB of zeros to upload (default 300)")
    ap.add_argument("--port", type=int, default=8765, help="HTTP port for the server (default 8765)")
    ap.add_argument("--runs", type=int, default=3, help="fresh servers, one upload each (default 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    res = {"date": date.today().isoformat(), "mib": args.mib,
           "machine": f"{cpu_name()}, {psutil.cpu_count()} CPUs, {platform.platform()}",
           "ray": __import__("ray").__version__,
           "command": shlex.join([python(), "benchmarks/serve_upload_memory.py", "--mib", str(args.mib),
                                  "--runs", str(args.runs)]),
           "runs": [measure(args.port, args.mib) for _ in range(args.runs)]}
    stem = args.out / f"serve_upload_memory_{res['date']}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
