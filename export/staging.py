"""Staging folders of exports: SIGTERM cleans up like Ctrl-C, and stale ones are cleared.

An export builds inside `<out>/.<stem>.XXXX.staging` (owner.pid inside names its process).
While an export runs in the main thread, SIGTERM raises ExportInterrupted (a KeyboardInterrupt),
so every `finally` runs and the folder is removed. A folder left by a process that was killed
outright (SIGKILL, power loss) is removed by the next export into the same folder once its
process is gone. Only folders named as an export names them and holding its owner.pid are removed
(one without owner.pid only when empty and an hour old): a user's own folder is never touched.
"""
from __future__ import annotations

import signal
import sys
import threading

# the staging folders themselves (naming, owner.pid, clearing stale ones) are fileio's: bundles use them too
from cmunext_edge.fileio import OWNER_FILE, STAGING_SUFFIX, clear_stale_staging  # noqa: F401


class ExportInterrupted(KeyboardInterrupt):
    """SIGTERM during an export (raised like Ctrl-C, so that every cleanup runs)."""
    signum = signal.SIGTERM      # what stopped it: a CLI exits 143 for it, as for any SIGTERM


class sigterm_raises:
    """While the block runs in the main thread, SIGTERM raises `error()` (by default
    ExportInterrupted, so that an export's cleanup runs); the previous handler comes back after.

    Python runs a signal handler between any two bytecodes, also inside a weakref callback or a
    `__del__`, where the exception it raises is printed ("Exception ignored in ...") and dropped:
    `check()` raises it again for a SIGTERM that arrived, so a step that must not happen after
    one (an export publishing its files) calls it first; with `reraise_at_exit` the block's end
    does too (a CLI run then ends as terminated, after its work)."""

    def __init__(self, error=lambda: ExportInterrupted("export interrupted by SIGTERM; nothing was written"),
                 reraise_at_exit: bool = False):
        self.error = error
        self.received = False
        self.reraise_at_exit = reraise_at_exit

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
            self.unraisable, sys.unraisablehook = sys.unraisablehook, self._dropped
        return self

    def _raise(self, signum, frame):
        self.received = True
        raise self.error()

    def _dropped(self, unraisable) -> None:
        """Our own dropped SIGTERM exception is not printed as a traceback (check() raises it again)."""
        if not (self.received and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self.unraisable(unraisable)

    def check(self) -> None:
        """Raise `error()` if a SIGTERM arrived in the block, even one whose exception was dropped."""
        if self.received:
            raise self.error()

    def handled(self) -> None:
        """The block reported the SIGTERM that arrived itself (a batch job's "stopped early" and exit
        143): `reraise_at_exit` does not raise it again."""
        self.received = False

    def __exit__(self, exc_type, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            sys.unraisablehook = self.unraisable
        if self.reraise_at_exit and exc_type is None:
            self.check()
