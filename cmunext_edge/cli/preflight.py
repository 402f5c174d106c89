"""Pre-flight: what a command needs, checked before any runtime, Ray or Serve starts.

One set of checks for every CLI that does heavy set-up (cmunext-predict, --engine ray,
cmunext-serve): the model is resolved and verified (an artifact's files against its manifest or
embedded hash and its self-test; a checkpoint read by the safe loader, weights checked finite),
the HTTP port is free, the output folders are writable. Each check raises (or returns) one line
naming what is wrong; the CLI's wrapper turns it into exit 2 before anything was started.
"""
from __future__ import annotations

import errno
import socket
from fnmatch import fnmatch
from pathlib import Path

from cmunext_edge.fileio import not_a_file, real_path, writable_folder_problem

# What cmunext-predict writes under --out (images: predict/job.py and predict/dicom_outputs.py;
# video: predict/video.py and cli/predict_video.py), as paths relative to --out.
WRITTEN_UNDER_OUT = ("masks/*", "overlays/*", "probabilities/*", "seg/*", "scores.csv", "legend.png",
                     "video_summary.json", "overlay.mp4", "mask.mp4", "mask_class*.mp4")


class PreflightError(ValueError):
    """A command cannot start: the message is the whole story (exit 2, nothing done)."""


def check_output_file(path, option: str) -> str | None:
    """None if a report file can be written at `path` (a new or regular file in a writable folder),
    else the reason: checked before any work, so a long run never ends in a refused write."""
    if path is None:
        return None
    if str(path).strip() == "":          # before Path(): Path("") is the current folder
        return f"{option} is empty"
    path = Path(path)
    if path.is_dir():
        return f"{option} {path} is a folder"
    if path.exists() and not path.is_file():
        return f"{option} {path} exists and is not a regular file (a device, FIFO or socket)"
    return writable_folder_problem(path.parent, f"{option} folder")


def check_distinct_outputs(outputs, inputs) -> str | None:
    """None if no report file (option, path) names an input file or another report's file, else the
    reason: `--json model.onnx` replaced the model it measured, with exit 0."""
    protected = {real_path(p): Path(p) for p in inputs}
    seen: dict[Path, str] = {}
    for option, path in outputs:
        if path is None:
            continue
        key = real_path(path)
        if key in protected:
            return f"{option} {path} is an input of this run ({protected[key].name}): it would be overwritten"
        if key in seen:
            return f"{option} and {seen[key]} name the same file {path}"
        seen[key] = option
    return None


# the folders a predict run writes into under each output folder (masks/, overlays/, ...)
SUB_FOLDERS = tuple(pattern[:-2] for pattern in WRITTEN_UNDER_OUT if pattern.endswith("/*"))


def check_outputs(out: str | Path, summary_json: Path | None = None, inputs=(), out_dirs=None,
                  sub_folders=()) -> str | None:
    """Output problems found before any work -> the reason, or None. `out` as given (an empty
    string is refused: Path("") would be the current folder); `inputs`: the files the run reads,
    none of which an output may replace (`out_dirs`: the folders outputs go to, default `out`);
    `sub_folders` (e.g. SUB_FOLDERS) already there under them must be writable folders."""
    if str(out).strip() == "":
        return "--out is empty: give an output folder"
    return (writable_folder_problem(Path(out), "--out") or check_output_file(summary_json, "--summary-json")
            or _sub_folder_problem(out_dirs or [out], sub_folders) or _inputs_kept(out_dirs or [out], summary_json, inputs))


def _sub_folder_problem(out_dirs, sub_folders) -> str | None:
    """A sub-folder the run writes into that exists as something else, or is not writable (the
    run would fail on every input, after the work): the reason, else None."""
    for folder in out_dirs:
        for name in sub_folders:
            path = Path(folder) / name
            if path.exists() or path.is_symlink():
                problem = writable_folder_problem(path, "--out sub-folder")
                if problem:
                    return problem + "; move it or choose another --out"
    return None


def _written_there(path: Path, out_dirs: list[Path]) -> str | None:
    """`path` relative to the output folder where a predict run would write it, else None."""
    for folder in out_dirs:
        if path.is_relative_to(folder):
            rel = path.relative_to(folder).as_posix()
            if any(fnmatch(rel, pattern) for pattern in WRITTEN_UNDER_OUT):
                return rel
    return None


def _inputs_kept(out_dirs, summary_json, inputs) -> str | None:
    """None if no output replaces an input or another output, else the reason: `--summary-json
    image.png` replaced the image it segmented, with exit 0."""
    folders = [real_path(d) for d in out_dirs]
    summary = real_path(summary_json) if summary_json else None
    if summary is not None and _written_there(summary, folders):
        return (f"--summary-json {summary_json} is an output the run writes under --out "
                f"({_written_there(summary, folders)}): choose another file")
    for given in inputs:
        path = real_path(given)
        if path == summary:
            return f"--summary-json {summary_json} is an input of this run ({given}): it would be overwritten"
        if _written_there(path, folders):
            return (f"--out: the run would write over {given}, one of its inputs (it writes "
                    f"{', '.join(WRITTEN_UNDER_OUT)} under --out); choose another --out")
    return None


def input_files(weights, split=None, samples=()) -> list[Path]:
    """Every file the run reads: the model (a file, or a shipped model's), the split and each
    sample's image and ground truth; none may be replaced by an output."""
    from cmunext_edge.resources import resolve_weights
    try:
        files = [Path(resolve_weights(weights))]
    except (ValueError, FileNotFoundError):      # an unknown name: refused when the model loads
        files = []
    return files + ([Path(split)] if split else []) + sample_files(samples)


def sample_files(samples) -> list[Path]:
    """Each sample's image and ground-truth files."""
    return [f for s in samples for f in (s.image, s.mask, *s.more_masks) if f is not None]


def check_port(host: str, port: int) -> None:
    """PreflightError if nothing can listen on host:port (in use, no permission, unknown host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PreflightError(f"--host {host}: cannot be resolved ({exc.strerror or exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the HTTP server does
        try:
            sock.bind(address)
        except OSError as exc:
            why = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise PreflightError(f"--port {port} on {host}: {why}; choose another port") from None


def check_model(weights, device: str = "cpu", verify: bool = True) -> Path:
    """The resolved model file, verified as a load would verify it -> its path.

    An artifact: files against manifest.json / the embedded hash, then its self-test on `device`
    (IntegrityError names what differs). A checkpoint: read by the safe loader, weights finite."""
    from cmunext_edge.artifacts.errors import IntegrityError
    from cmunext_edge.artifacts.kinds import is_checkpoint
    from cmunext_edge.runtime.registry import verify_artifact
    from cmunext_edge.resources import resolve_weights
    path = Path(resolve_weights(weights))
    if not path.is_file():
        what = not_a_file(path)
        raise FileNotFoundError(f"{weights}: {what + ', not a model file' if what else 'no such artifact or checkpoint file'} "
                                f"(give an exported artifact, a checkpoint, or a shipped model's name)")
    if is_checkpoint(path):
        from cmunext_edge.checkpoints.weights import load_checkpoint
        load_checkpoint(path)
    elif verify:
        report = verify_artifact(path, device=device)
        if not report.ok:
            raise IntegrityError(report.message())
    return path
