"""Video files, cameras and network streams, through OpenCV: decode, segment, write, pipelined.

A video SOURCE is a video file (VIDEO_SUFFIXES), a camera index (`0`, `1`, ...) or a stream URL
(`rtsp://`, `http(s)://`, ...). `stream(segmenter, source)` decodes on a background thread and
yields `(index, frame, Segmentation)` while the next frames decode; `segment_video` adds a
writer thread that writes the overlay video and per-frame masks (PNG files, or a mask video)
while the following frames are inferred. Every decoded frame is accounted for in the summary.

Several classes: the overlay video tints and outlines each class in its palette colour (overlay.py);
per-frame masks are masks/NNNNNN_class<k>.png, one 0/255 PNG per class (as for images), and a mask
video is one 0/255 video per class, mask_class<k>.mp4 (classes may overlap, so one label-valued
video could not hold them, and lossy mp4v would blur label values anyway); a frame counts as
written once all of its files are. The summary adds the mean foreground per class.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge.data.discovery import VIDEO_SUFFIXES
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS, check_pixels
from cmunext_edge.core.preprocess import NonFiniteOutputError
from cmunext_edge.fileio import opencv_path
from cmunext_edge.predict.scores import mask_union
URL_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_END = object()


class VideoSourceError(ValueError):
    """A video file, camera or stream that OpenCV cannot open."""


def is_video_source(source) -> bool:
    """A camera index, a stream URL, or an existing file with a video suffix."""
    text = str(source)
    return text.isdigit() or text.lower().startswith(URL_SCHEMES) or \
        (Path(text).is_file() and Path(text).suffix.lower() in VIDEO_SUFFIXES)


def videos_in(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def open_capture(source, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> cv2.VideoCapture:
    """An opened capture whose frame size (as the container or camera declares it) is admitted
    by the one pixel limit (image_limits.check_pixels); VideoSourceError otherwise."""
    text = str(source)
    with opencv_path(text) as name:   # open by a name OpenCV can take; the open file outlives the name
        cap = cv2.VideoCapture(int(text) if text.isdigit() else name)
    if not cap.isOpened():
        cap.release()
        kind = "camera" if text.isdigit() else "stream" if text.lower().startswith(URL_SCHEMES) else "video file"
        raise VideoSourceError(f"{source}: OpenCV cannot open this {kind}")
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if width and height:              # 0: not declared (some streams); frames are checked as they come
        try:
            check_pixels(width, height, 1, max_pixels, f"{source}: frame")
        except ValueError as exc:
            cap.release()
            raise VideoSourceError(str(exc)) from None
    return cap


# consecutive frames that do not decode before a video file is taken to have ended (damage that
# long, or a container declaring far more frames than it holds): a failed read costs microseconds
MAX_UNDECODABLE_RUN = 256


def _decode(cap, out_q: queue.Queue, max_frames: int | None, stop: threading.Event, errors: list,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, undecodable: list | None = None):
    """Put (frame number, frame) on `out_q`. A frame of a file that does not decode (damaged data)
    is stepped over while the container declares more frames: its number goes to `undecodable` and
    the frames after it keep their own numbers. A camera or stream (no declared count) ends at its
    first failed read."""
    declared, index, run = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0, 0
    try:
        while not stop.is_set() and (max_frames is None or index < max_frames):
            ok, frame = cap.read()
            if not ok:
                run += 1
                if index >= declared or run > MAX_UNDECODABLE_RUN:
                    break
                if undecodable is not None:
                    undecodable.append(index)
                index += 1
                continue
            run = 0
            check_pixels(frame.shape[1], frame.shape[0], 1, max_pixels, f"frame {index}")
            out_q.put((index, frame))
            index += 1
    except Exception as exc:             # reported by the consumer, not lost in the thread
        errors.append(exc)
    finally:
        out_q.put(_END)


def stream(segmenter, source, batch_size: int = 1, max_frames: int | None = None, queue_size: int = 16,
           undecodable: list | None = None):
    """Yield (frame index, BGR frame, Segmentation) for every frame of `source`, in order.

    Decoding runs on a background thread (bounded queue) while frames are inferred, `batch_size`
    frames per call at most (fewer when no more are decoded yet: a live camera is never held up).
    Frames are admitted by the segmenter's pixel limit (`max_pixels`, image_limits). A frame of a
    file that does not decode is not yielded: its index is appended to `undecodable` (when given)
    and the following frames keep their own indices (_decode)."""
    max_pixels = getattr(segmenter, "max_pixels", DEFAULT_MAX_PIXELS)
    cap = open_capture(source, max_pixels)
    frames: queue.Queue = queue.Queue(maxsize=queue_size)
    stop, errors = threading.Event(), []
    reader = threading.Thread(target=_decode, daemon=True,
                              args=(cap, frames, max_frames, stop, errors, max_pixels, undecodable))
    reader.start()
    try:
        done = False
        while not done:
            batch = [frames.get()]
            while batch[-1] is not _END and len(batch) < batch_size:
                try:
                    batch.append(frames.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _END:
                batch.pop()
                done = True
            if batch:
                results = segmenter.segment_batch([f for _, f in batch], batch_size=len(batch))
                for (i, frame), res in zip(batch, results):
                    yield i, frame, res
        if errors:
            raise errors[0]
    finally:
        stop.set()
        while reader.is_alive():          # unblock a reader waiting on a full queue
            try:
                frames.get_nowait()
            except queue.Empty:
                reader.join(0.05)
        cap.release()


def source_fps(source) -> tuple[float, int]:
    """(frames per second, frame count) as the container declares them (0 when unknown)."""
    cap = open_capture(source, None)
    try:
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


@dataclass
class VideoSummary:
    source: str
    frames_decoded: int = 0
    frames_written: int = 0
    declared_frames: int = 0          # the container's frame count (0: unknown, e.g. a camera)
    fps_source: float = 0.0
    seconds: float = 0.0
    frames_per_s: float = 0.0         # end to end: decode + inference + writing
    mean_foreground: float = 0.0      # mean fraction of mask pixels (of any class) over frames
    outputs: dict = field(default_factory=dict)
    mean_foreground_per_class: list | None = None    # several classes: per class, in class order
    stopped: str | None = None        # why writing stopped before the end (e.g. the disk is full)
    incomplete: dict = field(default_factory=dict)   # video name -> why it is not on disk
    undecodable: list = field(default_factory=list)  # [first, last] runs of frames that did not decode
    earlier_frames_removed: int = 0   # masks/ frame files of an earlier run into this folder, removed


def _class_fractions(mask: np.ndarray) -> list[float] | None:
    """Fraction of the frame each class covers (None for a one-class mask)."""
    return None if mask.ndim == 2 else [float(f) for f in mask.reshape(-1, mask.shape[2]).mean(axis=0)]


@dataclass(frozen=True)
class VideoOptions:
    """What segment_video writes (overlay.mp4, mask.mp4, masks/NNNNNN.png), in batches of
    `batch_size` frames, stopping after `max_frames` (None: every frame)."""
    overlay: bool = True
    mask_video: bool = False
    mask_png: bool = True
    batch_size: int = 1
    max_frames: int | None = None


def video_frame_count(path: Path) -> int:
    """Frames a written video file holds, as its container says (0: not readable, e.g. an mp4
    cut short by a full disk, which has no index)."""
    with opencv_path(path) as name:
        cap = cv2.VideoCapture(name)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()


class _Writer:
    """Writes overlay video, mask video and/or mask PNGs on its own thread.

    A video is written under a hidden temporary name and renamed into place at `close` only when
    it holds every frame written to it (OpenCV's writer does not report a full disk: the file is
    read back instead); mask PNGs are written atomically. A write error stops the writer: it is
    kept in `errors` and the frames written before it stay accounted for."""

    def __init__(self, out_dir: Path, fps: float, opts: VideoOptions):
        self.out_dir, self.fps = out_dir, fps or 25.0
        self.overlay, self.mask_video, self.mask_png = opts.overlay, opts.mask_video, opts.mask_png
        self.q: queue.Queue = queue.Queue(maxsize=16)
        self.videos: dict = {}
        self.video_frames: dict = {}
        self.incomplete: dict = {}
        self.written, self.errors = 0, []
        self.mask_names: set = set()       # masks/ files this run wrote
        self.cv_dir, self.links = None, contextlib.ExitStack()   # opencv_path's links
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _part(self, name: str) -> Path:
        return self.out_dir / f".{name}.part.mp4"

    def _video(self, name: str, shape) -> cv2.VideoWriter | None:
        """The writer of video `name`; None when OpenCV cannot write it (e.g. 1-pixel-wide frames):
        that video is named in `incomplete` and the other outputs go on."""
        if name not in self.videos:
            path = self.out_dir / f"{name}.mp4"
            if self.cv_dir is None:          # a name OpenCV's writer takes (a link for a non-UTF-8 folder)
                self.cv_dir = Path(self.links.enter_context(opencv_path(self.out_dir)))
            w = cv2.VideoWriter(str(self.cv_dir / self._part(name).name), cv2.VideoWriter_fourcc(*"mp4v"),
                                self.fps, (shape[1], shape[0]))
            if not w.isOpened():
                w.release()
                self._part(name).unlink(missing_ok=True)
                w = None
                self.incomplete[name] = (f"{path}: not written: OpenCV cannot write an mp4v video of "
                                         f"{shape[1]}x{shape[0]} frames here")
            self.videos[name], self.video_frames[name] = w, 0
        return self.videos[name]

    def _add(self, name: str, shape, image: np.ndarray) -> None:
        w = self._video(name, shape)
        if w is not None:
            w.write(image)
            self.video_frames[name] += 1

    def _write(self, index: int, frame: np.ndarray, mask: np.ndarray) -> None:
        from cmunext_edge.predict.overlay import overlay
        from cmunext_edge.predict.job import mask_images, write_png
        if self.overlay:
            self._add("overlay", frame.shape, overlay(frame, mask))
        images = mask_images(f"{index:06d}", mask)          # NNNNNN.png, or NNNNNN_class<k>.png
        if self.mask_video:
            for k, (_, m) in enumerate(images):
                video = "mask" if len(images) == 1 else f"mask_class{k}"
                self._add(video, frame.shape, cv2.cvtColor(m, cv2.COLOR_GRAY2BGR))
        if self.mask_png:
            for name, m in images:
                path = self.out_dir / "masks" / name
                try:
                    write_png(path, m)
                except OSError as exc:                   # name the file (a full disk's error does not)
                    raise OSError(f"cannot write {path}: {exc.strerror or exc}") from None
                self.mask_names.add(name)
        self.written += 1

    def _run(self):
        while (item := self.q.get()) is not _END:
            if not self.errors:
                try:
                    self._write(*item)
                except Exception as exc:
                    self.errors.append(exc)

    def close(self) -> None:
        """Finish writing what was queued, then publish each complete video; drop the others."""
        self.q.put(_END)
        self.thread.join()
        for w in self.videos.values():
            if w is not None:
                w.release()
        self.links.close()
        for name, w in self.videos.items():
            if w is None:                                # named in `incomplete` when it was opened
                continue
            part, final = self._part(name), self.out_dir / f"{name}.mp4"
            held = video_frame_count(part) if part.is_file() else 0
            if held == self.video_frames[name] and held:
                os.replace(part, final)
                continue
            part.unlink(missing_ok=True)
            final.unlink(missing_ok=True)                # a previous run's video would pass for this one's
            self.incomplete[name] = (f"{final}: not written (the file held {held} of its "
                                     f"{self.video_frames[name]} frames: disk full or not writable?)")


def segment_video(segmenter, source, out_dir, options: VideoOptions | None = None, *, progress=None,
                  **overrides) -> VideoSummary:
    """Segment every frame of `source`; write out_dir/overlay.mp4, out_dir/masks/NNNNNN.png
    (and out_dir/mask.mp4 with `mask_video`; per class for several classes, see the module doc).
    `options` (VideoOptions), or its fields as keywords. Decoding, inference and writing overlap."""
    opts = dataclasses.replace(options or VideoOptions(), **overrides)
    out_dir = Path(out_dir)
    (out_dir / "masks" if opts.mask_png else out_dir).mkdir(parents=True, exist_ok=True)
    fps, declared = source_fps(source)
    summary = VideoSummary(str(source), declared_frames=declared, fps_source=fps)
    writer = _Writer(out_dir, fps, opts)
    t0, fg, per_class, interrupt, undecodable = time.perf_counter(), [], [], None, []
    try:
        for index, frame, res in stream(segmenter, source, opts.batch_size, opts.max_frames,
                                        undecodable=undecodable):
            if writer.errors:            # e.g. the disk is full: stop decoding what cannot be written
                break
            fg.append(float(mask_union(res.mask).mean()))
            per_class.append(_class_fractions(res.mask))
            writer.q.put((index, frame, res.mask))
            summary.frames_decoded += 1
            if progress is not None:
                progress.update()
    except KeyboardInterrupt as exc:     # Ctrl-C/SIGTERM: finish what was queued, then re-raise
        interrupt = exc
    except NonFiniteOutputError as exc:  # no mask from NaN/inf logits: the frames before stay written
        summary.stopped = f"frame {summary.frames_decoded}: {exc}; no mask was made from it, the video stops here"
    finally:
        writer.close()
    summary.undecodable = _runs(undecodable)
    summary = _finish(summary, writer, out_dir, opts, t0, fg, per_class)
    if interrupt is not None:            # the caller accounts for what was written, then exits 130/143
        summary.stopped = summary.stopped or (str(interrupt) or "interrupted (Ctrl-C)")
        interrupt.video_summary = summary
        raise interrupt
    return summary


def _runs(numbers: list) -> list:
    """Sorted frame numbers -> [first, last] runs: [5, 6, 9] -> [[5, 6], [9, 9]]."""
    runs = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return runs


FRAME_MASK = re.compile(r"\d{6}(_class\d+)?\.png")       # the names _Writer gives frame masks


def _remove_earlier_frames(masks: Path, written: set) -> int:
    """Remove the frame masks (FRAME_MASK names only: nothing else of the folder) that this run did
    not write: an earlier, longer run's, or one's at a frame that did not decode now -> how many."""
    stale = [f for f in masks.iterdir() if FRAME_MASK.fullmatch(f.name) and f.name not in written]
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


def _finish(summary: VideoSummary, writer: _Writer, out_dir: Path, opts: VideoOptions, t0: float,
            fg: list, per_class: list) -> VideoSummary:
    """Fill the summary from what the writer put on disk: `outputs` names only complete files,
    `frames_written` counts the frames all of whose files among them are on disk, `incomplete`
    names each video that was dropped and `stopped` the write error that ended the run."""
    summary.seconds = time.perf_counter() - t0
    summary.frames_written = writer.written
    summary.incomplete = dict(writer.incomplete)
    if writer.errors:
        summary.stopped = str(writer.errors[0])
    summary.frames_per_s = summary.frames_decoded / max(summary.seconds, 1e-9)
    summary.mean_foreground = float(np.mean(fg)) if fg else 0.0
    if per_class and per_class[0] is not None:
        summary.mean_foreground_per_class = [float(f) for f in np.mean(per_class, axis=0)]
    summary.outputs = {k: str(out_dir / f"{k}.mp4") for k in writer.videos if k not in writer.incomplete}
    if opts.mask_png:
        if writer.written:               # an earlier run's frame masks would pass for this run's
            summary.earlier_frames_removed = _remove_earlier_frames(out_dir / "masks", writer.mask_names)
        if writer.written or any((out_dir / "masks").iterdir()):
            summary.outputs["masks"] = str(out_dir / "masks")
        else:                            # no frame written: no empty masks/ that looks like a result
            (out_dir / "masks").rmdir()
    return summary
