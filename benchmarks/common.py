"""Pieces shared by the benchmark scripts: repo-relative commands, the split's name lists.

Every command runs from the repository root with repo-relative paths (`rel`), so that the
commands recorded in benchmarks/results/ rerun on any checkout.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.path.abspath(__file__)).parents[1]


def rel(path) -> str:
    """`path` relative to the repository root when it lies in it or beside it (../shared/...),
    else as given (a temporary folder elsewhere stays absolute)."""
    p = Path(os.path.abspath(path))      # symlinks kept: ../shared may be a link
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if p.is_relative_to(base):
            return prefix + str(p.relative_to(base)) if p != base else (prefix or ".")
    return str(path)


def python() -> str:
    """This interpreter, repo-relative when it is the checkout's .venv (without resolving the
    venv's symlink to the system Python)."""
    exe = Path(os.path.abspath(sys.executable))
    return str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else str(exe)


def tool(name: str) -> list[str]:
    """The console script beside this Python (the venv's), else `python -m` its module."""
    exe = Path(os.path.abspath(sys.executable)).parent / name
    if exe.exists():
        return [str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else str(exe)]
    found = shutil.which(name)
    return [found] if found else [python(), "-m", f"cmunext_edge.cli.{name.split('-')[1]}"]


def run(cmd: list[str], log: list[str], capture: bool = False, with_stderr: bool = False) -> subprocess.CompletedProcess:
    """Run `cmd` from the repository root, recording it (repo-relative) in `log`; `capture` keeps
    its stdout (and with `with_stderr` its stderr too) in the result."""
    log.append(shlex.join(cmd))
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, text=True, cwd=ROOT, stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture and with_stderr else None)


def val_list_file(split: Path | None, path: Path) -> Path | None:
    """A names file for `cmunext-bench --split`: a training split.json gives its 'val' list
    (read by `cmunext_edge.data.discovery.read_name_list`), kept beside the results as a record."""
    from cmunext_edge.data.discovery import read_name_list
    if split is None or Path(split).suffix != ".json":
        return split
    path.write_text("\n".join(read_name_list(split)) + "\n")
    return path


def train_calibration_folder(data: Path, split: Path | None, folder: Path) -> Path:
    """images/ + masks/0/ symlinks to the training images of a split.json (or all of `data`)."""
    names = json.loads(split.read_text())["train"] if split and split.suffix == ".json" else None
    (folder / "images").mkdir(parents=True)
    (folder / "masks" / "0").mkdir(parents=True)
    for img in sorted((data / "images").iterdir()):
        if names is None or img.stem in names:
            os.symlink(img.resolve(), folder / "images" / img.name)
            mask = data / "masks" / "0" / img.name
            if mask.exists():
                os.symlink(mask.resolve(), folder / "masks" / "0" / img.name)
    return folder
