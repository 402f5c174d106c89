"""`cmunext-export --target auto`: build every candidate artifact for a device, measure it, keep
the fastest one within a Dice budget, and report every candidate with why it was kept or not.

Candidates are data (one table, `CANDIDATES`): backend x precision x quantization options x exact
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

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..resources import resolve_weights
from ..runtime.registry import open_backend
from ..weights import load_checkpoint
from ..artifact_meta import AGREEMENT_THRESHOLDS
from ..fileio import atomic_path
from .verify import compare, reference_logits

DEVICES = ("CPU", "GPU", "NPU")
FAST = ("transformer", "performance")        # NNCF model_type / preset measured fastest on CPU
DENSE = {"fold_bn": True, "dense_groups": True}   # exact rewrites: best for CMUNeXt-S (8-16 channels)
SPLIT = {"fold_bn": True, "split_groups": True}   # exact rewrites: best for CMUNeXt base (wide groups)


@dataclass(frozen=True)
class Candidate:
    name: str
    devices: tuple[str, ...]
    target: str                                   # an export target of targets.TARGETS
    precision: str
    graph: dict = field(default_factory=dict)     # onnx_export.GRAPH_OPTIONS
    nncf: dict | None = None                      # openvino_export.NNCF_DEFAULTS overrides
    ort_quant: dict | None = None                 # ort_quant.ORT_DEFAULTS overrides
    runtime: dict = field(default_factory=dict)   # stored in the artifact, applied by its backend
    note: str = ""


def _nncf(model_type=None, preset="mixed", **kw) -> dict:
    return {"model_type": model_type, "preset": preset, **kw}


OV_LAT = {"hint": "latency"}
ORT_MEM = {"max_images": 8}    # ORT percentile calibration holds every activation in memory
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("ort-fp32", ("CPU",), "onnx", "fp32", note="ONNX Runtime FP32"),
    Candidate("ort-fp32-fold", ("CPU",), "onnx", "fp32", {"fold_bn": True}, note="+ BN folding"),
    Candidate("ov-fp32", ("CPU", "GPU"), "openvino", "fp32", runtime={**OV_LAT, "inference_precision": "f32"}),
    Candidate("ov-bf16", ("CPU",), "openvino", "bf16", runtime={**OV_LAT, "inference_precision": "bf16"}),
    Candidate("ov-bf16-fold", ("CPU",), "openvino", "bf16", {"fold_bn": True},
              runtime={**OV_LAT, "inference_precision": "bf16"}, note="+ BN folding"),
    Candidate("ov-fp16", ("GPU", "NPU"), "openvino", "fp16", runtime=OV_LAT),
    Candidate("ov-int8-nncf-default", ("CPU", "GPU", "NPU"), "openvino", "int8", nncf=_nncf(),
              runtime=OV_LAT, note="NNCF defaults (model_type None, preset mixed)"),
    Candidate("ov-int8-transformer", ("CPU", "GPU", "NPU"), "openvino", "int8", nncf=_nncf(*FAST),
              runtime=OV_LAT, note="NNCF model_type TRANSFORMER, preset performance"),
    Candidate("ov-int8-transformer-dense", ("CPU", "GPU", "NPU"), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST), runtime=OV_LAT, note="+ BN folding, dense grouped convs (INT8 brgconv)"),
    Candidate("ov-int8-transformer-split", ("CPU", "GPU", "NPU"), "openvino", "int8", SPLIT,
              nncf=_nncf(*FAST), runtime=OV_LAT, note="+ BN folding, grouped convs split per group"),
    Candidate("ov-int8-transformer-dense-biascorr", ("CPU",), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST, fast_bias_correction=False), runtime=OV_LAT,
              note="+ full bias correction instead of fast"),
    Candidate("ov-int8-transformer-dense-f32", ("CPU",), "openvino", "int8", DENSE, nncf=_nncf(*FAST),
              runtime={**OV_LAT, "inference_precision": "f32"}, note="float parts in f32, not bf16"),
    Candidate("ov-int8-transformer-dense-headfloat", ("CPU",), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST, ignored_names=[".*stem/conv/conv.0/.*", ".*Conv_1x1.*"]), runtime=OV_LAT,
              note="first and last convolution kept in float"),
    Candidate("ov-int8-accuracy-control", ("CPU",), "openvino", "int8", DENSE,
              nncf=_nncf(*FAST, max_drop="budget"), runtime=OV_LAT,
              note="nncf.quantize_with_accuracy_control, Dice on the calibration masks"),
    Candidate("ort-int8-qdq", ("CPU",), "onnxruntime", "int8", ort_quant=ORT_MEM,
              note="QDQ, per-channel, percentile"),
    Candidate("ort-int8-qoperator-conv", ("CPU",), "onnxruntime", "int8", DENSE,
              ort_quant={**ORT_MEM, "format": "qoperator", "op_types": ["Conv"]}, note="QOperator, Conv only"),
    Candidate("ort-int8-qdq-reduce-range", ("CPU",), "onnxruntime", "int8", DENSE,
              ort_quant={**ORT_MEM, "reduce_range": True}, note="QDQ, 7-bit weights"),
)
QUICK = ("ort-fp32", "ov-bf16", "ov-int8-transformer-dense")    # tests and smoke runs


def candidates_for(device: str = "CPU", names=None) -> list[Candidate]:
    device = device.upper()
    if device not in DEVICES:
        raise ValueError(f"--device {device!r}: auto selection knows {', '.join(DEVICES)}")
    chosen = [c for c in CANDIDATES if device in c.devices]
    if names:
        unknown = set(names) - {c.name for c in CANDIDATES}
        if unknown:
            raise ValueError(f"unknown candidate(s) {sorted(unknown)}; known: {', '.join(c.name for c in CANDIDATES)}")
        chosen = [c for c in CANDIDATES if c.name in names]
    return chosen


def load_eval_set(data, split, spec, limit: int | None = None, seed: int = 0):
    """Evaluation images (with masks) of an official-layout dataset, optionally one split's list."""
    from ..data import discover
    from .calibration import CalibrationSet, make_calibration_set
    if data is None:
        return make_calibration_set(None, spec, limit or 64, seed)
    from ..preprocess import load_image, load_mask, to_bgr_uint8
    if split is not None and str(split).endswith(".json"):     # a training split.json: its "val" list
        names = json.loads(Path(split).read_text())["val"]
        by_name = {s.name: s for s in discover(data)}
        samples, split = [by_name[n] for n in names], f"{split}:val"
    else:
        samples = discover(data, split)
    if limit and len(samples) > limit:
        samples = sorted(np.random.default_rng(seed).choice(samples, limit, replace=False).tolist(),
                         key=lambda s: s.name)
    inputs = np.stack([spec.preprocess(to_bgr_uint8(load_image(s.image))) for s in samples]).astype(np.float32)
    masks = [load_mask(s.mask, spec.size) if s.mask else None for s in samples]
    return CalibrationSet(f"{data}" + (f" (split {split})" if split else ""), seed, spec, samples, inputs, masks)


@dataclass
class Measured:
    name: str
    target: str
    precision: str
    note: str
    settings: dict
    artifact: str | None = None
    status: str = "error"                # kept | within budget | rejected | error
    reason: str = ""
    latency_ms: list = field(default_factory=list)
    p50_ms: float | None = None
    images_per_s: float | None = None
    dice: float | None = None
    dice_drop_points: float | None = None
    agreement: float | None = None
    device: str | None = None
    export_s: float | None = None
    throughput_setting: str | None = None


def _export_candidate(weights, cand: Candidate, out: Path, calib, calib_size, threads, budget, log):
    from .pipeline import export
    runtime = {**cand.runtime, **({"threads": threads} if threads else {})}
    nncf = dict(cand.nncf) if cand.nncf else None
    if nncf and nncf.get("max_drop") == "budget":
        nncf["max_drop"] = budget / 100.0
    # verify=False: auto measures every candidate itself, on the evaluation images, against the
    # Dice budget (the export's fixed INT8 agreement floor would decide before the budget does)
    int8 = cand.precision == "int8"
    return export(weights, target=cand.target, precision=cand.precision, out=out / cand.name,
                  calib=calib if int8 else None,
                  calib_size=calib_size, graph=cand.graph or None, nncf=nncf, ort_quant=cand.ort_quant,
                  runtime=runtime, name=cand.name, verify=False, log=log)


def run_auto(weights, device: str = "CPU", max_dice_drop: float = 0.5, *, out="exports/auto", data=None,
             split=None, eval_size: int | None = None, calib=None, calib_size: int = 64,
             candidates=None, threads: int | None = None, rounds: int = 5, iters: int = 20,
             throughput_s: float = 1.0, time_pytorch: bool = True, agreement_floor: bool = True,
             log=None) -> dict:
    """Export, measure and select; returns the report dict (also written to out/auto_report.*)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    quiet = lambda msg: None          # noqa: E731 (export() progress is summarised per candidate)
    weights, out = resolve_weights(weights), Path(out)
    ckpt = load_checkpoint(weights)
    model = ckpt.build()
    evals = load_eval_set(data, split, ckpt.spec, eval_size)
    if calib is None:
        log("note: INT8 candidates calibrate on the bundled samples (taken from the shipped model's "
            "validation split); pass training images as calib for a clean Dice budget")
    reference = reference_logits(model, evals.inputs)
    rows, backends = [], {}
    for cand in candidates_for(device, candidates):
        row = Measured(cand.name, cand.target, cand.precision, cand.note,
                       {"graph": sorted(k for k, v in cand.graph.items() if v), "nncf": cand.nncf,
                        "ort_quant": cand.ort_quant, "runtime": cand.runtime})
        rows.append(row)
        log(f"[{len(rows)}] {cand.name}: exporting {cand.target} {cand.precision} ...")
        t0 = time.perf_counter()
        try:
            result = _export_candidate(weights, cand, out / "candidates", calib, calib_size, threads,
                                       max_dice_drop, quiet)
            row.artifact, row.export_s = str(result.artifact), round(time.perf_counter() - t0, 1)
            be = open_backend(result.artifact, device=device.lower())
            logits = np.concatenate([be.infer(x[None]) for x in evals.inputs])
        except Exception as exc:               # a candidate that cannot be built is reported, not fatal
            row.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(f"    failed: {row.reason}")
            continue
        fig = compare(logits, reference, evals.masks, cand.precision)
        row.dice, row.agreement, row.device = fig["dice_vs_ground_truth"], fig["mask_dice_agreement"], be.device
        row.dice_drop_points = 100.0 * (fig["dice_vs_ground_truth_pytorch"] - row.dice) if row.dice is not None else None
        backends[cand.name] = be
        log(f"    Dice {row.dice}, agreement {row.agreement:.4f}")
    torch_dice = compare(reference, reference, evals.masks, "fp32")["dice_vs_ground_truth"]
    _time_all(rows, backends, evals.inputs[:8], threads, rounds, iters, throughput_s, log)
    torch_ms = _time_pytorch(model, evals.inputs[:2], threads) if time_pytorch else None
    winner = select(rows, max_dice_drop, device, agreement_floor=agreement_floor)
    for be in backends.values():
        be.close()
    chosen = _publish_winner(out, winner) if winner else None
    report = {"schema": "cmunext-auto/1", "weights": str(weights), "variant": ckpt.info.variant,
              "device": device.upper(), "max_dice_drop_points": max_dice_drop, "threads": threads,
              "agreement_floor": AGREEMENT_THRESHOLDS if agreement_floor else None,
              "eval_set": {"source": evals.source, "n_images": len(evals)}, "pytorch_fp32_dice": torch_dice,
              "pytorch_fp32_p50_ms": torch_ms, "winner": winner.name if winner else None,
              "artifact": str(chosen) if chosen else None, "candidates": [asdict(r) for r in rows],
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    from .auto_report import write_report
    report["report_files"] = [str(p) for p in write_report(report, out / "auto_report")]
    return report


def _time_all(rows, backends, xs, threads, rounds, iters, throughput_s, log) -> None:
    """Batch-1 latency in alternating rounds (every candidate once per round), then throughput."""
    from ..bench_timing import measure_throughput, time_calls
    live = [r for r in rows if r.name in backends]
    log(f"timing {len(live)} candidates: {rounds} alternating rounds x {iters} calls ...")
    for _ in range(rounds):
        for r in live:
            r.latency_ms += time_calls(backends[r.name].infer, [x[None] for x in xs], 3, iters)
    for r in live:
        r.p50_ms = float(np.median(r.latency_ms))
        if throughput_s > 0:    # the stored (latency) settings, then one single-thread stream per core
            r.images_per_s = measure_throughput([backends[r.name]], xs[:1], throughput_s)
            r.throughput_setting = "1 stream, stored settings"
            cores = threads or (os.cpu_count() or 1)
            if cores > 1:
                extra = [open_backend(r.artifact, device=backends[r.name].requested_device, threads=1)
                         for _ in range(cores)]
                ips = measure_throughput(extra, xs[:1], throughput_s)
                if ips > r.images_per_s:
                    r.images_per_s, r.throughput_setting = ips, f"{cores} streams x 1 thread"
                for be in extra:
                    be.close()
        r.latency_ms = [round(v, 3) for v in r.latency_ms]


def _time_pytorch(model, xs, threads) -> float:
    from ..bench_timing import time_calls
    torch = __import__("torch")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            ms = time_calls(lambda x: model(torch.from_numpy(x)), [x[None] for x in xs], 2, 10)
    finally:
        torch.set_num_threads(before)
    return float(np.median(ms))


def select(rows, max_dice_drop: float, device: str = "CPU", tie_pct: float = 2.0,
           agreement_floor: bool = True):
    """Mark every row kept / within budget / rejected with its reason; return the winner or None.

    The winner is the fastest candidate within the budget; candidates within `tie_pct` percent of
    the fastest p50 are a tie (timing noise), which the smaller Dice drop breaks. With
    `agreement_floor` (default) a candidate must also agree with PyTorch FP32 as much as any
    export of its precision must (mask Dice agreement FP32 0.999 / FP16, BF16 0.99 / INT8
    0.97): a better Dice against ground truth does not excuse masks that differ from the model's."""
    ok = []
    for r in rows:
        if r.p50_ms is None:
            r.status, r.reason = "error", r.reason or "not measured"
            continue
        if r.device and r.device.split(":")[0].upper() != device.upper() and device.upper() != "CPU":
            r.status, r.reason = "rejected", f"ran on {r.device}, not on {device}"
        elif r.dice_drop_points is None:
            r.status, r.reason = "rejected", "no ground truth to measure the Dice drop"
        elif r.dice_drop_points > max_dice_drop + 1e-9:
            r.status, r.reason = "rejected", (f"Dice drop {r.dice_drop_points:.3f} points > budget "
                                              f"{max_dice_drop:g}")
        elif agreement_floor and r.agreement is not None and r.agreement < AGREEMENT_THRESHOLDS[r.precision]:
            r.status, r.reason = "rejected", (f"agreement with PyTorch {r.agreement:.4f} < "
                                              f"{AGREEMENT_THRESHOLDS[r.precision]} required for {r.precision}")
        else:
            ok.append(r)
    if not ok:
        return None
    fastest = min(r.p50_ms for r in ok)
    ties = [r for r in ok if r.p50_ms <= fastest * (1 + tie_pct / 100)]
    winner = min(ties, key=lambda r: (r.dice_drop_points, r.p50_ms))
    for r in ok:
        r.status = "kept" if r is winner else "within budget"
        if r is winner:
            r.reason = "fastest within the Dice budget" + (
                f" (tie within {tie_pct:g}% of {fastest:.2f} ms, smallest Dice drop)" if len(ties) > 1 else "")
        elif r in ties:
            r.reason = f"tie with {winner.name} (within {tie_pct:g}%), larger Dice drop"
        else:
            r.reason = f"within budget, {r.p50_ms - winner.p50_ms:+.2f} ms vs {winner.name}"
    return winner


def _publish_winner(out: Path, winner) -> Path:
    """Copy the winner's files (and manifest entry) from its candidate folder to `out`."""
    src = Path(winner.artifact)
    manifest = json.loads((src.parent / "manifest.json").read_text())
    entry = manifest["artifacts"][src.name]
    for f in sorted(entry["files"], key=lambda f: f["name"] == src.name):   # entry file last
        with atomic_path(out / f["name"]) as tmp:
            shutil.copy2(src.parent / f["name"], tmp)
    from .manifest import write_manifest
    write_manifest(out, src.name, {**entry, "auto": {
        "candidate": winner.name, "p50_ms": winner.p50_ms, "images_per_s": winner.images_per_s,
        "dice": winner.dice, "dice_drop_points": winner.dice_drop_points,
        "mask_dice_agreement": winner.agreement, "report": "auto_report.md"}})
    return out / src.name
