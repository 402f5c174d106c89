"""What `cmunext-bench` measures about the machine itself: memory, CPU, versions, matmul FLOP/s.

Versions are `toolchain.toolchain_versions()`, the same list export manifests record.

Memory. Figures are resident set size (RSS: pages of this process held in RAM) read from
`/proc/self/status`. Before each row the kernel's peak counter (VmHWM) is reset by writing
"5" to `/proc/self/clear_refs` (Linux >= 4.0), so a row's `peak_rss_mb` is the highest RSS
of the whole process while that row loaded its artifact and ran batch-1 latency, and
`added_rss_mb` is that peak minus the RSS just before loading (the artifact's own cost:
weights, runtime graph, arenas, plus any runtime library imported for the first time).
Where the reset is impossible the lifetime peak `ru_maxrss` is reported instead, and
`method` says so (then rows after a larger one under-report their own peak).
"""
from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time

from cmunext_edge.toolchain import toolchain_versions

_STATUS = "/proc/self/status"


def _status_kb(key: str) -> int | None:
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kb() -> int | None:
    return _status_kb("VmRSS")


_RESET_OK: bool | None = None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where not supported."""
    global _RESET_OK
    if _RESET_OK is False:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _RESET_OK = True
    except OSError:
        _RESET_OK = False
    return _RESET_OK


def snapshot(rss_before_kb: int | None) -> dict:
    """Peak RSS since the last reset (MB) and the part added above `rss_before_kb`."""
    hwm = _status_kb("VmHWM") if _RESET_OK else None
    method = "VmHWM since reset (/proc/self/clear_refs)"
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # kB on Linux
        method = "ru_maxrss (process lifetime peak)"
    added = None if rss_before_kb is None else max(0, hwm - rss_before_kb) / 1024
    return {"peak_rss_mb": hwm / 1024, "added_rss_mb": added, "method": method}


# --- machine -----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(seconds: float = 1.0, n: int = 1024) -> tuple[float, str]:
    """fp32 GFLOP/s of an n x n matmul repeated for ~`seconds` (torch if present, else numpy)."""
    try:
        import torch
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm, how = (lambda: torch.mm(a, b)), f"torch.mm fp32 {n}x{n}, {torch.get_num_threads()} threads"
    except ImportError:
        import numpy as np
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = a.T.copy()
        mm, how = (lambda: a @ b), f"numpy matmul fp32 {n}x{n}"
    for _ in range(3):
        mm()
    calls, start = 0, time.perf_counter()
    while True:
        mm()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return 2.0 * n ** 3 * calls / elapsed / 1e9, how


def _capabilities() -> dict:
    from cmunext_edge.capabilities import detect
    return detect().as_dict()


def machine_info(matmul_seconds: float = 1.0) -> dict:
    info = {"cpu": cpu_model(), "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(), "versions": toolchain_versions(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "argv": sys.argv[1:], "capabilities": _capabilities()}
    torch = sys.modules.get("torch")   # PyTorch rows run with this many threads unless threads=N
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    if matmul_seconds > 0:
        info["matmul_gflops"], info["matmul_method"] = matmul_gflops(matmul_seconds)
    return info
