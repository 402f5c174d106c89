"""The batch job behind cmunext-predict: segment a source, write masks, overlays and scores.

A file that cannot be read is skipped and reported; the rest is processed. Decoding of
the next batches overlaps with inference (a reader thread), and with several segmenters
(`--workers`) batches run as parallel requests. Memory is bounded by batch size and workers, not
by the folder: decoded batches hold a budget of `workers + 1` slots (one per worker being
segmented or written, one being decoded ahead); the reader waits for a free slot before it
decodes the next batch, so at most (workers + 1) x batch-size decoded images exist at once.

Nothing is lost: output names never collide (inputs sharing a name get their extension in it,
e.g. dup.png -> masks/dup.png.png, dup.jpg -> masks/dup.jpg.png); an image whose outputs could
not all be written has none left on disk; a full (or read-only) disk stops the job, and every
input not processed is reported with its reason, so the summary matches what is on disk.

Several classes: masks/<name>_class<k>.png per class, one colour overlay (overlay.py: one palette
colour per class, key in <out>/legend.png), per-class scores (scores.py).

Accounting is from the disk: at the end, an image counts as segmented only if all of its output
files exist (others move to the skipped list with the reason). Ctrl-C or SIGTERM (raised as
KeyboardInterrupt by the CLI) stops handing out batches, lets the ones being written finish, and
returns the result with `interrupted` set: complete outputs only, every other input reported.

`report_job` is what a finished job says (local and Ray jobs alike): rows, summary, skipped files
(and the unread files of the source) and the exit code.
"""
from __future__ import annotations

import csv
import errno
import json
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge.data.discovery import Sample
from cmunext_edge.fileio import atomic_path, printable
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS
from cmunext_edge.core.metrics import format_class_dice, mean_scores
from cmunext_edge.predict.overlay import legend, overlay
from cmunext_edge.predict.scores import CLASS_SUMMARY_KEYS, class_summary, row_classes, score_fields
from cmunext_edge.core.preprocess import ImageReadError, NonFiniteOutputError, load_image, naming, to_bgr_uint8

# write errors that stop the whole job (no later image could be written either)
FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class OutputError(OSError):
    """The output folder cannot take more files (disk full, read-only, no permission)."""

    @classmethod
    def of(cls, out_dir, exc: OSError) -> "OutputError":
        """The write error `exc` as one naming the output folder it happened in."""
        return cls(exc.errno, f"cannot write to {out_dir} ({exc.strerror or exc})")


@dataclass
class JobResult:
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    stopped: str | None = None          # why the job stopped early (e.g. disk full)
    interrupted: BaseException | None = None    # the KeyboardInterrupt (Ctrl-C / SIGTERM) that stopped it

    def summary(self) -> dict:
        scored = [r for r in self.rows if r["dice"] is not None]
        net = mean_scores((r["iou"], r["dice"]) for r in scored)
        orig = mean_scores((r["iou_original"], r["dice_original"]) for r in scored)
        return {"n_images": len(self.rows), "n_with_masks": len(scored),
                "mean_dice": net["mean_dice"], "mean_iou": net["mean_iou"],
                "mean_dice_original": orig["mean_dice"], "mean_iou_original": orig["mean_iou"],
                "skipped": self.skipped, "stopped": self.stopped, "truth_not_used": self.truth_not_used(),
                **class_summary(self.rows)}

    def truth_not_used(self) -> list[dict]:
        """Images segmented whose ground truth could not be used, each with the reason."""
        return [{"name": r["name"], "error": r["truth_problem"]} for r in self.rows if r.get("truth_problem")]


def unique_names(samples: list[Sample]) -> list[Sample]:
    """Samples renamed so that no two outputs collide (case-insensitively): a name shared by
    several inputs gets the input's extension (dup.png, dup.jpg), then a counter if needed."""
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.name.lower()] = counts.get(s.name.lower(), 0) + 1
    taken: set[str] = set()
    out = []
    for s in samples:
        name = s.name if counts[s.name.lower()] == 1 else f"{s.name}{s.image.suffix}"
        base, k = name, 2
        while name.lower() in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name.lower())
        out.append(s if name == s.name else replace(s, name=name))
    return out


def mask_file_names(name: str, classes: int) -> list[str]:
    """The mask files of one image: name.png, or name_class<k>.png per class for several classes."""
    return [f"{name}.png"] if classes <= 1 else [f"{name}_class{k}.png" for k in range(classes)]


def mask_images(name: str, mask: np.ndarray, scale: bool = True) -> list[tuple[str, np.ndarray]]:
    """(file name, 0/255 image) of a mask: one file, or one per class for several classes
    (`scale=False`: the per-class planes as they are, e.g. probabilities)."""
    def image(plane):
        return plane.astype(np.uint8) * 255 if scale else plane
    if mask.ndim == 2 or mask.shape[2] == 1:
        return [(mask_file_names(name, 1)[0], image(mask.reshape(mask.shape[:2])))]
    names = mask_file_names(name, mask.shape[2])
    return [(f, image(mask[..., k])) for k, f in enumerate(names)]


def output_files(out_dir: Path, row: dict, write_overlays: bool, write_probabilities: bool = False) -> list[Path]:
    """Every file the job writes for the image of `row`."""
    names = mask_file_names(row["name"], row_classes(row))
    files = [out_dir / "masks" / f for f in names]
    files += [out_dir / "probabilities" / f for f in names] if write_probabilities else []
    return files + ([out_dir / "overlays" / f"{row['name']}.png"] if write_overlays else [])


def write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _take(slots: threading.Semaphore, stop: threading.Event) -> bool:
    """Wait for a free slot of the decoded-batch budget (False once the job stops)."""
    while not stop.is_set():
        if slots.acquire(timeout=0.1):
            return True
    return False


def _decode(samples, batch_size: int, out_q: queue.Queue, skipped: list, stop: threading.Event,
            max_pixels=DEFAULT_MAX_PIXELS, slots: threading.Semaphore | None = None, errors: list | None = None):
    """Reader thread: decode images (and masks) into batches; bad files go to `skipped`.

    Each batch takes a slot of `slots` before its first image is decoded (its consumer gives the
    slot back when the batch is written), so decoded images never outrun the workers. An
    unexpected error ends the reader: it goes to `errors` and the queue is still closed
    (StopIteration), so the dispatcher never waits on a dead reader."""
    slots = slots or threading.Semaphore(1 << 30)
    batch, held = [], False
    try:
        for s in samples:
            if stop.is_set() or (not held and not _take(slots, stop)):
                break
            held = True
            try:
                batch.append((s, to_bgr_uint8(load_image(s.image, max_pixels, frame=s.frame))))
            except (ImageReadError, OSError, ValueError) as exc:
                skipped.append({"path": str(s.image), "name": s.name, "error": str(exc)})
                out_q.put(None)   # progress tick for the skipped file
                continue
            if len(batch) == batch_size:
                out_q.put(batch)
                batch, held = [], False
        if batch:
            out_q.put(batch)
        elif held:
            slots.release()
    except Exception as exc:      # reported by run_job (the job stops), not lost in the thread
        if errors is not None:
            errors.append(exc)
    finally:
        out_q.put(StopIteration)


def _process_batch(segmenter, batch, out_dir: Path, write_overlays: bool, write_probabilities: bool = False):
    """Segment one decoded batch and write its outputs -> (rows, skipped)."""
    rows, skipped, spec = [], [], segmenter.spec
    try:
        segs = segmenter.segment_batch([bgr for _, bgr in batch], batch_size=len(batch))
    except NonFiniteOutputError as exc:   # reported per image like any input that gave no mask
        return [], [{"path": str(sample.image), "name": sample.name, "error": str(exc)} for sample, _ in batch]
    for (sample, bgr), seg in zip(batch, segs):
        row = {"name": sample.name, "image": str(sample.image), "height": bgr.shape[0],
               "width": bgr.shape[1], "mask_fraction": float(seg.mask.mean()),
               "infer_ms": round(seg.timings["infer_ms"], 3)}
        try:
            row.update(score_fields(sample, seg, spec.size))
            _write_outputs(out_dir, sample.name, seg.mask, bgr, write_overlays,
                           seg.probability if write_probabilities else None)
        except OutputError as exc:        # the images written before it still count
            exc.rows, exc.skipped = rows, skipped
            raise
        except (ImageReadError, OSError, ValueError) as exc:
            skipped.append({"path": str(sample.image), "name": sample.name, "error": str(exc)})
        else:
            rows.append(row)
    return rows, skipped


def _write_outputs(out_dir: Path, name: str, mask, bgr, write_overlays: bool, probability=None) -> None:
    """All files of one image, or none: a failed write removes those already written.
    `probability` (for fractional DICOM SEG): probabilities/<name>.png, 8 bit (round(p * 255))."""
    files = [(out_dir / "masks" / f, img) for f, img in mask_images(name, mask)]
    if probability is not None:
        files += [(out_dir / "probabilities" / f, np.rint(p.astype(np.float32) * 255).astype(np.uint8))
                  for f, p in mask_images(name, probability, scale=False)]
    if write_overlays:
        files.append((out_dir / "overlays" / f"{name}.png", overlay(bgr, mask)))
    written = []
    try:
        for path, img in files:
            write_png(path, img)
            written.append(path)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if exc.errno in FATAL_WRITE_ERRORS:
            raise OutputError.of(out_dir, exc) from None
        raise


class _Worker:
    """Runs one decoded batch on whichever segmenter is free and records its rows; gives the
    batch's slot back to the reader when done. A full disk stops the job (`stop`)."""

    def __init__(self, segmenters, result: JobResult, out_dir: Path, write_overlays: bool, progress, slots,
                 write_probabilities: bool = False):
        self.idle: queue.Queue = queue.Queue()
        for seg in segmenters:
            self.idle.put(seg)
        self.result, self.out_dir, self.write_overlays = result, out_dir, write_overlays
        self.progress, self.slots, self.write_probabilities = progress, slots, write_probabilities
        self.lock, self.stop = threading.Lock(), threading.Event()

    def __call__(self, batch) -> None:
        try:
            if not self.stop.is_set():
                self._run(batch)
        finally:
            self.slots.release()     # the batch is written (or dropped): the reader may decode another

    def _run(self, batch) -> None:
        seg = self.idle.get()
        try:
            rows, skipped = _process_batch(seg, batch, self.out_dir, self.write_overlays, self.write_probabilities)
        except OutputError as exc:
            rows, skipped = getattr(exc, "rows", []), getattr(exc, "skipped", [])
            with self.lock:
                self.result.stopped = self.result.stopped or str(exc)
            self.stop.set()
        except Exception as exc:  # the batch failed in the backend: its images are reported
            rows, skipped = [], [{"path": str(s.image), "name": s.name, "error": f"inference failed: {exc}"}
                                 for s, _ in batch]
        finally:
            self.idle.put(seg)
        with self.lock:
            self.result.rows.extend(rows)
            self.result.skipped.extend(skipped)
            if self.progress:
                self.progress.update(len(batch), postfix=batch[-1][0].name)


def run_job(segmenters, samples: list[Sample], out_dir: Path, batch_size: int = 8,
            write_overlays: bool = True, progress=None, write_probabilities: bool = False) -> JobResult:
    """Segment `samples` with one segmenter, or several in parallel (one request each).

    A reader thread decodes ahead (bounded); each batch goes to whichever segmenter is free, so
    decoding, inference and writing overlap. Rows come back in input order. A full disk stops
    the job (`result.stopped`), so does Ctrl-C / SIGTERM (`result.interrupted`); every sample
    without its outputs on disk is in `result.skipped` with a reason.
    """
    segmenters = list(segmenters) if isinstance(segmenters, (list, tuple)) else [segmenters]
    samples, out_dir, result = unique_names(samples), Path(out_dir), JobResult()
    q: queue.Queue = queue.Queue()
    slots = threading.Semaphore(len(segmenters) + 1)     # decoded batches alive at once: the budget
    work = _Worker(segmenters, result, out_dir, write_overlays, progress, slots, write_probabilities)
    max_pixels = getattr(segmenters[0], "max_pixels", DEFAULT_MAX_PIXELS)
    read_errors: list = []
    reader = threading.Thread(target=_decode, args=(samples, batch_size, q, result.skipped, work.stop,
                                                    max_pixels, slots, read_errors), daemon=True)
    reader.start()
    try:
        _dispatch(segmenters, q, work, progress, work.lock, work.stop)
    except KeyboardInterrupt as exc:      # Ctrl-C, or SIGTERM raised as one by the CLI
        result.interrupted = exc
        result.stopped = result.stopped or (str(exc) or "interrupted (Ctrl-C)")
    reader.join()                         # after a stop it waits for no slot and puts to an unbounded queue
    if read_errors:                       # the images it had not handed over are reported below
        exc = read_errors[0]
        result.stopped = result.stopped or f"reading the inputs failed ({type(exc).__name__}: {exc})"
    _account_from_disk(result, out_dir, write_overlays, write_probabilities)
    _report_unprocessed(result, samples)
    order = {s.name: i for i, s in enumerate(samples)}
    result.rows.sort(key=lambda r: order.get(r["name"], 0))
    return result


def _dispatch(segmenters, q: queue.Queue, work, progress, lock, stop) -> None:
    """Hand decoded batches to the pool until the reader is done (draining after a stop).

    How many batches exist at once is the reader's slot budget; a batch dropped after a stop
    still goes through `work`, which gives its slot back. An interrupt stops handing out
    batches and waits for the ones being written (their outputs are complete)."""
    futures, interrupt = [], None
    pool = ThreadPoolExecutor(len(segmenters))
    try:
        while (batch := q.get()) is not StopIteration:
            if batch is None:
                if progress:
                    with lock:
                        progress.update()
                continue
            futures.append(pool.submit(work, batch))
            del batch
    except BaseException:
        stop.set()          # batches not yet started do nothing; running ones finish
        raise
    finally:
        # Wait for the running batches even when Ctrl-C/SIGTERM lands during this wait: a worker
        # left inside the runtime when the interpreter exits aborts the process (exit 134, not 130/143).
        # Waited for through their futures, not Thread.join: a join interrupted by a signal marks the
        # still running thread stopped (CPython before 3.13), and a second join returns at once.
        while True:
            try:
                wait(futures)
                pool.shutdown(wait=True)
                break
            except KeyboardInterrupt as exc:
                stop.set()
                interrupt = interrupt or exc
    if interrupt is not None:
        raise interrupt
    for f in futures:
        f.result()


def _account_from_disk(result: JobResult, out_dir: Path, write_overlays: bool, write_probabilities: bool = False) -> None:
    """Keep as segmented only the rows whose output files are all on disk; the others are skipped."""
    kept = []
    for row in result.rows:
        missing = [f for f in output_files(out_dir, row, write_overlays, write_probabilities) if not f.is_file()]
        if missing:
            result.skipped.append({"path": row["image"], "name": row["name"], "error": f"{row['image']}: outputs not on disk "
                                                                  f"({missing[0]} is missing)"})
        else:
            kept.append(row)
    result.rows = kept


def _report_unprocessed(result: JobResult, samples: list[Sample]) -> None:
    """Every sample (a file, or one frame of a multi-frame DICOM file) has a row or a reason."""
    done = {r["name"] for r in result.rows} | {s.get("name", s["path"]) for s in result.skipped}
    reason = f"not processed: the job stopped ({result.stopped})" if result.stopped else "not processed"
    result.skipped.extend({"path": str(s.image), "name": s.name, "error": f"{s.image}: {reason}"}
                          for s in samples if s.name not in done)


def write_reports(result: JobResult, out_dir: Path, summary_json: Path | None) -> dict:
    """scores.csv (when some image has ground truth), the summary JSON, and for a multi-class model
    with overlays <out>/legend.png (class colours); -> the summary."""
    summary = result.summary()
    if result.rows and any(r["dice"] is not None for r in result.rows):
        with atomic_path(Path(out_dir) / "scores.csv") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:   # a name not UTF-8: escaped
                writer = csv.DictWriter(fh, fieldnames=list(result.rows[0]))
                writer.writeheader()
                writer.writerows(result.rows)
    if summary_json:
        public = {k: summary[k] for k in ("n_images", "mean_dice", "mean_iou", "skipped", "stopped")}
        public.update({"truth_not_used": summary["truth_not_used"]} if summary["truth_not_used"] else {})
        public.update({k: summary[k] for k in ("mean_dice_original", "mean_iou_original")})
        public.update({k: summary[k] for k in CLASS_SUMMARY_KEYS if k in summary})   # C >= 2 only
        with atomic_path(summary_json) as tmp:
            tmp.write_text(json.dumps(public, indent=2))
    classes = row_classes(result.rows[0]) if result.rows else 1
    if classes >= 2 and (Path(out_dir) / "overlays").is_dir():
        write_png(Path(out_dir) / "legend.png", legend(classes))    # the overlay's colour key
    return summary


def _class_dice(row: dict) -> list[float]:
    """The per-class Dice of a scores row (empty for a one-class model)."""
    return [row[f"dice_class{k}"] for k in range(row_classes(row))] if row_classes(row) > 1 else []


def report_job(result: JobResult, out: str | Path, summary_json, elapsed: float, *, quiet: bool = False,
               prog: str = "cmunext-predict", unread=()) -> int:
    """Write the reports into `out`, print the rows (unless `quiet`), every input not processed
    (`unread`: files of the source the job does not read, then the skipped) and the summary; the
    exit code: 0 all done, 1 when some inputs were skipped or unread or the job stopped early, 2 when
    none was segmented (nothing was done)."""
    result.skipped[:0] = list(unread)
    try:
        summary = write_reports(result, Path(out), summary_json)
    except OSError as exc:
        summary = result.summary()
        result.stopped = result.stopped or f"could not write the reports ({exc.strerror or exc})"
    if not quiet:
        for row in result.rows:
            scores = (f"Dice {row['dice']:.4f}  IoU {row['iou']:.4f}{format_class_dice(_class_dice(row))}"
                      if row["dice"] is not None else
                      "ground truth not used (below)" if row.get("truth_problem") else "no ground truth")
            print(f"  {printable(row['name']):<24} {scores}")
    for item in result.skipped:
        print(f"skipped: {printable(naming(item['path'], item['error']) if item.get('path') else item['error'])}",
              file=sys.stderr)
    for item in summary["truth_not_used"]:
        print(f"ground truth not used: {printable(item['error'])} (the image was segmented)", file=sys.stderr)
    line = (f"{summary['n_images']} images segmented, {len(result.skipped)} skipped in {elapsed:.1f}s "
            f"({summary['n_images'] / max(elapsed, 1e-9):.1f} images/s end to end)"
            + (f"; outputs in {out}" if Path(out).is_dir() else "; nothing written"))
    if summary["mean_dice"] is not None:
        line += (f"\nmean Dice {summary['mean_dice']:.4f}{format_class_dice(summary.get('per_class_dice'))}"
                 f"  mean IoU {summary['mean_iou']:.4f} (official metric, {summary['n_with_masks']} images "
                 f"with masks; at original resolution Dice {summary['mean_dice_original']:.4f}"
                 f"{format_class_dice(summary.get('per_class_dice_original'))})")
    print(line)
    if not result.rows and (result.skipped or result.stopped):      # one error line: nothing was done
        why = f"stopped early: {printable(result.stopped)}; " if result.stopped else ""
        print(f"{prog}: error: {why}no input could be segmented (each is reported above); nothing was done",
              file=sys.stderr)
        return 2
    if result.stopped:
        print(f"{prog}: error: stopped early: {printable(result.stopped)}; the {summary['n_images']} images "
              f"counted above have all their outputs on disk, the others none", file=sys.stderr)
    return 1 if (result.skipped or result.stopped or summary["truth_not_used"]) else 0
