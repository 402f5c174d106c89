"""Accuracy rows of `cmunext-bench`: official Dice against ground truth, agreement with PyTorch.

Dice/IoU are the official metric over all of the model's class channels
(`metrics.class_scores_from_logits`; for one class, the official metric itself) on network-size
ground truth from `groundtruth.load_truth(sample, classes, spec.size)`, averaged over images;
with several classes the row also carries each class's mean Dice (`per_class_dice`). A dataset with
fewer classes than the model gets no Dice. Agreement is the
one comparator's (core.agreement.Comparator): per-image mask Dice (classes averaged) between the
row's logits > 0 and the PyTorch fp32 logits > 0 of the source checkpoint, its mean, distribution
(p5, worst image, images below 0.90, 95% bounds) and the export gate's decision for the row's
precision (`row.agreement`), plus the max |delta logit| over all pixels and images. The
reference logits are computed once per checkpoint and kept in a temporary memory-mapped .npy.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from cmunext_edge.bench.inputs import report_skipped
from cmunext_edge.data.discovery import discover
from cmunext_edge.data.groundtruth import classes_note, dataset_classes, load_truth
from cmunext_edge.core.agreement import GATES, Comparator, gate, held_out_finding, withdraw_verified
from cmunext_edge.core.metrics import class_scores_from_logits, summarize_scores
from cmunext_edge.core.preprocess import ImageReadError, load_image, naming
from cmunext_edge.runtime.registry import open_backend


def _readable(samples: list, skipped: list) -> list:
    """The samples whose image and mask decode; each other one is reported on stderr, added to
    `skipped` and left out (the rows say how many images they were scored on; the exit code is 1),
    so one bad file never stops the bench. Images without a mask are scored for agreement only,
    which is said once."""
    kept = []
    for s in samples:
        try:
            image = load_image(s.image, frame=s.frame)
            if s.mask:
                load_truth(s, 1, (16, 16), image_hw=image.shape[:2])
            kept.append(s)
        except (ImageReadError, ValueError, OSError) as exc:
            report_skipped("evaluation image", naming(s.image, exc), skipped)
    if samples and not kept:
        raise ValueError(f"--data: none of its {len(samples)} images could be read")
    unpaired = [s.name for s in kept if s.mask is None]
    if unpaired and len(unpaired) < len(kept):
        print(f"note: {len(unpaired)} of the {len(kept)} --data images have no mask (e.g. {unpaired[0]!r}): "
              f"they count for agreement with PyTorch, not for Dice", file=sys.stderr)
    elif unpaired:
        print(f"note: none of the {len(kept)} --data images has a mask (official layout: masks/0/<name>.png): "
              f"Dice against ground truth is not measured, only agreement with PyTorch", file=sys.stderr)
    return kept


class Evaluator:
    """Official Dice against masks and agreement with the PyTorch fp32 reference, per image."""

    def __init__(self, config, latency_bgrs: list[np.ndarray]):
        self.samples, self.skipped = [], []
        if config.data is not None:
            self.samples = _readable(discover(config.data, config.split)[:config.max_images or None], self.skipped)
        self.latency_bgrs = latency_bgrs
        self.batch = max(1, config.eval_batch)
        self._ref_cache: dict[str, str] = {}   # checkpoint -> .npy path
        self._classes: int | None = None       # classes of the dataset's ground truth
        self._trained: dict = {}               # checkpoint -> (its training images among samples, split.json)

    def batches(self, spec, num_classes: int = 1):
        """(inputs NCHW, C x H x W masks or None) chunks: dataset images if given, else latency
        images; no masks when the dataset has fewer classes than `num_classes`."""
        if self.samples and self._classes is None:
            self._classes = dataset_classes(self.samples) or 0      # read once (label images)
        truth = bool(self.samples) and self._classes >= num_classes
        items = self.samples or self.latency_bgrs
        for i in range(0, len(items), self.batch):
            chunk = items[i:i + self.batch]
            if self.samples:
                x = np.stack([spec(load_image(s.image, frame=s.frame)) for s in chunk])
                masks = [load_truth(s, num_classes, spec.size) if truth and s.mask else None for s in chunk]
            else:
                x, masks = np.stack([spec.preprocess(b) for b in chunk]), [None] * len(chunk)
            yield x, masks

    def reference_logits(self, ref_path: Path) -> np.ndarray:
        """PyTorch fp32 logits of the source checkpoint on the evaluation images (memory-mapped)."""
        key = str(ref_path)
        if key not in self._ref_cache:
            with open_backend(ref_path, device="cpu", precision="fp32") as ref:
                outs = [ref.infer(x) for x, _ in self.batches(ref.spec)]
            arr = np.concatenate(outs)
            tmp = tempfile.NamedTemporaryFile(prefix="cmunext-bench-ref-", suffix=".npy", delete=False)
            np.save(tmp, arr)
            tmp.close()
            self._ref_cache[key] = tmp.name
        return np.load(self._ref_cache[key], mmap_mode="r")

    def _names(self, n: int) -> list:
        return [s.name for s in self.samples[:n]] if self.samples else list(range(n))

    def evaluate(self, backend, row, ref_path: Path | None) -> None:
        ref = self.reference_logits(ref_path) if ref_path is not None else None
        scores, agree, k = [], Comparator(), 0
        classes = int(getattr(backend, "num_classes", None) or 1)
        for x, masks in self.batches(backend.spec, classes):
            logits = backend.infer(x)
            if ref is not None and tuple(ref.shape[1:]) != logits.shape[1:]:
                ref = None      # different input size or classes than the checkpoint: no agreement
            scores += [class_scores_from_logits(lg, m) for lg, m in zip(logits, masks) if m is not None]
            if ref is not None:
                agree.add(logits, np.asarray(ref[k:k + len(logits)]), self._names(k + len(logits))[k:])
            k += len(logits)
        if self.samples and not scores and any(s.mask for s in self.samples) and self._classes < classes:
            row.no_dice = (f"the data's ground truth has {self._classes} class(es), the model {classes}: "
                           f"no Dice against it" + (" (agreement only)" if len(agree) else ""))
        if scores and self._classes > classes:
            row.dice_note = classes_note(self.samples, classes, "--data")
        if scores:
            summary = summarize_scores(scores)
            row.iou, row.dice, row.n_dice_images = summary["mean_iou"], summary["mean_dice"], len(scores)
            if len(summary["per_class_dice"]) > 1:
                row.per_class_dice = summary["per_class_dice"]
        if len(agree):
            summary = agree.summary()
            row.agreement_dice, row.max_abs_logit_delta = summary["mask_dice_agreement"], agree.max_abs_delta
            row.n_agreement_images, row.reference = len(agree), str(ref_path)
            row.agreement = {"distribution": summary["distribution"],
                             **({"per_class_distribution": summary["per_class_distribution"]}
                                if "per_class_distribution" in summary else {}),
                             **(gate(summary, row.precision, "--data") if row.precision in GATES else {})}
            withdraw_verified(row.agreement, self._held_out_finding(ref_path, row), "give --data with held-out images")

    def _held_out_finding(self, ref_path: Path, row):
        """core.agreement.held_out_finding for the agreement images: some trained the reference model
        (its split.json, by name and pixel fingerprint) or calibrated the row's INT8 artifact, or the
        reference's training images are not known."""
        from cmunext_edge.artifacts.manifest import calibration_files
        from cmunext_edge.data.model_split import model_split, training_images
        from cmunext_edge.fileio import sha256_file
        if ref_path not in self._trained:
            split = model_split(ref_path, sha256_file(ref_path))
            self._trained[ref_path] = (training_images(self.samples, split), split)
        trained, split = self._trained[ref_path]
        calib = set(calibration_files(row.artifact)) if row.precision == "int8" else set()
        calibrated = sum(s.image.name in calib for s in self.samples)
        return held_out_finding(len(self.samples), len(trained), calibrated, split is not None, split)

    def cleanup(self) -> None:
        for name in self._ref_cache.values():
            Path(name).unlink(missing_ok=True)
