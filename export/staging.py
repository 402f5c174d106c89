"""Staging folders of exports: SIGTERM cleans up like Ctrl-C, and stale ones are cleared.

An export builds inside `<out>/.<stem>.XXXX.staging` (owner.pid inside names its process).
While an export runs in the main thread, SIGTERM raises ExportInterrupted (a KeyboardInterrupt),
so every `finally` runs and the folder is removed. A folder left by a process that was killed
outright (SIGKILL, power loss) is removed by the next export into the same folder once its
process is gone (a folder without owner.pid is kept for an hour: it may be starting).
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

STAGING_SUFFIX = ".staging"
OWNER_FILE = "owner.pid"


class ExportInterrupted(KeyboardInterrupt):
    """SIGTERM during an export (raised like Ctrl-C, so that every cleanup runs)."""
    signum = signal.SIGTERM      # what stopped it: a CLI exits 143 for it, as for any SIGTERM


class sigterm_raises:
    """While the block runs in the main thread, SIGTERM raises `error()` (by default
    ExportInterrupted, so that an export's cleanup runs); the previous handler comes back after."""

    def __init__(self, error=lambda: ExportInterrupted("export interrupted by SIGTERM; nothing was written")):
        self.error = error

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    def _raise(self, signum, frame):
        raise self.error()

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _owner_alive(staging: Path) -> bool:
    try:
        pid = int((staging / OWNER_FILE).read_text().strip())
    except (OSError, ValueError):
        return time.time() - staging.stat().st_mtime < 3600   # no owner yet: young ones are kept
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_staging(out_dir: Path, log=None) -> list[Path]:
    """Remove staging folders in `out_dir` whose exporting process is gone; -> those removed."""
    removed = []
    for staging in Path(out_dir).glob(".*" + STAGING_SUFFIX):
        if staging.is_dir() and not _owner_alive(staging):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
            if log:
                log(f"removed stale staging folder {staging.name} (its export process is gone)")
    return removed
