"""manifest.json beside the artifacts: per artifact its files' sha256, toolchain versions,
precision, calibration set hash and verification figures. One manifest per output folder,
updated (atomically) for every export into it."""
from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_path, sha256_file
from ..toolchain import toolchain_versions  # noqa: F401 (pipeline imports it from here)


def file_entries(files) -> list[dict]:
    return [{"name": Path(f).name, "sha256": sha256_file(f), "bytes": Path(f).stat().st_size} for f in files]


def write_manifest(out_dir: Path, artifact: str, entry: dict) -> Path:
    """Add or replace the entry of `artifact` in out_dir/manifest.json."""
    path = Path(out_dir) / "manifest.json"
    data = {"format": "cmunext-edge export manifest", "version": 1, "artifacts": {}}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            pass        # a damaged manifest is rebuilt rather than blocking the export
    data.setdefault("artifacts", {})[artifact] = entry
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path

