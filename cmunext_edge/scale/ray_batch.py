"""Segment a source on Ray Data: a pool of actors, each loading the artifact once (and running
its embedded self-test), batching inside the actor and writing the same outputs as
`cmunext-predict` (masks/, overlays/, scores.csv, summary.json).

Resumable: every finished image leaves `<out>/.parts/<name>.json` (its scores row), written
after its mask and overlay; a rerun skips those images and still reports all of them. Bad
images are reported per file. An actor that dies is restarted by Ray and its batch retried;
whatever a failed pass still left undone is run again (up to `attempts` passes), and anything
that never finishes is reported as skipped with the reason, so every input is accounted for.
Without `address` a local Ray instance is started (and stopped); with one, the job joins that
cluster: the artifact, the images and `out` must then be on storage every node sees.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.data.discovery import Sample
from cmunext_edge.fileio import atomic_path, require_file, loads_json
from cmunext_edge.predict.job import JobResult, OutputError, _process_batch, output_files
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS
from cmunext_edge.core.preprocess import ImageReadError, load_image, to_bgr_uint8

PARTS = ".parts"
ITEM_KEYS = ("name", "image", "mask", "more_masks", "label_image", "frame")     # a Ray Data row (_item)


@dataclass(frozen=True)
class RayJobOptions:
    """How a Ray job runs: where (a cluster `address`, else a local instance of `num_cpus`), how
    many actors with how many intra-op `threads` each (None: the actor's CPU share), batches,
    device, overlays (and probabilities), how many passes retry what a failed pass left undone, the
    trust policy and the largest image decoded."""
    address: str | None = None
    actors: int = 1
    batch_size: int = 8
    device: str = "cpu"
    write_overlays: bool = True
    threads: int | None = None
    num_cpus: int | None = None
    attempts: int = 3
    trusted_keys: tuple | list | None = None     # trust policy for the actors (else $CMUNEXT_TRUSTED_KEYS)
    write_probabilities: bool = False            # probabilities/*.png too (fractional DICOM SEG)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # largest image decoded (header-first; None: no limit)


class SegmentActor:
    """Ray Data callable class: one EdgeSegmenter per actor, verified once at start-up."""

    def __init__(self, artifact, out_dir, device="cpu", write_overlays=True, options=None,
                 write_probabilities=False):
        from cmunext_edge.runtime.segmenter import EdgeSegmenter
        self.segmenter = EdgeSegmenter.from_artifact(artifact, device=device, **(options or {}))
        check = self.segmenter.self_test()
        if check.status == "fail":
            raise RuntimeError(f"{artifact}: self-test failed on this worker: {check}")
        self.out_dir, self.write_overlays = Path(out_dir), write_overlays
        self.write_probabilities = write_probabilities

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        names, errors, decoded = [], [], []
        for values in zip(*(batch[key] for key in ITEM_KEYS)):
            sample = _sample(dict(zip(ITEM_KEYS, values)))
            try:
                decoded.append((sample, to_bgr_uint8(load_image(sample.image, self.segmenter.max_pixels,
                                                                 frame=sample.frame))))
            except (ImageReadError, OSError, ValueError) as exc:
                names.append(sample.name)
                errors.append(str(exc))
        if decoded:
            rows, skipped = self._segment_and_write(decoded)
            names += [row["name"] for row in rows] + [item.get("name") or item["path"] for item in skipped]
            errors += [""] * len(rows) + [item["error"] for item in skipped]
        return {"name": np.array(names, dtype=object), "error": np.array(errors, dtype=object)}

    def _segment_and_write(self, decoded) -> tuple[list, list]:
        """Segment and write a decoded batch -> (rows done, skipped). A full or read-only disk
        (OutputError) reports the images it left unwritten with that reason, as the local job does,
        instead of failing the batch in Ray's words; an image whose part cannot be written has its
        outputs removed: every image has its outputs and its part, or neither."""
        try:
            rows, skipped = _process_batch(self.segmenter, decoded, self.out_dir, self.write_overlays,
                                           self.write_probabilities)
        except OutputError as exc:
            rows, skipped = exc.rows, list(exc.skipped)
            reported = {r["name"] for r in rows} | {item["name"] for item in skipped}
            skipped += [{"path": str(s.image), "name": s.name, "error": f"{s.image}: not processed: {exc}"}
                        for s, _ in decoded if s.name not in reported]
        done = []
        for row in rows:
            try:
                with atomic_path(part_path(self.out_dir, row["name"])) as tmp:
                    tmp.write_text(json.dumps(row))
            except OSError as exc:
                for path in output_files(self.out_dir, row, self.write_overlays, self.write_probabilities):
                    path.unlink(missing_ok=True)
                skipped.append({"path": row["image"], "name": row["name"],
                                "error": f"{row['image']}: not processed: cannot write its record in "
                                         f"{self.out_dir / PARTS} ({exc.strerror or exc})"})
            else:
                done.append(row)
        return done, skipped


def part_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / PARTS / f"{name}.json"


def _done(out_dir: Path, samples) -> dict[str, dict]:
    """name -> scores row of the samples a previous (or this) run finished."""
    rows = {}
    for s in samples:
        p = part_path(out_dir, s.name)
        if p.is_file():
            try:
                rows[s.name] = loads_json(p.read_text())
            except ValueError:
                p.unlink()         # a torn part (should not happen: written atomically) is redone
    return rows


def _claim(out_dir: Path, artifact: Path, log) -> None:
    """Parts count only for the artifact that made them: another artifact starts over."""
    from cmunext_edge.fileio import sha256_file
    stamp, digest = out_dir / PARTS / ".job.json", sha256_file(artifact)
    if stamp.is_file() and loads_json(stamp.read_text()).get("artifact_sha256") != digest:
        if log:
            log(f"{out_dir} holds results of another artifact: starting over")
        for part in (out_dir / PARTS).glob("*.json"):
            part.unlink()
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps({"artifact": str(artifact), "artifact_sha256": digest}))


def _backend_options(artifact, threads: int | None) -> dict:
    """Intra-op threads per actor for the backends that take them (PyTorch follows Ray's OMP_NUM_THREADS)."""
    from cmunext_edge.resources import resolve_weights
    from cmunext_edge.runtime.registry import entry_for_path
    if not threads or entry_for_path(resolve_weights(artifact)).name not in ("onnxruntime", "openvino"):
        return {}
    return {"threads": threads}


def _start_ray(address: str | None, num_cpus: int | None):
    """Join `address`, or start a local instance; -> (ray, started_here)."""
    ray = require("ray")
    if ray.is_initialized():
        return ray, False
    kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
    ray.init(log_to_driver=False, configure_logging=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray, True


def _cpus_per_actor(ray, actors: int) -> float:
    """The cluster's CPUs shared among the actors, at most one node's worth (an actor lives on one
    node); fractional when there are more actors than CPUs, so that all of them can start."""
    node_max = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(0.01, min(float(ray.cluster_resources().get("CPU", 1)) / actors, node_max))


def _item(s: Sample) -> dict:
    """A Sample as a Ray Data row (its more_masks as a JSON list: multi-class truth survives)."""
    return {"name": s.name, "image": str(s.image), "mask": str(s.mask) if s.mask else "",
            "more_masks": json.dumps([str(p) if p else "" for p in s.more_masks]),
            "label_image": bool(s.label_image), "frame": -1 if s.frame is None else int(s.frame)}


def _sample(item: dict) -> Sample:
    """The Sample of a Ray Data row made by `_item`."""
    more = tuple(Path(p) if p else None for p in json.loads(str(item["more_masks"])))
    frame = int(item["frame"])
    return Sample(str(item["name"]), Path(str(item["image"])), Path(str(item["mask"])) if item["mask"] else None,
                  more, bool(item["label_image"]), None if frame < 0 else frame)


def _trust(trusted_keys) -> dict:
    """The trust policy for the actors (absolute key paths; {} leaves $CMUNEXT_TRUSTED_KEYS to them)."""
    return {"trusted_keys": [str(Path(k).resolve()) for k in trusted_keys]} if trusted_keys else {}


def _run_pass(ray, todo, out_dir, artifact, opts: RayJobOptions, progress) -> dict[str, str]:
    """One Ray Data pass over `todo` -> {name: error} of the files reported bad."""
    items = [_item(s) for s in todo]
    cpus = _cpus_per_actor(ray, opts.actors)
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * opts.actors)))
    # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1)
    options = _backend_options(artifact, opts.threads or max(1, int(cpus)))
    ds = ds.map_batches(SegmentActor, batch_size=opts.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=opts.actors), num_cpus=cpus,
                        num_gpus=1 if opts.device.lower().startswith("cuda") else 0,
                        fn_constructor_kwargs={"artifact": str(artifact), "out_dir": str(out_dir),
                                               "device": opts.device, "write_overlays": opts.write_overlays,
                                               "write_probabilities": opts.write_probabilities,
                                               "options": {**options, **_trust(opts.trusted_keys),
                                                           "max_pixels": opts.max_pixels}})
    bad = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for name, error in zip(batch["name"], batch["error"]):
            if error:
                bad[str(name)] = str(error)
        if progress:
            progress.update(len(batch["name"]), postfix=str(batch["name"][-1]))
    return bad


def run_ray_job(artifact, samples: list[Sample], out_dir, options: RayJobOptions | None = None, *,
                progress=None, log=None, **overrides) -> JobResult:
    """Segment `samples` with `artifact` on Ray Data; rows come back in input order (see module doc).
    `options` (RayJobOptions), or its fields as keywords (`batch_size=4`)."""
    from cmunext_edge.resources import resolve_weights
    opts = dataclasses.replace(options or RayJobOptions(), **overrides)
    artifact = Path(resolve_weights(artifact)).resolve()
    require_file(artifact)
    out_dir = Path(out_dir).resolve()
    try:
        (out_dir / PARTS).mkdir(parents=True, exist_ok=True)
        _claim(out_dir, artifact, log)
    except OSError as exc:      # the pre-flight found it writable: the disk filled (or changed) since
        raise OutputError.of(out_dir, exc) from None
    done = _done(out_dir, samples)
    if progress and done:
        progress.update(len(done), postfix="already done")
    if log and done:
        log(f"resuming: {len(done)} of {len(samples)} images already done in {out_dir}")
    ray, started = _start_ray(opts.address, opts.num_cpus)
    bad, failure = {}, None
    try:
        for _ in range(opts.attempts):
            todo = [s for s in samples if s.name not in done and s.name not in bad]
            if not todo:
                break
            try:
                bad.update(_run_pass(ray, todo, out_dir, artifact, opts, progress))
                stalled = False
            except Exception as exc:     # a pass Ray gave up on: what finished is kept, the rest rerun
                failure = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                if log:
                    log(f"ray pass failed ({failure}); retrying the unfinished images")
                stalled = True
            before, done = len(done), _done(out_dir, samples)
            if stalled and len(done) == before:
                break            # nothing advanced (e.g. the artifact does not load): do not loop
    finally:
        if started:
            ray.shutdown()
    return _collect(samples, done, bad, failure, opts.attempts)


def _collect(samples, done, bad, failure, attempts) -> JobResult:
    result = JobResult()
    for s in samples:
        if s.name in done:
            result.rows.append(done[s.name])
        else:
            error = bad.get(s.name) or f"{s.image}: not processed after {attempts} attempts ({failure})"
            result.skipped.append({"path": str(s.image), "name": s.name, "error": error})
    return result
