"""A dependency-free progress bar with rate and ETA, written to stderr.

On a terminal it redraws one line; in logs it prints a line about every 10% so that
background jobs stay readable.
"""
from __future__ import annotations

import sys
import time

from cmunext_edge.fileio import printable


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, desc: str = "", stream=None, enabled: bool = True):
        self.total, self.desc, self.n = max(0, total), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last = time.perf_counter()
        self.postfix = ""
        self._next_log = 0.1

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = printable(postfix)
        if not self.enabled:
            return
        now, frac = time.perf_counter(), self.n / self.total
        if self.tty and (now - self.last > 0.2 or self.n >= self.total):
            self.stream.write("\r" + self.line() + " " * 4)
            self.stream.flush()
            self.last = now
        elif not self.tty and (frac >= self._next_log or self.n >= self.total):
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            while self._next_log <= frac:
                self._next_log += 0.1

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * self.n / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        extra = f" {self.postfix}" if self.postfix else ""
        return (f"{self.desc} [{bar}] {self.n}/{self.total} {_fmt(elapsed)}<{_fmt(eta)} "
                f"{rate:.2f} it/s{extra}")

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def track(iterable, total: int | None = None, desc: str = "", enabled: bool = True):
    total = len(iterable) if total is None else total
    with Progress(total, desc, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.update()
