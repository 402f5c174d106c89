"""The benchmark engine behind `cmunext-bench`: one row per (artifact, device, options).

Per row, in this order (one backend instance unless said otherwise):

1. load the artifact through the runtime registry (any Backend works unchanged);
2. latency at batch 1: `warmup` untimed calls, then timed `Backend.infer` calls on real,
   preprocessed images (p50/p90/p99, mean, std; FPS at batch 1 = 1000 / mean ms);
3. the pipeline split per image: preprocessing (`PreprocessSpec.preprocess` of a decoded
   BGR image; decoding excluded), inference (the p50 above), postprocessing (sigmoid,
   resize to the original size, threshold);
4. peak memory (`system.snapshot`), read before any extra stream instance is opened;
5. throughput: every allowed batch size x parallel streams (one independent backend per
   stream thread), `throughput_time_s` each; the best images/s and its setting are kept;
6. accuracy: with `data`, official Dice/IoU against the ground truth; always, when the
   source checkpoint is known, agreement with its PyTorch fp32 logits (mean mask Dice
   and max |delta logit|) on the evaluation images (`data`, else the latency images).

Complexity (parameters, conv MACs) comes from the source checkpoint or the artifact's
`variant` metadata. The machine's fp32 matmul GFLOP/s gives each row a compute floor:
`floor_fraction = 2 * MACs / p50 latency / matmul FLOP/s`.

Modules of this package: `engine` (this one), `inputs` (latency images, artifact size),
`timing` (timing loops), `overhead` (the ONNX Runtime overhead check), `accuracy` (Dice,
agreement), `system` (memory, machine, matmul), `report` (table, Markdown, JSON, plot).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from cmunext_edge._deps import available
from cmunext_edge.progress import Progress
from cmunext_edge.runtime.base import DeviceUnavailableError
from cmunext_edge.artifacts.kinds import is_checkpoint
from cmunext_edge.runtime.registry import open_backend
from cmunext_edge.bench import system
from cmunext_edge.bench.accuracy import Evaluator
from cmunext_edge.bench.inputs import artifact_bytes, load_images
from cmunext_edge.bench.timing import (
    allowed_batches, latency_stats, measure_throughput, median_ms, time_calls, torch_threads)



@dataclass(frozen=True)
class RowSpec:
    """What to benchmark: an artifact, the device asked for and backend options."""
    artifact: Path
    device: str = "cpu"
    options: tuple = ()               # sorted (key, value) pairs: precision, threads, hint ...
    backend: str | None = None        # registry name; None: chosen by the artifact's suffix

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def is_checkpoint(self) -> bool:
        return is_checkpoint(self.artifact)


@dataclass
class BenchConfig:
    rows: list[RowSpec]
    warmup: int = 10
    iters: int = 100
    min_time_s: float = 0.0          # keep timing until both `iters` and this are reached
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    streams: tuple[int, ...] = (1, 2)
    throughput_time_s: float = 1.0   # per (batch size, streams) cell; 0 skips throughput
    images: Path | None = None       # latency images (default: the bundled samples)
    max_latency_images: int = 16
    data: Path | None = None         # official-layout dataset for Dice
    split: Path | None = None
    max_images: int | None = None
    eval_batch: int = 8
    reference: Path | None = None    # PyTorch source checkpoint for agreement
    strict_device: bool = False
    matmul_seconds: float = 1.0      # 0 skips the GFLOP/s measurement
    progress: bool = True
    verify: bool = True              # verified load of each artifact (integrity.py); False skips it
    trusted_keys: list | None = None  # trust policy (signing.py); None: $CMUNEXT_TRUSTED_KEYS or none


@dataclass
class RowResult:
    label: str
    artifact: str
    backend: str = ""
    device: str = ""
    requested_device: str = ""
    precision: str = ""
    options: dict = field(default_factory=dict)
    fallback: str | None = None
    error: str | None = None
    artifact_mb: float | None = None
    variant: str | None = None
    params: int | None = None
    macs: int | None = None
    input_shape: list | None = None
    load_s: float | None = None
    latency_ms: dict | None = None    # p50 p90 p99 mean std min n (batch 1)
    fps_batch1: float | None = None
    preprocess_ms: float | None = None
    postprocess_ms: float | None = None
    throughput: list = field(default_factory=list)   # every (batch, streams) cell
    best_throughput: dict | None = None              # {images_per_s, batch, streams}
    memory: dict | None = None
    dice: float | None = None
    iou: float | None = None
    n_dice_images: int = 0
    no_dice: str | None = None           # why the data's ground truth gives this row no Dice
    dice_note: str | None = None         # the data holds more classes than the model: Dice on its first ones
    per_class_dice: list | None = None   # several classes only (to_dict leaves it out for one)
    agreement_dice: float | None = None
    max_abs_logit_delta: float | None = None
    n_agreement_images: int = 0
    agreement: dict | None = None        # distribution, 95% bounds and gate (core.agreement)
    reference: str | None = None
    source_sha256: str | None = None
    vs_torch_fp32: float | None = None   # speedup: PyTorch eager fp32 p50 / this row's p50
    floor_fraction: float | None = None  # 2*MACs / p50 / machine matmul FLOP/s

    def to_dict(self) -> dict:
        d = asdict(self)
        return d if d["per_class_dice"] is not None else {k: v for k, v in d.items() if k != "per_class_dice"}


@dataclass
class BenchReport:
    machine: dict
    config: dict
    rows: list[RowResult]
    skipped: list[str] = field(default_factory=list)    # inputs left out (unreadable), each with its reason

    def to_dict(self) -> dict:
        return {"schema": "cmunext-bench/1", "machine": self.machine, "config": self.config,
                "rows": [r.to_dict() for r in self.rows], **({"skipped": self.skipped} if self.skipped else {})}


# --- the run -----------------------------------------------------------------------------
def row_label(spec: RowSpec, backend=None) -> str:
    opts = spec.opts
    prec = backend.precision if backend is not None else opts.get("precision", "")
    extra = ",".join(f"{k}={v}" for k, v in opts.items() if k != "precision")
    name = backend.name if backend is not None else (spec.backend or "?")
    return f"{spec.artifact.name} {name}/{spec.device}/{prec}" + (f" [{extra}]" if extra else "")


def distinct_labels(rows: list) -> None:
    """Rows of different files with one name (dup/m.xml beside m.xml) get their folder in the label
    (then the whole path), so no two rows of the table, Markdown or plot read alike."""
    rest = {id(r): r.label[len(Path(r.artifact).name):] for r in rows if r.label.startswith(Path(r.artifact).name)}
    for attempt in (lambda a: f"{a.parent.name}/{a.name}", str):
        seen: dict[str, set] = {}
        for r in rows:
            seen.setdefault(r.label, set()).add(str(r.artifact))
        for r in rows:
            if len(seen[r.label]) > 1 and id(r) in rest:
                r.label = attempt(Path(r.artifact)) + rest[id(r)]


def _source_info(backend, spec: RowSpec) -> tuple[str | None, str | None]:
    meta = backend.metadata or {}
    if spec.is_checkpoint:
        return meta.get("sha256"), meta.get("variant")
    return meta.get("source_sha256"), meta.get("variant")


def _complexity(backend, variant: str | None):
    if not variant or not available("torch"):     # counting builds the model in PyTorch
        return None
    from cmunext_edge.core.complexity import variant_complexity
    _, channels, h, w = backend.input_shape
    if not (isinstance(h, int) and isinstance(w, int)):    # dynamic spatial size: the contract's
        h, w = backend.spec.size
    channels = channels if isinstance(channels, int) else backend.spec.in_channels
    return variant_complexity(variant, (h, w), channels, int(backend.num_classes))


def torch_row_threads(spec: RowSpec) -> int | None:
    """PyTorch's thread count is process-wide: a `threads` option on a PyTorch row sets it for
    that row only (other backends read `threads` themselves, per session): None for them."""
    is_torch = (spec.backend or "") in ("pytorch", "torch") or (spec.backend is None and spec.is_checkpoint)
    return spec.opts.get("threads") if is_torch else None


def bench_row(spec: RowSpec, config: BenchConfig, bgrs, evaluator: Evaluator, refs: dict,
              bar: Progress) -> RowResult:
    with torch_threads(torch_row_threads(spec)):
        return _bench_row(spec, config, bgrs, evaluator, refs, bar)


def _open_row(spec: RowSpec, config: BenchConfig, row: RowResult, opened: list):
    """Open the row's backend (timed, added to `opened`) and fill in what it says about itself."""
    t0 = time.perf_counter()
    backend = open_backend(spec.artifact, device=spec.device, backend=spec.backend,
                           strict_device=config.strict_device, verify=config.verify,
                           trusted_keys=config.trusted_keys, **spec.opts)
    opened.append(backend)
    row.load_s = time.perf_counter() - t0
    d = backend.describe()
    row.label, row.backend, row.device = row_label(spec, backend), d["backend"], d["device"]
    row.precision, row.fallback, row.input_shape = d["precision"], d.get("fallback"), d["input_shape"]
    row.artifact_mb = artifact_bytes(spec.artifact) / 1e6
    row.source_sha256, row.variant = _source_info(backend, spec)
    cx = _complexity(backend, row.variant)
    if cx is not None:
        row.params, row.macs = cx.params, cx.macs
    return backend


def _latency(row: RowResult, backend, bgrs, config: BenchConfig, rss0) -> list:
    """Batch-1 latency, peak memory, and the pre/postprocessing split; returns the inputs."""
    xs = [backend.spec.preprocess(b)[None] for b in bgrs]
    ms = time_calls(backend.infer, xs, config.warmup, config.iters, config.min_time_s)
    row.latency_ms = latency_stats(ms)
    row.fps_batch1 = 1e3 / row.latency_ms["mean"]
    row.memory = system.snapshot(rss0)
    row.preprocess_ms = median_ms(backend.spec.preprocess, bgrs)
    logits = [backend.infer(x)[0] for x in xs[:4]]
    row.postprocess_ms = median_ms(lambda i: backend.spec.postprocess(logits[i], bgrs[i].shape[:2]),
                                   range(len(logits)))
    return xs


def _throughput(row: RowResult, spec: RowSpec, config: BenchConfig, opened: list, xs) -> None:
    """Every (batch size, streams) cell, one backend instance per stream; extras closed after."""
    backend = opened[0]
    for streams in sorted(set(config.streams)):
        while len(opened) < streams:
            opened.append(open_backend(spec.artifact, device=spec.device, backend=spec.backend,
                                       strict_device=config.strict_device, verify=config.verify,
                                       trusted_keys=config.trusted_keys, **spec.opts))
        for bs in allowed_batches(backend, config.batch_sizes):
            batch = np.concatenate([xs[i % len(xs)] for i in range(bs)])
            ips = measure_throughput(opened[:streams], batch, config.throughput_time_s)
            row.throughput.append({"batch": bs, "streams": streams, "images_per_s": ips})
    for extra in opened[1:]:
        extra.close()
    del opened[1:]
    if row.throughput:
        row.best_throughput = max(row.throughput, key=lambda c: c["images_per_s"])


def _bench_row(spec: RowSpec, config: BenchConfig, bgrs, evaluator: Evaluator, refs: dict,
               bar: Progress) -> RowResult:
    row = RowResult(label=row_label(spec), artifact=str(spec.artifact), options=spec.opts,
                    requested_device=spec.device)
    opened = []
    try:
        system.reset_peak()
        rss0 = system.rss_kb()
        backend = _open_row(spec, config, row, opened)
        bar.update(postfix=f"{row.label}: latency")
        xs = _latency(row, backend, bgrs, config, rss0)
        bar.update(postfix=f"{row.label}: throughput")
        if config.throughput_time_s > 0:
            _throughput(row, spec, config, opened, xs)
        bar.update(postfix=f"{row.label}: accuracy")
        ref = refs.get(row.source_sha256)
        if ref is None and (row.source_sha256 is None or config.reference):
            ref = refs.get(None)    # no source recorded (or --reference given): the unambiguous one
        evaluator.evaluate(backend, row, ref)
        bar.update(postfix=f"{row.label}: done")
    except DeviceUnavailableError:
        raise
    except Exception as exc:  # a broken row is reported, the others still run
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        for be in opened:
            be.close()
    return row


def _reference_map(config: BenchConfig) -> dict:
    """source sha256 -> checkpoint path, from --reference and the checkpoints being benchmarked."""
    from cmunext_edge.fileio import sha256_file
    if not available("torch"):       # an edge box with only its runtime: no PyTorch reference
        return {}
    paths = [config.reference] if config.reference else []
    paths += [r.artifact for r in config.rows if r.is_checkpoint]
    refs: dict = {}
    for p in paths:
        if Path(p).is_file():
            refs.setdefault(sha256_file(p), Path(p))
    if config.reference:   # an explicit reference also serves artifacts without source metadata
        refs[None] = Path(config.reference)
    elif len(set(refs.values())) == 1:
        refs[None] = next(iter(refs.values()))
    return refs


def add_comparisons(rows: list[RowResult], gflops: float | None) -> None:
    """Speedup against the PyTorch eager fp32 row of the same source and device, and floor fraction."""
    base = {}
    for r in rows:
        if r.backend == "pytorch" and r.precision == "fp32" and r.latency_ms and not r.options.get("channels_last"):
            base.setdefault((r.source_sha256, r.device.lower()), r.latency_ms["p50"])
    for r in rows:
        if not r.latency_ms:
            continue
        p50 = r.latency_ms["p50"]
        device = r.device.lower()       # runtimes spell devices differently (OpenVINO: "CPU")
        b = base.get((r.source_sha256, device))
        if b is None and len({k[0] for k in base}) == 1:
            b = next((v for (_, dev), v in base.items() if dev == device), None)
        r.vs_torch_fp32 = b / p50 if b else None
        if gflops and r.macs:
            r.floor_fraction = 2 * r.macs / (p50 / 1e3) / (gflops * 1e9)


def run_bench(config: BenchConfig) -> BenchReport:
    steps = 4 * len(config.rows) + 1
    with Progress(steps, "cmunext-bench", enabled=config.progress) as bar:
        bar.update(0, postfix="measuring matmul GFLOP/s")
        machine = system.machine_info(config.matmul_seconds)
        bar.update(postfix="preparing images")
        skipped: list[str] = []
        bgrs = load_images(config.images, config.max_latency_images, skipped)
        evaluator, refs = Evaluator(config, bgrs), _reference_map(config)
        rows = []
        try:
            for spec in config.rows:
                rows.append(bench_row(spec, config, bgrs, evaluator, refs, bar))
                bar.n = 4 * len(rows) + 1
        finally:
            evaluator.cleanup()
    distinct_labels(rows)
    add_comparisons(rows, machine.get("matmul_gflops"))
    cfg = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "rows"}
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()}
    cfg["latency_images"] = len(bgrs)
    cfg["eval_images"] = "data" if evaluator.samples else "latency images"
    return BenchReport(machine, cfg, rows, skipped + evaluator.skipped)
