"""A batch job's peak memory that does not depend on how its threads happen to interleave.

glibc's malloc serves a block of 128 KiB or more from its own mapping, returned to the OS when
freed, but raises that threshold to the size of each such block freed (up to 32 MiB). After the
first batch, PyTorch's activations (tens of MB at batch 8) and a large image's buffers (6.75 MB
BGR, 9 MB probability map at 1500x1500) therefore come from the heaps of the threads that
allocated them (the reader, the workers, the runtime's own), and what is freed stays there. The
job's peak then depends on how the threads' allocations interleave: with the shipped model
(PyTorch) 898-994 MB in one run and 819-1028 MB in another, for the same 20 or 160 images of
1500x1500 on 2 cores.

`bound_heap()` fixes the threshold at 4 MiB for the process (glibc's `mallopt(M_MMAP_THRESHOLD)`):
every block from 4 MiB up keeps its own mapping and goes back to the OS when freed, so the peak is
what the job holds, not what the heaps kept. Measured on Zen 4, 2 cores, in the same runs
(benchmarks/results/predict_memory_2026-12-06*.md): PyTorch at 1500x1500, peaks 620-629 MB
against 898-994 MB and 0.395 s/image against 0.31 (page faults of fresh mappings); PyTorch at
600x600, 534-550 MB against 718-774 MB, 0.33 s/image against 0.252; OpenVINO INT8 at 1500x1500
(the runtime keeps its own memory), 377-389 MB against 407-428 MB, 0.178 s/image against 0.163.
A bounded, repeatable peak is the default for the unattended batch job; CMUNEXT_MMAP_THRESHOLD
sets another threshold in bytes (0: glibc's dynamic default, the faster choice where memory is
plentiful), and a MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES mmap_threshold set by the user wins.
`cmunext-predict` calls it; a library user decides for their own process. Other C libraries
(musl, macOS, Windows): nothing is changed.
"""
from __future__ import annotations

import ctypes
import os

ENV = "CMUNEXT_MMAP_THRESHOLD"
DEFAULT_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3             # glibc malloc.h
_MAX_THRESHOLD = 32 << 20          # glibc's HEAP_MAX / 2 on 64-bit: mallopt refuses more


def _glibc():
    """glibc's C library (the process's own symbols), or None where the process runs on another one."""
    try:
        return ctypes.CDLL(None) if os.confstr("CS_GNU_LIBC_VERSION") else None
    except (AttributeError, OSError, ValueError):     # no confstr (Windows), or the name is unknown (musl)
        return None


def threshold_from(environ) -> int | None:
    """The threshold to set (None: leave malloc as the user or glibc has it). A bad
    CMUNEXT_MMAP_THRESHOLD is a ValueError naming it."""
    if "MALLOC_MMAP_THRESHOLD_" in environ or "mmap_threshold" in environ.get("GLIBC_TUNABLES", ""):
        return None
    raw = environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_THRESHOLD:
        raise ValueError(f"{ENV}={raw!r}: give a byte count from 0 (glibc's dynamic default) to {_MAX_THRESHOLD}")
    return value or None


def bound_heap(environ=None) -> int | None:
    """Fix glibc's mmap threshold for this process (module docstring); the threshold set, or None."""
    value = threshold_from(os.environ if environ is None else environ)
    libc = _glibc() if value else None
    if libc is None or libc.mallopt(_M_MMAP_THRESHOLD, value) != 1:
        return None
    return value
