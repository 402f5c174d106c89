"""The video path of cmunext-predict: video files, a folder of them, a camera or a stream URL.

A multi-class model writes a colour overlay video (one palette colour per class), per-class mask
PNGs masks/NNNNNN_class<k>.png (or with --mask-video one mask_class<k>.mp4 per class), and
video_summary.json adds mean_foreground_per_class."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from cmunext_edge.fileio import printable
from cmunext_edge.progress import Progress
from cmunext_edge.cli.common import fail, interrupted_code
from cmunext_edge.cli.preflight import SUB_FOLDERS, check_outputs, input_files

PROG = "cmunext-predict"


def _sources(source: str) -> list[tuple[str, Path | None]]:
    """(source, sub-folder name or None): a folder of videos gets one sub-folder per video, named as
    the image job names outputs (job.unique_names): the stem, with its extension when videos share a
    stem (a.mp4, a.avi -> a.mp4/, a.avi/), then -2, ... where names differ only in case."""
    from cmunext_edge.data.discovery import Sample
    from cmunext_edge.predict.job import unique_names
    from cmunext_edge.predict.video import videos_in
    if Path(source).is_dir():
        return [(str(s.image), Path(s.name)) for s in unique_names([Sample(v.stem, v) for v in videos_in(source)])]
    return [(source, None)]


def _one(segmenter, source: str, out: Path, args) -> dict:
    """Segment one video -> its summary record (written to out/video_summary.json). Ctrl-C/SIGTERM:
    the record of what was written is written too and attached to the re-raised interrupt."""
    from cmunext_edge.predict.video import VideoOptions, segment_video, source_fps
    _, declared = source_fps(source)
    total = min(declared, args.max_frames) if declared and args.max_frames else (declared or args.max_frames or 0)
    with Progress(total or 1, f"{Path(source).name or source}", enabled=not args.quiet and total > 0) as bar:
        options = VideoOptions(overlay=not args.no_overlay, mask_video=args.mask_video,
                               mask_png=not args.mask_video, batch_size=args.batch_size, max_frames=args.max_frames)
        try:
            s = segment_video(segmenter, source, out, options, progress=bar)
        except KeyboardInterrupt as exc:
            if getattr(exc, "video_summary", None) is not None:
                exc.video_record = _record(segmenter, exc.video_summary, out, args)
            raise
    return _record(segmenter, s, out, args)


def _write_json(path: Path, data) -> str | None:
    """`data` as JSON at `path`, atomically -> None, or why it could not be written (naming it)."""
    from cmunext_edge.fileio import atomic_path
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


def _not_decoded(s, expected: int) -> list[str]:
    """The line naming the frames of `expected` that were not decoded ([] when none): those that did
    not decode (stepped over, predict/video._decode) and, unless the run stopped for a reason already
    named, those the container declares beyond the last frame read."""
    bad = sum(last - first + 1 for first, last in s.undecodable)
    short = 0 if s.stopped else expected - s.frames_decoded - bad
    runs = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in s.undecodable)
    parts = ([f"frame(s) {runs} did not decode (damaged or cut short?): no mask for them"] if bad else []) \
        + ([f"{short} of the {expected} frames the container declares were not read"] if short > 0 else [])
    return [f"{s.source}: " + "; ".join(parts)] if parts else []


def _record(segmenter, s, out: Path, args) -> dict:
    """A video's summary record from what is on disk; `problems` names what was not written."""
    summary = {**asdict(s), "model": segmenter.describe()}
    problems = ([s.stopped] if s.stopped else []) + list(s.incomplete.values())
    if s.mean_foreground_per_class is None:          # one class: the summary as it always was
        summary.pop("mean_foreground_per_class")
    elif not args.no_overlay:
        from cmunext_edge.predict.overlay import legend
        from cmunext_edge.predict.job import write_png
        try:
            write_png(out / "legend.png", legend(len(s.mean_foreground_per_class)))
            summary["outputs"]["legend"] = str(out / "legend.png")
        except OSError as exc:
            problems.append(f"cannot write {out / 'legend.png'}: {exc.strerror or exc}")
    expected = min(s.declared_frames, args.max_frames) if args.max_frames and s.declared_frames else s.declared_frames
    lost = expected - s.frames_decoded if expected else 0
    summary["missing_frames"] = max(lost, 0) + (s.frames_decoded - s.frames_written)
    problems += _not_decoded(s, expected)
    summary["problems"] = problems
    problem = _write_json(out / "video_summary.json", summary)
    problems = problems + ([problem] if problem else [])
    print(printable(f"{s.source}: {s.frames_decoded} frames decoded, {s.frames_written} written"
                    + (f" (container declares {s.declared_frames})" if s.declared_frames else "")
                    + f" in {s.seconds:.1f}s = {s.frames_per_s:.1f} frames/s end to end; outputs in {out}"
                    + (f"; {s.earlier_frames_removed} frame mask(s) of an earlier run there removed"
                       if s.earlier_frames_removed else "")
                    + (f"; NOT written: {len(problems)} problem(s), each below" if problems else "")))
    return {**summary, "problems": problems}


def _unread(source: str) -> list[dict]:
    """Files of a folder of videos that are not videos, as {path, error} (each is reported, none is
    dropped silently)."""
    from cmunext_edge.data.discovery import VIDEO_SUFFIXES, not_read_reason
    if not Path(source).is_dir():
        return []
    return [{"path": str(p), "error": f"{p}: not processed: {not_read_reason(p) or 'an image beside videos'}"}
            for p in sorted(Path(source).iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in VIDEO_SUFFIXES]


def run_video(args) -> int:
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    if args.split:
        return fail(PROG, "--split applies to image datasets, not to video")
    sources = _sources(args.source)
    videos = [Path(src) for src, _ in sources if Path(src).is_file()]
    out_dirs = [Path(args.out) / sub if sub else Path(args.out) for _, sub in sources]
    problem = check_outputs(args.out, args.summary_json, input_files(args.weights) + videos, out_dirs,
                            SUB_FOLDERS)
    if problem:                       # before the model loads or a frame is decoded
        return fail(PROG, problem)
    try:
        segmenter = EdgeSegmenter(args.weights, device=args.device, strict_device=args.strict_device,
                                  verify=args.verify, max_pixels=args.max_pixels, trusted_keys=args.trusted_key)
    except Exception as exc:  # every load failure is one clear line, not a traceback
        return fail(PROG, f"cannot load model: {exc}")
    info = segmenter.describe()
    print(f"model: {info['artifact']} ({info['backend']}, {info['device']}, {info['precision']})")
    from cmunext_edge.cli.common import signature_note
    print(signature_note(info))
    skipped = _unread(args.source)           # {path, error}: what the summary JSON lists as skipped
    for entry in skipped:
        print(f"skipped: {printable(entry['error'])}", file=sys.stderr)
    missing, done, interrupted = len(skipped), [], None
    try:
        for source, sub in sources:
            try:
                summary = _one(segmenter, source, Path(args.out) / sub if sub else Path(args.out), args)
            except KeyboardInterrupt as exc:        # what was written is accounted for, then 130/143
                if getattr(exc, "video_record", None) is None:
                    raise
                done.append(exc.video_record)
                for problem in exc.video_record["problems"]:     # the "each below" of its line
                    print(f"skipped: {printable(problem)}", file=sys.stderr)
                interrupted = exc
                break
            except (ValueError, OSError) as exc:    # VideoSourceError, a frame over the pixel limit
                print(f"skipped: {printable(exc)}", file=sys.stderr)
                skipped.append({"path": source, "error": str(exc)})
                missing += 1
                continue
            for problem in summary["problems"]:
                print(f"skipped: {printable(problem)}", file=sys.stderr)
            missing += summary["missing_frames"] > 0 or bool(summary["problems"])
            done.append(summary)
    finally:
        if args.summary_json:
            problem = _write_json(Path(args.summary_json), {"videos": done, "skipped": skipped})
            if problem:
                print(f"skipped: {printable(problem)}", file=sys.stderr)
                missing += 1
    if interrupted is not None:      # one line, as a batch job's: what was written stays, then 130/143
        print(f"{PROG}: error: stopped early: {printable(str(interrupted) or 'interrupted (Ctrl-C)')}; the frames "
              f"counted above have all their outputs on disk, the rest was not read", file=sys.stderr)
        return interrupted_code(interrupted)
    if not done:
        return fail(PROG, f"{args.source}: no video could be read (each reason is above); nothing was done")
    if not any(record["frames_written"] for record in done):
        return fail(PROG, f"{args.source}: no frame was segmented (each reason is above); nothing was done")
    return 1 if missing else 0
