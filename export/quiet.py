"""Quantization toolchains' log noise, silenced for the duration of one artifact build only.

- ONNX Runtime's Q/DQ quantizer logs `Axis 1 is out-of-range for weight ...` on the root logger
  for every 1-D weight it cannot quantize per channel (harmless: it quantizes them per tensor);
  the first such call would also install a root handler (logging.basicConfig) for good.
- NNCF logs INFO progress lines through its `nncf` logger.

`quiet_toolchains()` drops exactly those records while it is active and restores the loggers
after; every other warning still reaches stderr.
"""
from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager

NOISE = (re.compile(r"Axis -?\d+ is out-of-range for weight"),)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(p.search(msg) for p in NOISE)


@contextmanager
def quiet_toolchains():
    root, nncf = logging.getLogger(), logging.getLogger("nncf")
    drop = _DropNoise()
    added = None
    if not root.handlers:        # keep logging.warning() from installing basicConfig's handler
        added = logging.StreamHandler(sys.stderr)
        added.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        root.addHandler(added)
    root.addFilter(drop)
    level = nncf.level
    nncf.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        nncf.setLevel(level)
        root.removeFilter(drop)
        if added is not None:
            root.removeHandler(added)
