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

import dataclasses
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge.predict.scores import mask_union

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts")
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


def open_capture(source) -> cv2.VideoCapture:
    text = str(source)
    cap = cv2.VideoCapture(int(text) if text.isdigit() else text)
    if not cap.isOpened():
        cap.release()
        kind = "camera" if text.isdigit() else "stream" if text.lower().startswith(URL_SCHEMES) else "video file"
        raise VideoSourceError(f"{source}: OpenCV cannot open this {kind}")
    return cap


def _decode(cap, out_q: queue.Queue, max_frames: int | None, stop: threading.Event, errors: list):
    index = 0
    try:
        while not stop.is_set() and (max_frames is None or index < max_frames):
            ok, frame = cap.read()
            if not ok:
                break
            out_q.put((index, frame))
            index += 1
    except Exception as exc:             # reported by the consumer, not lost in the thread
        errors.append(exc)
    finally:
        out_q.put(_END)


def stream(segmenter, source, batch_size: int = 1, max_frames: int | None = None, queue_size: int = 16):
    """Yield (frame index, BGR frame, Segmentation) for every frame of `source`, in order.

    Decoding runs on a background thread (bounded queue) while frames are inferred, `batch_size`
    frames per call at most (fewer when no more are decoded yet: a live camera is never held up)."""
    cap = open_capture(source)
    frames: queue.Queue = queue.Queue(maxsize=queue_size)
    stop, errors = threading.Event(), []
    reader = threading.Thread(target=_decode, args=(cap, frames, max_frames, stop, errors), daemon=True)
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
    cap = open_capture(source)
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


class _Writer:
    """Writes overlay video, mask video and/or mask PNGs on its own thread."""

    def __init__(self, out_dir: Path, fps: float, opts: VideoOptions):
        self.out_dir, self.fps = out_dir, fps or 25.0
        self.overlay, self.mask_video, self.mask_png = opts.overlay, opts.mask_video, opts.mask_png
        self.q: queue.Queue = queue.Queue(maxsize=16)
        self.videos: dict = {}
        self.written, self.errors = 0, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _video(self, name: str, shape) -> cv2.VideoWriter:
        if name not in self.videos:
            path = self.out_dir / f"{name}.mp4"
            w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (shape[1], shape[0]))
            if not w.isOpened():
                raise VideoSourceError(f"{path}: OpenCV cannot write an mp4v video here")
            self.videos[name] = w
        return self.videos[name]

    def _write(self, index: int, frame: np.ndarray, mask: np.ndarray) -> None:
        from cmunext_edge.predict.overlay import overlay
        from cmunext_edge.predict.job import mask_images
        if self.overlay:
            self._video("overlay", frame.shape).write(overlay(frame, mask))
        images = mask_images(f"{index:06d}", mask)          # NNNNNN.png, or NNNNNN_class<k>.png
        if self.mask_video:
            for k, (_, m) in enumerate(images):
                video = "mask" if len(images) == 1 else f"mask_class{k}"
                self._video(video, frame.shape).write(cv2.cvtColor(m, cv2.COLOR_GRAY2BGR))
        if self.mask_png:
            for name, m in images:
                if not cv2.imwrite(str(self.out_dir / "masks" / name), m):
                    raise OSError(f"cannot write {self.out_dir / 'masks' / name}")
        self.written += 1

    def _run(self):
        while (item := self.q.get()) is not _END:
            if not self.errors:
                try:
                    self._write(*item)
                except Exception as exc:
                    self.errors.append(exc)

    def close(self) -> None:
        self.q.put(_END)
        self.thread.join()
        for w in self.videos.values():
            w.release()
        if self.errors:
            raise self.errors[0]


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
    t0, fg, per_class = time.perf_counter(), [], []
    try:
        for index, frame, res in stream(segmenter, source, opts.batch_size, opts.max_frames):
            fg.append(float(mask_union(res.mask).mean()))
            per_class.append(_class_fractions(res.mask))
            writer.q.put((index, frame, res.mask))
            summary.frames_decoded += 1
            if progress is not None:
                progress.update()
    finally:
        writer.close()
    summary.seconds = time.perf_counter() - t0
    summary.frames_written = writer.written
    summary.frames_per_s = summary.frames_decoded / max(summary.seconds, 1e-9)
    summary.mean_foreground = float(np.mean(fg)) if fg else 0.0
    if per_class and per_class[0] is not None:
        summary.mean_foreground_per_class = [float(f) for f in np.mean(per_class, axis=0)]
    summary.outputs = {k: str(out_dir / f"{k}.mp4") for k in writer.videos}
    if opts.mask_png:
        summary.outputs["masks"] = str(out_dir / "masks")
    return summary
