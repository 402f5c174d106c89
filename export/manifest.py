"""manifest.json beside the artifacts: per artifact its files' sha256, toolchain versions,
precision, calibration set hash and verification figures. One manifest per output folder,
updated (atomically) for every export into it.

A manifest that cannot be read (truncated, not JSON, wrong structure) is never silently
replaced: `read_manifest` raises ManifestError before any work, naming the file and what to do,
since it is what verified load checks artifacts against. Reading is cmunext_edge.artifacts.manifest's
(the one reader); this module writes."""
from __future__ import annotations

import json
from pathlib import Path

from cmunext_edge.artifacts import manifest
from cmunext_edge.fileio import atomic_path, sha256_file
from cmunext_edge.toolchain import toolchain_versions  # noqa: F401 (pipeline imports it from here)
from cmunext_edge.export.targets import ExportUsageError


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


def write_manifest(out_dir: Path, artifact: str, entry: dict) -> Path:
    """Add or replace the entry of `artifact` in out_dir/manifest.json."""
    path = manifest.manifest_path(out_dir)
    data = read_manifest(out_dir)
    data["artifacts"][artifact] = entry
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
