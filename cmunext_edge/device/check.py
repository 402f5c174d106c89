"""What `cmunext-check BUNDLE` does on the device, step by step, into device_report.json.

Steps (one table): under a trust policy (--trusted-key / $CMUNEXT_TRUSTED_KEYS) the bundle's
signature (bundle.sig over every bundle file) by a trusted key, and the artifact's own signature
when it loads; the sha256 of every bundle file; the installed packages against the bundle's
CycloneDX SBOM; the preprocessing contract of the bundle
against the one embedded in the artifact; the artifact loads on the requested device; its
embedded self-test; agreement with the export host's outputs when the device runs the host's
own input tensors (mean mask Dice >= the precision's floor: the runtime alone); the images
preprocessed on the device (how far its OpenCV differs from the host's, end-to-end agreement,
Dice against ground truth within the bundle's budget of the host's); a short latency benchmark. Integrity and contract failures stop the
check before anything runs; later failures are all recorded. Needs numpy, OpenCV and the
artifact's runtime only (no torch).

A bundle archive is checked in a staging folder made new beside it (stage_archive), never
extracted over existing files: refused by the trust policy it leaves nothing; otherwise the
checked folder takes a name that did not exist (publish: NAME.bundle, else NAME.bundle-2, ...).
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from cmunext_edge.artifacts.meta import AGREEMENT_THRESHOLDS, check_selftest
from cmunext_edge.bench.timing import latency_stats, time_calls
from cmunext_edge.artifacts.integrity import SignatureError
from cmunext_edge.device.bundle import (MANIFEST, MANIFEST_HASH, REFERENCE, SIGNATURE, BundleError, manifest_shape_problem,
                                        held_out_of, host_description, is_archive, publish, read_bundle,
                                        stage_archive, verify_files)
from cmunext_edge.device.bundle_truth import reference_truth, spec_input, truth_scores
from cmunext_edge.core.agreement import GATES, Comparator, gate, withdraw_verified
from cmunext_edge.core.preprocess import PreprocessSpec

REPORT_FORMAT = "cmunext-edge device report"


@dataclass
class CheckState:
    folder: Path
    manifest: dict
    device: str
    warmup: int
    iters: int
    max_images: int | None = None
    policy: list | None = None          # trusted public keys (signing.trust_policy), None: no policy
    progress: bool = False              # per-image progress with ETA on stderr (slow devices, emulation)
    backend: object = None
    report: dict = field(default_factory=dict)


def _step_signature(st: CheckState) -> str | None:
    """Under a trust policy: bundle.sig verifies with a trusted key and covers every listed file."""
    from cmunext_edge.artifacts.signing import check_signature
    sig = st.folder / SIGNATURE
    if st.policy is None:
        st.report["signature"] = "signed, not checked (no trusted key)" if sig.is_file() else "unsigned"
        return None
    required = [MANIFEST, MANIFEST_HASH] + sorted(st.manifest.get("files", {}))
    fingerprint = check_signature(st.folder, required, sig, st.policy)
    st.report["signature"] = f"signed by trusted key {fingerprint[:16]}"
    problem = manifest_shape_problem(st.manifest)          # signed, yet not what cmunext-bundle writes
    return f"{MANIFEST} is damaged or edited: {problem}" if problem else None


def _step_sbom(st: CheckState) -> str | None:
    """The installed packages against the bundle's CycloneDX SBOM (every listed one at its version)."""
    from cmunext_edge.device.sbom import SBOM, check_installed
    if not (st.folder / SBOM).is_file():
        return f"no {SBOM} in this bundle: re-make it with this cmunext-bundle"
    sb = st.report["sbom"] = check_installed(st.folder)
    if sb["missing"] or sb["different"]:
        wrong = sb["different"] + [f"{n} not installed" for n in sb["missing"]]
        return f"installed packages differ from {SBOM}: {', '.join(wrong[:5])}" + (
            f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else "")
    return None


def _step_files(st: CheckState) -> str | None:
    problems = verify_files(st.folder, st.manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"bundle tampered or damaged: {problems[0]}{more}"
    return None


def _step_contract(st: CheckState) -> str | None:
    from cmunext_edge.runtime.registry import open_backend
    bundled = PreprocessSpec.from_json((st.folder / "preprocess.json").read_text())
    st.backend = open_backend(st.folder / st.manifest["artifact"], device=st.device, trusted_keys=st.policy)
    embedded = st.backend.spec
    if bundled != embedded:
        diff = [k for k in ("height", "width", "channel_order", "interpolation", "mean", "std",
                            "max_pixel_value", "extra_scale", "threshold", "in_channels")
                if getattr(bundled, k) != getattr(embedded, k)]
        return (f"preprocessing contract in preprocess.json differs from the one embedded in the "
                f"artifact ({', '.join(diff)}: {[getattr(bundled, k) for k in diff]} vs "
                f"{[getattr(embedded, k) for k in diff]})")
    st.report["ran"] = st.backend.describe()
    return None


def _step_selftest(st: CheckState) -> str | None:
    res = check_selftest(st.backend.metadata.get("selftest"), st.backend.spec, st.backend.infer)
    res.device, res.precision = st.backend.device, st.backend.precision
    st.report["selftest"] = res.as_dict()
    return None if res.passed else str(res)


def _agreement(outs, refs, names=None) -> dict:
    """The one comparator (core.agreement) of outputs vs the host's: mean, min, distribution with
    95% bounds, identical masks, max logit delta; each class's mean for several classes."""
    comp = Comparator()
    comp.add(outs, refs, names)
    s = comp.summary()
    out = {"mask_dice_mean": s["mask_dice_agreement"], "mask_dice_min": s["min_mask_dice_agreement"],
           "max_abs_logit_delta": s["max_abs_logit_delta"], "identical_masks": s["identical_masks"],
           "images": s["n_images"], "distribution": s["distribution"],
           "nonfinite_images": s["nonfinite_images"], "n_near_misses": s["n_near_misses"]}
    if s["n_near_misses"]:
        out["near_misses"] = s["near_misses"]       # empty masks the device nearly filled (not gated)
    if s["nonfinite_images"]:
        out["nonfinite_image_names"] = s["nonfinite_image_names"]
    if "per_class_agreement" in s:
        out["per_class_mask_dice"] = s["per_class_agreement"]
        out["per_class_distribution"] = s["per_class_distribution"]
    return out


def _references(st: CheckState) -> tuple[list, np.ndarray, np.ndarray]:
    """(rows, host input tensors, host logits) of the verification images (the first max_images)."""
    ref, n = np.load(st.folder / REFERENCE), st.max_images or None
    return st.manifest["references"][:n], ref["inputs"][:n], ref["logits"][:n]


def _each(st: CheckState, items, desc: str, fn, on_partial) -> list:
    """fn(item) for each item, with progress under --progress; interrupted (Ctrl-C, SIGTERM),
    `on_partial(results so far)` records what was done before the interrupt goes on."""
    from cmunext_edge.progress import Progress
    done = []
    try:
        with Progress(len(items), desc, enabled=st.progress) as bar:
            for item in items:
                done.append(fn(item))
                bar.update()
    except KeyboardInterrupt:
        if done:
            on_partial(done)
        raise
    return done


def _interrupted(record: dict, planned: int) -> None:
    record.update({"interrupted": True, "verified": False, "images_planned": planned})


def _judge_runtime(st: CheckState, outs, rows, logits) -> tuple[dict, dict]:
    """(the agreement record of `outs` (the first len(outs) images) with the host's logits, the
    gate's decision for the artifact's precision or the lower precision that ran)."""
    thr, ran = st.manifest["thresholds"], st.backend.precision
    need = min(thr["min_agreement"], AGREEMENT_THRESHOLDS.get(ran, thr["min_agreement"]))
    k = len(outs)
    agr = {**_agreement(outs, logits[:k], [r["name"] for r in rows[:k]]), "required": need}
    judged = st.manifest.get("precision") if st.manifest.get("precision") in GATES else "int8"
    if need < GATES[judged].mean:           # the device ran a lower precision: its floor applies
        judged = next(p for p, g in GATES.items() if g.mean == need)
    decision = gate({"distribution": agr["distribution"], "per_class_agreement": agr.get("per_class_mask_dice"),
                     **{k: agr.get(k) for k in ("nonfinite_images", "nonfinite_image_names", "max_abs_logit_delta")}},
                    judged, more_images="a re-bundle (cmunext-bundle --images DATASET --n-images N)")
    withdraw_verified(decision, held_out_of(st.manifest.get("images") or {}),
                      "re-bundle with held-out images (cmunext-bundle --images)")
    agr.update({"tail_floor": decision["tail_floor"], "min_images": decision["min_images"],
                "verified": decision["verified"], "claim": decision["claim"]})
    return agr, decision


def _step_runtime(st: CheckState) -> str | None:
    """The host's own input tensors through the device's runtime: the runtime alone, judged
    against the artifact precision's agreement floor (or the floor of the precision that ran)."""
    rows, inputs, logits = _references(st)

    def partial(outs):
        st.report["agreement"] = _judge_runtime(st, outs, rows, logits)[0]
        _interrupted(st.report["agreement"], len(rows))

    outs = _each(st, list(inputs), "host inputs", lambda x: st.backend.infer(x[None])[0], partial)
    agr, decision = _judge_runtime(st, outs, rows, logits)
    st.report["agreement"], need = agr, agr["required"]
    if agr["nonfinite_images"]:
        return f"outputs disagree with the export host on the host's inputs: {decision['failure']}"
    if agr["mask_dice_mean"] < need:
        return (f"outputs disagree with the export host: mask Dice agreement {agr['mask_dice_mean']:.4f} < "
                f"{need} on the host's inputs (max logit delta {agr['max_abs_logit_delta']:.3g}, "
                f"precision that ran: {st.backend.precision})")
    if not decision["passed"]:
        return f"outputs disagree with the export host on the host's inputs: {decision['failure']}"
    return None


def _step_end_to_end(st: CheckState) -> str | None:
    """Images preprocessed on the device: how its preprocessing differs from the host's, agreement
    end to end (reported) and Dice against ground truth (within the bundle's budget of the host's)."""
    rows, inputs, logits = _references(st)
    classes, spec = int(st.backend.num_classes or 1), st.backend.spec

    def one(pair):
        row, host_x = pair
        x = spec_input(spec, st.folder / row["image"])
        out = st.backend.infer(x)[0]
        return out, truth_scores(out, reference_truth(st.folder, row, classes, spec.size)), np.abs(x[0] - host_x)

    def partial(done):
        _end_to_end_record(st, done, rows, logits)
        _interrupted(st.report["end_to_end"], len(rows))

    d = _end_to_end_record(st, _each(st, list(zip(rows, inputs)), "device preprocessing", one, partial),
                           rows, logits)
    if d["drop"] > d["max_drop"]:
        return (f"Dice vs ground truth {d['device']:.4f} is {d['drop']:.4f} below the host's "
                f"{d['host']:.4f} (budget {d['max_drop']}) with this device's preprocessing")
    return None


def _end_to_end_record(st: CheckState, done: list, rows: list, logits) -> dict:
    """report["end_to_end"] and report["dice"] from (output, truth scores, input |diff|) per image
    (the first len(done) images) -> the Dice record."""
    k, outs = len(done), [o for o, _, _ in done]
    scores, diff = [s for _, s, _ in done], np.stack([d for _, _, d in done])
    st.report["end_to_end"] = {**_agreement(outs, logits[:k], [r["name"] for r in rows[:k]]),
                               "input_values_differing": float(np.mean(diff > 0)),
                               "input_max_abs_diff": float(diff.max())}
    dice, host = [s["dice"] for s in scores], [row["host_dice"] for row in rows[:k]]
    d = st.report["dice"] = {"device": float(np.mean(dice)), "host": float(np.mean(host)),
                             "drop": float(np.mean(host) - np.mean(dice)),
                             "max_drop": st.manifest["thresholds"]["max_dice_drop"]}
    if int(st.backend.num_classes or 1) > 1:     # per class: reported (the budget is on the all-class Dice)
        d["per_class_device"] = [float(v) for v in np.mean([s["class_dice"] for s in scores], axis=0)]
        d["per_class_host"] = [float(v) for v in np.mean([row["host_class_dice"] for row in rows[:k]], axis=0)]
    return d


def _step_latency(st: CheckState) -> str | None:
    spec = st.backend.spec
    x = np.zeros((1, spec.in_channels, spec.height, spec.width), np.float32)
    time_calls(st.backend.infer, [x], st.warmup, 0)               # warm-up only
    start = time.perf_counter()
    ms = time_calls(st.backend.infer, [x], 0, max(1, st.iters))
    total = time.perf_counter() - start
    stats = latency_stats(ms)
    st.report["latency_ms"] = {**stats, "warmup": st.warmup}
    st.report["fps"] = {"batch1_p50": 1e3 / stats["p50"], "batch1_loop": float(len(ms) / total)}
    return None


# name -> (step, stops the check when it fails)
STEPS = (("signature", _step_signature, True), ("files", _step_files, True), ("sbom", _step_sbom, False),
         ("preprocessing_contract", _step_contract, True),
         ("selftest", _step_selftest, False), ("host_inputs", _step_runtime, False),
         ("device_preprocessing", _step_end_to_end, False),
         ("latency", _step_latency, False))


def device_description() -> dict:
    """The device: platform, CPU name (x86 model name or ARM implementer/part), versions."""
    info = host_description()
    info["cpu"] = _cpu_name()
    info["logical_cores"] = os.cpu_count()
    info["versions"] = {d: _dist_version(d) for d in ("cmunext-edge", "numpy", "opencv-python-headless",
                                                       "onnxruntime", "openvino", "tensorrt")
                        if _dist_version(d)}
    return info


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


ARM_PARTS = {"0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1", "0xd42": "Cortex-A78AE",
             "0xd41": "Cortex-A78", "0xd40": "Neoverse-V1", "0xd4f": "Neoverse-V2", "0xd03": "Cortex-A53"}


def _cpu_name() -> str:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        return fields["model name"]
    if "CPU part" in fields:
        part = fields["CPU part"].lower()
        return f"{ARM_PARTS.get(part, 'ARM')} (implementer {fields.get('CPU implementer')}, part {part})"
    return platform.processor() or platform.machine()


def run_check(bundle, *, device: str = "cpu", warmup: int = 2, iters: int = 10, label: str | None = None,
              emulated: str | None = None, max_images: int | None = None, trusted_keys=None,
              progress: bool = False) -> dict:
    """Run every step on `bundle` (folder or .tar.gz) -> the device report (a dict; see STEPS).
    `trusted_keys`: the trust policy (default $CMUNEXT_TRUSTED_KEYS); a refusal by it sets
    report["refused"]. `progress`: per-image progress with ETA on stderr.

    Raises BundleError only when the bundle cannot be read at all (TrustPolicyError for a key
    that cannot be used). Interrupted (Ctrl-C; SIGTERM where the caller turns it into a
    KeyboardInterrupt, as the CLI does), the KeyboardInterrupt goes on with `.report`: the partial
    report (report["interrupted"] names the step; the steps done and the images of the interrupted
    one that finished are recorded, never called verified or passed)."""
    from cmunext_edge.artifacts.signing import trust_policy
    policy = trust_policy(trusted_keys)
    staging = None
    whole = policy is None             # under a policy the signature is checked before the other fields
    if is_archive(bundle):             # extracted into a new staging folder, checked there
        staging, folder, manifest = stage_archive(Path(bundle), whole)
    else:
        folder, manifest = read_bundle(bundle, whole)
    st = CheckState(folder, manifest, device, warmup, iters, max_images, policy, progress)
    st.report.update({"format": REPORT_FORMAT, "version": 1, "emulated": emulated, "checks": []})
    try:
        st.report["bundle"] = {"path": str(folder), "artifact": manifest.get("artifact"),
                               "backend": manifest.get("backend"), "precision": manifest.get("precision"),
                               "host": {k: (manifest.get("host") if isinstance(manifest.get("host"), dict) else {}).get(k)
                                        for k in ("machine", "ran")}}
        desc = device_description()
        st.report.update({"label": label or f"{desc['cpu']} ({desc['machine']})", "device": desc})
        for name, step, stops in STEPS:
            started = time.perf_counter()
            try:
                problem = step(st)
            except KeyboardInterrupt as exc:
                st.report["interrupted"] = {"step": name, "seconds": round(time.perf_counter() - started, 2)}
                _finish(st.report)
                exc.report = st.report
                raise
            except SignatureError as exc:
                problem = st.report["refused"] = f"{name}: refused by the trust policy: {exc}"
                stops = True
            except (BundleError, OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
                problem, stops = f"{name}: {type(exc).__name__}: {exc}", True
            st.report["checks"].append({"name": name, "passed": problem is None, "message": problem or "ok",
                                        "seconds": round(time.perf_counter() - started, 2)})
            if problem and stops:
                break
    finally:
        if st.backend is not None:
            st.backend.close()
            st.backend = None
        if staging is not None:
            _settle(st, staging, Path(bundle))
    return _finish(st.report)


def _settle(st: CheckState, staging: Path, tar: Path) -> None:
    """After checking an archive in its staging folder: a bundle refused by the trust policy leaves
    nothing; any other (passed, failed or interrupted) is kept with its report under a new name
    beside the archive (report["bundle"]["path"]), and the report's messages name that folder, not
    the staging one."""
    import shutil
    checks = st.report.get("checks") or []
    staged, final = str(st.folder), None
    try:
        if not st.report.get("refused"):
            final = publish(st.folder, tar.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    st.folder = final
    shown = str(final) if final else f"{tar} (not extracted: refused)"
    st.report.setdefault("bundle", {}).update({"path": str(final) if final else None, "archive": str(tar)})
    for c in checks:
        c["message"] = c["message"].replace(staged, shown)
    for key in ("refused", "first_failure"):
        if isinstance(st.report.get(key), str):
            st.report[key] = st.report[key].replace(staged, shown)


def _finish(report: dict) -> dict:
    failed = [c for c in report["checks"] if not c["passed"]]
    report["passed"] = not failed and len(report["checks"]) == len(STEPS) and "interrupted" not in report
    report["first_failure"] = failed[0]["message"] if failed else None
    return report


def write_report(report: dict, path) -> Path:
    """Write the report atomically (a missing folder is made; the caller checked `path` first)."""
    from cmunext_edge.fileio import atomic_path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    return path


def bundle_inputs(bundle) -> list[Path]:
    """The files a check of `bundle` reads, which its report must never replace: the archive; or
    the folder's bundle.json, its .sha256, bundle.sig and every file bundle.json lists (an
    unreadable bundle.json: the first three; the check then refuses the bundle)."""
    from cmunext_edge.device.bundle import _read_manifest
    bundle = Path(bundle)
    if is_archive(bundle) or not bundle.is_dir():
        return [bundle]
    files = [bundle / MANIFEST, bundle / MANIFEST_HASH, bundle / SIGNATURE]
    try:
        listed = _read_manifest(bundle).get("files") or {}
    except BundleError:
        return files
    return files + [bundle / rel for rel in listed if isinstance(rel, str)]
