"""`cmunext-export --target auto`: build every candidate artifact for a device, measure it, keep
the fastest one within a Dice budget, and report every candidate with why it was kept or not.

Candidates are data (one table, `candidates.CANDIDATES`): backend x precision x quantization options x exact
graph rewrites x runtime settings. Each is exported by the normal `export()` pipeline (verified,
self-test embedded, written atomically), with its runtime settings stored in the artifact so that
`EdgeSegmenter.from_artifact(path)` runs it as it was measured. Then all candidates are opened at
once and timed in alternating rounds in this process (fair A/B on a shared machine); accuracy is
the official Dice against ground truth on the evaluation images and the mask agreement with
PyTorch FP32 on the same images. The Dice budget is in points: 0.5 = 0.005 absolute, against
PyTorch FP32 Dice on the same images; a zero budget rejects every candidate that loses any Dice.
The budget is the only acceptance criterion (the mask agreement with PyTorch is reported beside it).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmunext_edge.artifacts.meta import AGREEMENT_THRESHOLDS
from cmunext_edge.core.agreement import BAD_IMAGE, GATES, min_images
from cmunext_edge.bench.timing import (alternating_rounds, measure_throughput, time_calls, torch_threads)
from cmunext_edge.fileio import atomic_path
from cmunext_edge.core.metrics import format_class_dice
from cmunext_edge.resources import resolve_weights
from cmunext_edge.runtime.registry import open_backend
from cmunext_edge.checkpoints.weights import load_checkpoint
from cmunext_edge.export.auto.candidates import Candidate, candidates_for
from cmunext_edge.export.auto.select import CandidateStatus, Measured, select, selection_note
from cmunext_edge.data.model_split import model_split
from cmunext_edge.export.calibration import calibration_samples, load_eval_set
from cmunext_edge.export.manifest import read_manifest, write_manifest
from cmunext_edge.export.pipeline import not_held_out, redraw_without
from cmunext_edge.export.verify import compare, reference_logits
from cmunext_edge.export.quiet import quiet_toolchains
from cmunext_edge.export.verify_data import (
    HELD_OUT, VERIFY_DATA, overlap_warnings, overlaps, plan_verification, shipped_model_name, short_source)


def _eval_plan(weights, ckpt, opts, log):
    """(data, split, calibration names excluded) of the evaluation images: --verify-data (its
    --split, or the model's validation list), else a shipped model's held-out images; held out
    from the calibration images, which a given dataset is warned about overlapping."""
    from cmunext_edge.data.discovery import discover
    plan = plan_verification(opts.data, opts.calib, ckpt.sha256, opts.split, weights)
    calib_names = [s.name for s in calibration_samples(opts.calib, opts.calib_size, 0, model_split(weights, ckpt.sha256))]
    if plan.origin == HELD_OUT:       # the calibration images among the held-out ones (default: none)
        held = {s.name for s in discover(plan.source)}
        return plan, plan.source, None, [n for n in calib_names if n in held]
    if plan.origin != VERIFY_DATA:
        return plan, opts.data, opts.split, ()
    return plan, plan.source, plan.split, ()


def _held_out_evals(data, split, ckpt, opts, plan, exclude, log):
    """The evaluation set, with its `overlap`, drawn again without the images found to have trained
    the model or calibrated its INT8 candidates while others remain, as an export's verification set
    is (pipeline.redraw_without). (Auto kept them, so on data with near copies, such as BUSI, its
    winner was "not held out" where `cmunext-export` on the same data verified.)"""
    from cmunext_edge.data.discovery import discover

    def draw(left_out=()):
        evals = load_eval_set(data, split, ckpt.spec, opts.eval_size, num_classes=ckpt.info.num_classes,
                              exclude=[*exclude, *left_out])
        evals.plan = plan
        evals.overlap = _eval_overlap(evals, plan, opts)
        return evals
    try:
        names = {s.name for s in discover(data, split)} - set(exclude) if data is not None else set()
    except (FileNotFoundError, ValueError):
        names = set()
    evals, left_out = redraw_without(draw(), names, draw)
    if left_out:
        log(f"note: {len(left_out)} images of the evaluation data trained the model or calibrated its INT8 "
            f"candidates, or are near copies of such images (e.g. {left_out[0]!r}): left out, evaluating on the others")
    for warning in overlap_warnings(evals.overlap, plan, len(evals)):      # what stays: each kind once
        log(warning + " (INT8 candidates)" if "calibrated" in warning else warning)
    return evals


def _eval_overlap(evals, plan, opts) -> dict:
    """The evaluation images that are training images of the model or calibration images of its
    INT8 candidates, by name and by pixel fingerprint (a renamed copy too), as an export finds
    them (verify_data.overlaps)."""
    from cmunext_edge.data.fingerprint import sample_fingerprints
    calib = calibration_samples(opts.calib, opts.calib_size, 0, plan.training_list)
    shared = overlaps([s.name for s in evals.samples], [s.name for s in calib], plan, evals.fingerprints,
                      sample_fingerprints(calib))
    if not any(str(c.precision) == "int8" for c in candidates_for(opts.device, opts.candidates)):
        shared["calibration"] = []       # no INT8 candidate: nothing is calibrated, nothing to warn about
    return shared


def export_candidate(weights, cand: Candidate, out: Path, calib=None, calib_size: int = 64,
                     threads: int | None = None, budget: float = 0.5, log=None):
    """Export one candidate with the toolkit's `export()` into out/<name>; the one export call
    of auto selection (benchmarks/ov_ab.py builds its variants through it too)."""
    from cmunext_edge.export.pipeline import export
    runtime = {**cand.runtime, **({"threads": threads} if threads else {})}
    nncf = dict(cand.nncf) if cand.nncf else None
    if nncf and nncf.get("max_drop") == "budget":
        nncf["max_drop"] = budget / 100.0
    # verify=False: auto measures every candidate itself, on the evaluation images, against the
    # Dice budget (the export's fixed INT8 agreement floor would decide before the budget does)
    int8 = cand.precision == "int8"
    return export(weights, target=cand.target, precision=cand.precision, out=Path(out) / cand.name,
                  calib=calib if int8 else None,
                  calib_size=calib_size, graph=cand.graph or None, nncf=nncf, ort_quant=cand.ort_quant,
                  runtime=runtime, name=cand.name, verify=False, log=log)


@dataclass(frozen=True)
class AutoOptions:
    """Everything `run_auto` needs besides the weights (`cmunext-export --target auto` flags)."""
    device: str = "CPU"
    max_dice_drop: float = 0.5        # Dice budget in points (0.5 = 0.005 absolute)
    out: str | Path = "exports/auto"
    data: str | Path | None = None    # evaluation dataset (official layout); None: the bundled samples
    split: str | Path | None = None   # names file or training split.json ("val" list)
    eval_size: int | None = None
    calib: str | Path | None = None   # INT8 calibration images; None: resources.default_calibration_dir()
    calib_size: int = 64
    candidates: tuple | list | None = None   # names; None: every candidate for the device
    threads: int | None = None
    rounds: int = 5                   # alternating timing rounds
    iters: int = 20                   # timed calls per candidate and round
    throughput_s: float = 1.0         # 0 skips throughput
    time_pytorch: bool = True
    agreement_floor: bool = True
    log: object = None                # callable(str); default: stderr


def run_auto(weights, options: AutoOptions | None = None, **overrides) -> dict:
    """Export, measure and select; returns the report dict (also written to out/auto_report.*).

    `overrides` are AutoOptions fields, e.g. run_auto(w, device="CPU", max_dice_drop=0.5)."""
    opts = dataclasses.replace(options or AutoOptions(), **overrides)
    log = opts.log or (lambda msg: print(msg, file=sys.stderr))
    weights, out = resolve_weights(weights), Path(opts.out)
    ckpt = load_checkpoint(weights)
    model = ckpt.build()
    plan, data, split, exclude = _eval_plan(weights, ckpt, opts, log)
    evals = _held_out_evals(data, split, ckpt, opts, plan, exclude, log)
    if opts.data is None and not shipped_model_name(ckpt.sha256):
        log("warning: no evaluation data (--verify-data): Dice and the Dice budget are measured on "
            "the bundled BUSI samples, which are not this model's domain; pass --verify-data your_dataset/")
    log(f"evaluation: {len(evals)} images of {evals.source}"
        + (f" (the {len(exclude)} calibration images left out)" if exclude else ""))
    reference = reference_logits(model, evals.inputs)
    rows, backends = _build_and_score(weights, opts, evals, reference, out, log)
    torch_fig = compare(reference, reference, evals.masks, "fp32")
    torch_dice = torch_fig["dice_vs_ground_truth"]
    _time_all(rows, backends, evals.inputs[:8], opts, log)
    torch_ms = _time_pytorch(model, evals.inputs[:2], opts.threads) if opts.time_pytorch else None
    winner = select(rows, opts.max_dice_drop, opts.device, agreement_floor=opts.agreement_floor)
    for be in backends.values():
        be.close()
    _record_candidates(rows)
    chosen = _publish_winner(out, winner) if winner else None
    report = {"schema": "cmunext-auto/1", "weights": str(weights), "variant": ckpt.info.variant,
              "device": opts.device.upper(), "max_dice_drop_points": opts.max_dice_drop, "threads": opts.threads,
              "agreement_floor": AGREEMENT_THRESHOLDS if opts.agreement_floor else None,
              "eval_set": {"source": evals.source, "n_images": len(evals), "origin": plan.origin,
                           "held_out": plan.held_out, "calibration_excluded": len(exclude)},
              "gates": {p: {"mean": g.mean, "tail": g.tail, "min_images": min_images(p)} for p, g in GATES.items()},
              "pytorch_fp32_dice": torch_dice,
              **_per_class("pytorch_fp32_per_class_dice", torch_fig.get("per_class_dice_vs_ground_truth")),
              "pytorch_fp32_p50_ms": torch_ms, "winner": winner.name if winner else None,
              "artifact": str(chosen) if chosen else None, "why": selection_note(rows, winner),
              "candidates": [_row_json(r) for r in rows],
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), **_machine()}
    from cmunext_edge.export.auto.report import write_report
    report["report_files"] = [str(p) for p in write_report(report, out / "auto_report")]
    return report


def _per_class(key: str, values) -> dict:
    """{key: values} for several classes; nothing for one (single-class reports stay as they were)."""
    return {key: values} if values is not None else {}


def _row_json(row: Measured) -> dict:
    d = asdict(row)
    d.pop("verification")
    return d if d["per_class_dice"] is not None else {k: v for k, v in d.items() if k != "per_class_dice"}


def _machine() -> dict:
    """What the figures were measured on, and the per-CPU INT8 recipe the candidates used."""
    from cmunext_edge.capabilities import detect
    from cmunext_edge.export.cpu_fit import nncf_overflow_fix, ort_reduce_range
    return {"capabilities": detect().as_dict(),
            "int8_recipe": {"nncf_overflow_fix": nncf_overflow_fix(), "ort_reduce_range": ort_reduce_range()}}


def _build_and_score(weights, opts: AutoOptions, evals, reference, out: Path, log):
    """Export every candidate, run it on the evaluation images and score it; the live backends
    stay open for timing. A candidate that cannot be built is reported, not fatal."""
    quiet = lambda msg: None          # noqa: E731 (export() progress is summarised per candidate)
    rows, backends = [], {}
    for cand in candidates_for(opts.device, opts.candidates):
        row = Measured(cand.name, cand.target, cand.precision, cand.note,
                       {"graph": sorted(k for k, v in cand.graph.items() if v), "nncf": cand.nncf,
                        "ort_quant": cand.ort_quant, "runtime": cand.runtime})
        rows.append(row)
        skip = skip_reason(cand, opts.calib)
        if skip:
            row.status, row.reason = CandidateStatus.SKIPPED, skip
            log(f"[{len(rows)}] {cand.name}: skipped ({skip})")
            continue
        log(f"[{len(rows)}] {cand.name}: exporting {cand.target} {cand.precision} ...")
        t0 = time.perf_counter()
        try:
            with quiet_toolchains():
                result = export_candidate(weights, cand, out / "candidates", opts.calib, opts.calib_size,
                                          opts.threads, opts.max_dice_drop, quiet)
            row.artifact, row.export_s = str(result.artifact), round(time.perf_counter() - t0, 1)
            be = open_backend(result.artifact, device=opts.device.lower())
            logits = np.concatenate([be.infer(x[None]) for x in evals.inputs])
        except Exception as exc:
            row.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(f"    failed: {row.reason}")
            continue
        fig = compare(logits, reference, evals.masks, cand.precision, [s.name for s in evals.samples])
        _record_gate(row, fig, evals)
        row.dice, row.agreement, row.device = fig["dice_vs_ground_truth"], fig["mask_dice_agreement"], be.device
        row.per_class_dice = fig.get("per_class_dice_vs_ground_truth")
        row.dice_drop_points = 100.0 * (fig["dice_vs_ground_truth_pytorch"] - row.dice) if row.dice is not None else None
        backends[cand.name] = be
        log(f"    Dice {'-' if row.dice is None else format(row.dice, '.4f') + format_class_dice(row.per_class_dice)}"
            f", agreement {row.agreement:.4f}, worst {row.worst:.3f} ({row.worst_image}), {row.n_bad} of "
            f"{len(evals)} below {BAD_IMAGE} (95% bound {100 * row.bad_upper95:.1f}%)")
    return rows, backends


def _record_gate(row: Measured, fig: dict, evals) -> None:
    """The candidate's agreement record (distribution, bounds, gate) on the evaluation images."""
    d = fig["distribution"]
    row.worst, row.worst_image, row.n_bad = d["worst"], str(d["worst_image"]), d["n_bad"]
    row.bad_upper95, row.faithful, row.verified = d["bad_share_upper95"], fig["passed"], fig["verified"]
    row.gate_failure = fig["failure"]
    plan = getattr(evals, "plan", None)
    shared = {"training": [], "calibration": [], **(evals.overlap or {})}
    if row.precision != "int8":                  # calibration images calibrated only the INT8 candidates
        shared["calibration"] = []
    row.verification = {**{k: v for k, v in fig.items()}, "source": evals.manifest(),
                        "data": {**(plan.as_dict() if plan else {}), "label": short_source(plan) if plan else
                                 evals.source, "overlap": shared}}
    if plan is not None:
        not_held_out(row.verification, plan, shared, len(evals))
        row.verified = row.verification["verified"]


def skip_reason(cand: Candidate, calib) -> str | None:
    """Why `cand` cannot be built from this calibration source (None: it can): NNCF accuracy
    control measures Dice on the calibration images, so it needs their masks."""
    if not (cand.nncf and cand.nncf.get("max_drop") is not None):
        return None
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.resources import default_calibration_dir
    try:
        has_masks = any(s.mask for s in discover(calib if calib is not None else default_calibration_dir()))
    except (FileNotFoundError, ValueError):
        return None                   # export() reports the unusable source itself
    return None if has_masks else (f"needs calibration images with masks (an official-layout "
                                   f"dataset: images/, masks/0/); {calib} has none")


def _time_all(rows, backends, xs, opts: AutoOptions, log) -> None:
    """Batch-1 latency in alternating rounds (every candidate once per round), then throughput."""
    live = [r for r in rows if r.name in backends]
    log(f"timing {len(live)} candidates: {opts.rounds} alternating rounds x {opts.iters} calls ...")
    rounds = alternating_rounds({r.name: backends[r.name].infer for r in live}, [x[None] for x in xs],
                                opts.rounds, opts.iters, warmup=3)
    for r in live:
        r.latency_ms = [ms for one in rounds[r.name] for ms in one]
        r.p50_ms = float(np.median(r.latency_ms))
        if opts.throughput_s > 0:
            _throughput(r, backends[r.name], xs, opts)
        r.latency_ms = [round(v, 3) for v in r.latency_ms]


def _throughput(r, backend, xs, opts: AutoOptions) -> None:
    """The stored (latency) settings, then one single-thread stream per core; the better is kept."""
    r.images_per_s = measure_throughput([backend], xs[:1], opts.throughput_s)
    r.throughput_setting = "1 stream, stored settings"
    cores = opts.threads or (os.cpu_count() or 1)
    if cores > 1:
        extra = [open_backend(r.artifact, device=backend.requested_device, threads=1) for _ in range(cores)]
        ips = measure_throughput(extra, xs[:1], opts.throughput_s)
        if ips > r.images_per_s:
            r.images_per_s, r.throughput_setting = ips, f"{cores} streams x 1 thread"
        for be in extra:
            be.close()


def _time_pytorch(model, xs, threads) -> float:
    torch = __import__("torch")
    with torch_threads(threads), torch.inference_mode():
        ms = time_calls(lambda x: model(torch.from_numpy(x)), [x[None] for x in xs], 2, 10)
    return float(np.median(ms))


def _auto_entry(row) -> dict:
    return {"candidate": row.name, "status": str(row.status), "p50_ms": row.p50_ms,
            "images_per_s": row.images_per_s, "dice": row.dice, "dice_drop_points": row.dice_drop_points,
            "mask_dice_agreement": row.agreement, "report": "auto_report.md"}


def _record_candidates(rows) -> None:
    """Each measured candidate's manifest entry gets its agreement record on the evaluation images
    (it was exported without one), so that cmunext-info and cmunext-bench judge a candidate
    artifact by what auto measured instead of calling it unverified."""
    for r in rows:
        if not (r.artifact and r.verification):
            continue
        src = Path(r.artifact)
        entry = read_manifest(src.parent)["artifacts"].get(src.name)
        if entry is not None and entry.get("verification") is None:
            write_manifest(src.parent, src.name, {
                **entry, "verification": {**r.verification, "by": "cmunext-export --target auto (evaluation images)"},
                "auto": _auto_entry(r)})


def _publish_winner(out: Path, winner) -> Path:
    """Copy the winner's files and manifest entry (which _record_candidates gave its verification
    on the evaluation images) from its candidate folder to `out`."""
    src = Path(winner.artifact)
    entry = read_manifest(src.parent)["artifacts"][src.name]
    for f in sorted(entry["files"], key=lambda f: f["name"] == src.name):   # entry file last
        with atomic_path(out / f["name"]) as tmp:
            shutil.copy2(src.parent / f["name"], tmp)
    write_manifest(out, src.name, {**entry, "auto": _auto_entry(winner)})
    return out / src.name
