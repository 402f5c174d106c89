"""Atomic file writes and hashing: a failed or interrupted write never leaves a partial file."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str | None = None):
    """Yield a temporary path beside `final`; rename it over `final` only on success.

    The temporary name keeps the final suffix (some writers dispatch on it). On any error
    the temporary file or folder is removed and nothing appears at `final`.
    """
    final = Path(final)
    if final.exists() and not (final.is_file() or final.is_dir()):
        # a device, FIFO or socket (e.g. --summary-json /dev/null): renaming over it would replace the
        # node itself (as root, /dev/null becomes a regular file for the whole system)
        raise FileExistsError(f"{final} exists and is not a regular file (a device, FIFO or socket); "
                                f"not replaced: write to a file")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=suffix or final.suffix,
                               dir=final.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp creates 0600; give the artifact the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_mismatches(folder: str | Path, expected: dict[str, str]) -> list[tuple[str, str | None, str]]:
    """The one hash check (manifest entries, device bundles): (relative path, its sha256 or None when
    missing, the expected sha256) of every file in `expected` that is missing or differs."""
    out = []
    for rel, want in expected.items():
        f = Path(folder) / rel
        actual = sha256_file(f) if f.is_file() else None
        if actual != want:
            out.append((rel, actual, str(want)))
    return out


def real_path(path) -> Path:
    """`path` with its links resolved; a link loop (RuntimeError before Python 3.13) stays as given."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(path).absolute()


SPECIAL_FILE = "not a regular file (a FIFO, socket or device)"
BROKEN_LINK = "a broken symbolic link (its target does not exist)"


def not_a_file(path) -> str | None:
    """What `path` is when it is there but is not a regular file ("a folder", SPECIAL_FILE,
    BROKEN_LINK), else None (a regular file, or nothing at all): the one test before a path given
    as a file is opened (a FIFO would block, a folder reads as nothing, a runtime's own message about
    either is "parsing failed", and a link to nothing is not "no such file" to whoever made it)."""
    path = Path(path)
    if path.is_file():
        return None
    if not path.exists():
        return BROKEN_LINK if path.is_symlink() else None
    return "a folder" if path.is_dir() else SPECIAL_FILE


def require_file(path, what: str = "artifact") -> Path:
    """`path` when it is a regular file, else FileNotFoundError in one line: "<path>: a folder, not
    an artifact file" (or a device, FIFO or socket), or "<path>: no such artifact"."""
    path = Path(path)
    if path.is_file():
        return path
    kind = not_a_file(path)
    raise FileNotFoundError(f"{path}: {kind}, not {'an' if what[0] in 'aeiou' else 'a'} {what} file" if kind
                            else f"{path}: no such {what}")


def writable_folder_problem(folder: str | Path, what: str) -> str | None:
    """None if `folder` is, or could be made, a folder we can write into, else the reason. A folder
    that does not exist yet is not made here (a refused job leaves nothing behind): its nearest
    existing ancestor must be a writable folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{what} {folder} exists and is not a folder"
    probe_in = folder
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        return f"{what} {folder} cannot be made: {probe_in} is not a folder"
    try:
        write_probe(probe_in)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in FULL_DISK:
            return f"{what} {folder} cannot be written: {FULL_DISK[exc.errno]} ({why}); free space or choose another place"
        return f"{what} {folder} is not writable ({why})"
    return None


# a disk that takes no more data: a file can still be made there (an empty file needs no block),
# so a probe that only makes one passes on a full disk
FULL_DISK = {errno.ENOSPC: "its disk is full", errno.EDQUOT: "its disk quota is used up"}


def write_probe(folder: Path) -> None:
    """Make a file in `folder`, write a block of data into it and remove it again: OSError (ENOSPC on
    a full disk, EACCES, EROFS, ...) when the folder cannot take a file with data."""
    fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
    try:
        os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
        os.unlink(probe)


# Staging folders: an export or a bundle is built in `<out>/.<stem>.XXXXXXXX.staging` (owner.pid
# inside names its process) and published from there; one a killed process left (SIGKILL, power
# loss) is removed by the next export or bundle into that folder once its process is gone.
STAGING_SUFFIX = ".staging"
OWNER_FILE = "owner.pid"
# what tempfile.mkdtemp(prefix=".<stem>.", suffix=STAGING_SUFFIX) makes: 8 random name characters
_OURS = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(STAGING_SUFFIX) + "$")


def new_staging(out_dir: Path, stem: str) -> Path:
    """A new staging folder in `out_dir` for `stem`, owned by this process (owner.pid)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=STAGING_SUFFIX, dir=out_dir))
    (staging / OWNER_FILE).write_text(str(os.getpid()))
    return staging


def _owner_alive(staging: Path) -> bool:
    pid = int((staging / OWNER_FILE).read_text().strip())
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(staging: Path) -> bool:
    """A staging folder whose process is gone. Only folders named as new_staging names them and
    holding its owner.pid qualify: a user's own `.something.staging` folder is never touched.
    One without owner.pid (its process died right after creating it) is removed only when empty."""
    if not (_OURS.match(staging.name) and staging.is_dir() and not staging.is_symlink()):
        return False
    try:
        return not _owner_alive(staging)
    except (OSError, ValueError):
        if time.time() - staging.stat().st_mtime >= 3600 and not any(staging.iterdir()):
            return True                                   # empty and an hour old: nothing to lose
        return False


def clear_stale_staging(out_dir: Path, log=None) -> list[Path]:
    """Remove staging folders in `out_dir` whose process is gone; -> those removed."""
    removed = []
    for staging in Path(out_dir).glob(".*" + STAGING_SUFFIX):
        if _stale(staging):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
            if log:
                log(f"removed stale staging folder {staging.name} (its process is gone)")
    return removed


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first (what a run that
    makes `folder` removes again, if still empty, when it fails)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders) -> None:
    """Remove each of `folders` (deepest first) while it is empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def printable(text) -> str:
    """`text` for one line of terminal output: control characters (a newline, a carriage return or an
    escape sequence inside a file name) are shown escaped, so a name can never forge or erase lines."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def utf8_name(path) -> bool:
    """Whether `path` is valid UTF-8: a name that is not (Python keeps its bytes as surrogate escapes)
    crashes OpenCV's file functions, so those are reached through `opencv_path`."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def opencv_path(path):
    """Yield a name of `path` that OpenCV's file functions (imcount, VideoCapture) can take: the path
    itself, or for a name that is not valid UTF-8 a symbolic link to it in a temporary folder."""
    if utf8_name(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="cmunext-name-") as tmp:
        link = Path(tmp) / ("input" + Path(path).suffix.encode("ascii", "replace").decode("ascii"))
        os.symlink(os.path.abspath(path), link)
        yield str(link)


def loads_json(text):
    """json.loads for text read from a file or an artifact: nesting too deep to parse (json raises
    RecursionError, e.g. a damaged or hostile manifest.json of 100000 '[') is a ValueError like any
    other damage, so every reader's "damaged" path reports it as one line."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read (damaged or hostile)") from None
