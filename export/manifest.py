"""manifest.json beside the artifacts: per artifact its files' sha256, toolchain versions,
precision, calibration set hash and verification figures. One manifest per output folder,
updated (atomically, under a lock on the folder) for every export into it.

A manifest that cannot be read (truncated, not JSON, wrong structure) is never silently
replaced: `read_manifest` raises ManifestError before any work, naming the file and what to do,
since it is what verified load checks artifacts against. Reading is cmunext_edge.artifacts.manifest's
(the one reader); this module writes."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from cmunext_edge.artifacts import manifest
from cmunext_edge.fileio import atomic_path, sha256_file
from cmunext_edge.toolchain import toolchain_versions  # noqa: F401 (pipeline imports it from here)
from cmunext_edge.export.options import ExportUsageError


class ManifestError(ExportUsageError):
    """manifest.json in the output folder is damaged: the export refuses to overwrite it."""


def file_entries(files) -> list[dict]:
    return [{"name": Path(f).name, "sha256": sha256_file(f), "bytes": Path(f).stat().st_size} for f in files]


def read_manifest(out_dir: Path) -> dict:
    """out_dir/manifest.json as a dict (a new one if absent); ManifestError if it is damaged."""
    try:
        return manifest.read_manifest(out_dir)
    except manifest.ManifestError as exc:
        raise ManifestError(f"{exc}. It records the sha256 that verified load checks the artifacts "
                            f"against, so it is not overwritten: restore it, or move it away (and "
                            f"re-export the artifacts in {Path(out_dir)}) before exporting there") from None


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on `folder` (flock on the folder itself: no lock file is left beside the
    artifacts) while its manifest is read, changed and written, so that exports running at once
    into one folder do not lose each other's entries. Without flock (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                       # closing releases the lock


def write_manifest(out_dir: Path, artifact: str, entry: dict) -> Path:
    """Add or replace the entry of `artifact` in out_dir/manifest.json (read, changed and written
    under a lock on the folder)."""
    path = manifest.manifest_path(out_dir)
    with _folder_lock(Path(out_dir)):
        data = read_manifest(out_dir)
        data["artifacts"][artifact] = entry
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
