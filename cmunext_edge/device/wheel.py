"""A pure-Python wheel of this toolkit's code, written from the installed package (no build step).

Device bundles carry it so that `cmunext-check` installs on a device with only a package index
for numpy, OpenCV and the runtime. It holds the Python modules (no shipped weights or samples:
a bundle brings its own verification images) and declares only the core dependencies; the
runtime comes from the bundle's pinned requirements.txt.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import zipfile
from pathlib import Path

from cmunext_edge._version import __version__

NAME = "cmunext_edge"
DIST = "cmunext-edge"
# console scripts the wheel declares (the device side only needs these): cmunext-NAME runs
# cmunext_edge.cli.NAME:main, as pyproject.toml's [project.scripts] says (tests/test_bundle.py)
SCRIPTS = ("check", "compare", "predict", "info")
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)     # reproducible archive: same code, same sha256


def _package_files() -> dict[str, Path]:
    """Archive name -> source file for every .py module of cmunext_edge and its subpackages,
    including subpackages mapped from elsewhere in the source tree (cmunext_edge.export)."""
    out: dict[str, Path] = {}
    root = Path(importlib.util.find_spec(NAME).submodule_search_locations[0])
    for f in root.rglob("*.py"):
        out[f"{NAME}/{f.relative_to(root).as_posix()}"] = f
    export = importlib.util.find_spec(f"{NAME}.export")
    if export is not None:
        src = Path(export.submodule_search_locations[0])
        for f in src.rglob("*.py"):
            out[f"{NAME}/export/{f.relative_to(src).as_posix()}"] = f
    return {k: v for k, v in sorted(out.items()) if "__pycache__" not in k}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_core_wheel(folder) -> Path:
    """Write `<folder>/cmunext_edge-<version>-py3-none-any.whl`; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{NAME}-{__version__}.dist-info"
    entries = {name: src.read_bytes() for name, src in _package_files().items()}
    entries[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {__version__}\n"
        "Summary: cmunext-edge core for devices (no exporters' dependencies, no weights)\n"
        "Requires-Python: >=3.10\nRequires-Dist: numpy>=1.24\n"
        "Requires-Dist: opencv-python-headless>=4.8\n").encode()
    entries[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: cmunext_edge.device.wheel\n"
                                b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    entries[f"{info}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
        f"cmunext-{s} = {NAME}.cli.{s}:main\n" for s in SCRIPTS)).encode()
    record = [_record_line(k, v) for k, v in entries.items()] + [f"{info}/RECORD,,"]
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{NAME}-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name, _FIXED_TIME), data, zipfile.ZIP_DEFLATED)
    return path
