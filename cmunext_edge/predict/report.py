"""What a batch prediction job says when it is done (the local job and the Ray job alike): the
reports on disk, one line per image, the summary line, skipped files and the exit code."""
from __future__ import annotations

import sys
from pathlib import Path

from cmunext_edge.core.metrics import format_class_dice
from cmunext_edge.predict.job import JobResult, write_reports
from cmunext_edge.predict.scores import row_classes


def _class_dice(row: dict) -> list[float]:
    """The per-class Dice of a scores row (empty for a one-class model)."""
    return [row[f"dice_class{k}"] for k in range(row_classes(row))] if row_classes(row) > 1 else []


def report_job(result: JobResult, out: str | Path, summary_json, elapsed: float, *, quiet: bool = False,
               prog: str = "cmunext-predict") -> int:
    """Write the reports into `out`, print the rows (unless `quiet`) and the summary; the exit
    code: 0 all done, 1 when some images were skipped or the job stopped early."""
    try:
        summary = write_reports(result, Path(out), summary_json)
    except OSError as exc:
        summary = result.summary()
        result.stopped = result.stopped or f"could not write the reports ({exc.strerror or exc})"
    if not quiet:
        for row in result.rows:
            scores = (f"Dice {row['dice']:.4f}  IoU {row['iou']:.4f}{format_class_dice(_class_dice(row))}"
                      if row["dice"] is not None else "no ground truth")
            print(f"  {row['name']:<24} {scores}")
    for item in result.skipped:
        print(f"skipped: {item['error']}", file=sys.stderr)
    line = (f"{summary['n_images']} images segmented, {len(result.skipped)} skipped in {elapsed:.1f}s "
            f"({summary['n_images'] / max(elapsed, 1e-9):.1f} images/s end to end); outputs in {out}")
    if summary["mean_dice"] is not None:
        line += (f"\nmean Dice {summary['mean_dice']:.4f}{format_class_dice(summary.get('per_class_dice'))}"
                 f"  mean IoU {summary['mean_iou']:.4f} (official metric, {summary['n_with_masks']} images "
                 f"with masks; at original resolution Dice {summary['mean_dice_original']:.4f}"
                 f"{format_class_dice(summary.get('per_class_dice_original'))})")
    print(line)
    if result.stopped:
        print(f"{prog}: error: stopped early: {result.stopped}; the {summary['n_images']} images "
              f"counted above have all their outputs on disk, the others none", file=sys.stderr)
    return 1 if (result.skipped or result.stopped) else 0
