"""The batch job behind cmunext-predict: segment a source, write masks, overlays and scores.

A file that cannot be read is skipped and reported; the rest is processed. Decoding of
the next batches overlaps with inference (a reader thread), and with several segmenters
(`--workers`) batches run as parallel requests.
"""
from __future__ import annotations

import csv
import json
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .data import Sample
from .fileio import atomic_path
from .metrics import iou_dice, iou_dice_from_logits, mean_scores
from .preprocess import ImageReadError, load_image, load_mask, to_bgr_uint8


@dataclass
class JobResult:
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        scored = [r for r in self.rows if r["dice"] is not None]
        net = mean_scores((r["iou"], r["dice"]) for r in scored)
        orig = mean_scores((r["iou_original"], r["dice_original"]) for r in scored)
        return {"n_images": len(self.rows), "n_with_masks": len(scored),
                "mean_dice": net["mean_dice"], "mean_iou": net["mean_iou"],
                "mean_dice_original": orig["mean_dice"], "mean_iou_original": orig["mean_iou"],
                "skipped": self.skipped}


def overlay(bgr: np.ndarray, mask: np.ndarray, color=(0, 0, 255), alpha: float = 0.4) -> np.ndarray:
    """Tint the predicted region and draw its outline."""
    out = bgr.copy()
    m = mask.astype(bool)
    out[m] = (out[m] * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _decode(samples, batch_size: int, out_q: queue.Queue, skipped: list):
    """Reader thread: decode images (and masks) into batches; bad files go to `skipped`."""
    batch = []
    for s in samples:
        try:
            batch.append((s, to_bgr_uint8(load_image(s.image))))
        except (ImageReadError, OSError, ValueError) as exc:
            skipped.append({"path": str(s.image), "error": str(exc)})
            out_q.put(None)   # progress tick for the skipped file
            continue
        if len(batch) == batch_size:
            out_q.put(batch)
            batch = []
    if batch:
        out_q.put(batch)
    out_q.put(StopIteration)


def _process_batch(segmenter, batch, out_dir: Path, write_overlays: bool):
    """Segment one decoded batch and write its outputs -> (rows, skipped)."""
    rows, skipped, spec = [], [], segmenter.spec
    segs = segmenter.segment_batch([bgr for _, bgr in batch], batch_size=len(batch))
    for (sample, bgr), seg in zip(batch, segs):
        row = {"name": sample.name, "image": str(sample.image), "height": bgr.shape[0],
               "width": bgr.shape[1], "mask_fraction": float(seg.mask.mean()),
               "infer_ms": round(seg.timings["infer_ms"], 3),
               "dice": None, "iou": None, "dice_original": None, "iou_original": None}
        mask2d = seg.mask if seg.mask.ndim == 2 else seg.mask.any(axis=2)
        try:
            if sample.mask is not None:
                row["iou"], row["dice"] = iou_dice_from_logits(seg.logits[0], load_mask(sample.mask, spec.size))
                gt = load_mask(sample.mask)
                if gt.shape != mask2d.shape:
                    raise ImageReadError(f"{sample.mask}: mask size {gt.shape} differs from image {mask2d.shape}")
                row["iou_original"], row["dice_original"] = iou_dice(seg.mask if seg.mask.ndim == 2 else seg.mask[..., 0], gt)
            write_png(out_dir / "masks" / f"{sample.name}.png", seg.mask.astype(np.uint8) * 255)
            if write_overlays:
                write_png(out_dir / "overlays" / f"{sample.name}.png", overlay(bgr, mask2d))
        except (ImageReadError, OSError, ValueError) as exc:
            skipped.append({"path": str(sample.image), "error": str(exc)})
        else:
            rows.append(row)
    return rows, skipped


def run_job(segmenters, samples: list[Sample], out_dir: Path, batch_size: int = 8,
            write_overlays: bool = True, progress=None) -> JobResult:
    """Segment `samples` with one segmenter, or several in parallel (one request each).

    A reader thread decodes ahead; each batch goes to whichever segmenter is free, so
    decoding, inference and writing overlap. Rows come back in input order.
    """
    segmenters = list(segmenters) if isinstance(segmenters, (list, tuple)) else [segmenters]
    out_dir = Path(out_dir)
    result = JobResult()
    lock = threading.Lock()
    q: queue.Queue = queue.Queue(maxsize=2 * len(segmenters))
    reader = threading.Thread(target=_decode, args=(samples, batch_size, q, result.skipped), daemon=True)
    reader.start()
    idle: queue.Queue = queue.Queue()
    for seg in segmenters:
        idle.put(seg)

    def work(batch):
        seg = idle.get()
        try:
            rows, skipped = _process_batch(seg, batch, out_dir, write_overlays)
        finally:
            idle.put(seg)
        with lock:
            result.rows.extend(rows)
            result.skipped.extend(skipped)
            if progress:
                progress.update(len(batch), postfix=batch[-1][0].name)

    with ThreadPoolExecutor(len(segmenters)) as pool:
        futures = []
        while (batch := q.get()) is not StopIteration:
            if batch is None:
                if progress:
                    with lock:
                        progress.update()
                continue
            futures.append(pool.submit(work, batch))
        for f in futures:
            f.result()
    reader.join()
    order = {s.name: i for i, s in enumerate(samples)}
    result.rows.sort(key=lambda r: order.get(r["name"], 0))
    return result


def write_reports(result: JobResult, out_dir: Path, summary_json: Path | None) -> dict:
    summary = result.summary()
    if result.rows and any(r["dice"] is not None for r in result.rows):
        with atomic_path(Path(out_dir) / "scores.csv") as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(result.rows[0]))
                writer.writeheader()
                writer.writerows(result.rows)
    if summary_json:
        public = {k: summary[k] for k in ("n_images", "mean_dice", "mean_iou", "skipped")}
        public.update({k: summary[k] for k in ("mean_dice_original", "mean_iou_original")})
        with atomic_path(summary_json) as tmp:
            tmp.write_text(json.dumps(public, indent=2))
    return summary
