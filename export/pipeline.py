"""export(): checkpoint -> verified artifact, written atomically, with manifest.json.

Every target builds inside a hidden staging folder beside the output, the artifact is then
loaded through its runtime backend and verified against PyTorch FP32 on real images, its
self-test digest is embedded, and only then are its files moved into place (the entry file
last) and the manifest updated. Any failure or interruption (SIGINT, and SIGTERM, turned into
an exception while an export runs) removes the staging folder and whatever was already moved:
no partial artifact is ever left behind. With `sign_key`, the files are signed in the staging folder
once sealed (artifacts/signing.py) and the signature `<entry>.sig` is published with them. A staging folder left by a killed process (SIGKILL,
power loss) is removed by the next export into the same folder once its owner is gone.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cmunext_edge._deps import MissingDependencyError, available
from cmunext_edge.artifacts.meta import (PREFIX, build_metadata, check_selftest, make_selftest, selftest_input)
from cmunext_edge.artifacts.integrity import HASH_KEY, PLACEHOLDER, VerifyReport, check_embedded, seal
from cmunext_edge.artifacts.signing import signature_path
from cmunext_edge.core.agreement import NOT_HELD_OUT, held_out_finding, withdraw_verified
from cmunext_edge.core.precision import Precision
from cmunext_edge.resources import resolve_weights, run_split, shipped_model_name
from cmunext_edge.runtime.base import BackendError
from cmunext_edge.runtime.registry import entry_for_path, open_backend
from cmunext_edge.checkpoints.weights import assumed_size_note, load_checkpoint
from cmunext_edge.data.discovery import discover
from cmunext_edge.data.groundtruth import classes_note
from cmunext_edge.data.model_split import model_split
from cmunext_edge.export.calibration import make_calibration_set
from cmunext_edge.export.int8_recipe import gate_failure_hint, manifest_fields
from cmunext_edge.export.manifest import (file_entries, read_manifest, toolchain_versions, write_manifest)
from cmunext_edge.export.onnx_export import prepare_model
from cmunext_edge.export.options import OPSETS, ExportOptions, ExportResult
from cmunext_edge.export.quiet import quiet_toolchains
from cmunext_edge.capabilities import MAX_BATCH, MAX_COUNT, MAX_SIDE
from cmunext_edge.export.staging import sigterm_raises
from cmunext_edge.fileio import clear_stale_staging, missing_folders, new_staging, remove_empty
from cmunext_edge.export.targets import (
    BuildContext, ExportTarget, ExportUsageError, check_request, get_target)
from cmunext_edge.export.verify import (
    VerificationError, failure_reason, format_figures, reference_logits, verify_backend)
from cmunext_edge.export.verify_data import (
    CALIBRATION, HELD_OUT, MAX_HELD_OUT, VERIFY_DATA, overlap_warnings, overlaps, plan_verification,
    plan_warnings, short_source)


@dataclass
class _Job:
    """One export request, resolved: the target row, precision, checkpoint and where it goes."""
    options: ExportOptions
    target: ExportTarget
    precision: Precision
    weights: Path
    ckpt: object                     # weights.Checkpoint
    spec: object                     # PreprocessSpec of the artifact (imgsz applied)
    device: str
    stem: str
    log: object
    started: float = field(default_factory=time.perf_counter)

    @property
    def out_dir(self) -> Path:
        return Path(self.options.out)


def _check_dependencies(target: ExportTarget, precision: Precision) -> None:
    for module in target.required_modules(precision):
        if not available(module):
            raise MissingDependencyError(target.missing_hint(module))


def _stem(weights: Path, precision: str, imgsz: int, default_size: int, batch: int, dynamic: bool) -> str:
    stem = f"{weights.stem}_{precision}"
    if imgsz != default_size:
        stem += f"_{imgsz}"
    return stem + ("_dynamic" if dynamic else f"_b{batch}" if batch > 1 else "")


def _keep_aside(final: Path, backup: Path) -> Path:
    """A copy of `final` in `backup` (a hard link where the filesystem allows: no bytes copied)."""
    backup.mkdir(exist_ok=True)
    kept = backup / final.name
    try:
        os.link(final, kept)
    except OSError:
        shutil.copy2(final, kept)
    return kept


def _publish(files: list[Path], out_dir: Path, manifest_entry: dict) -> tuple[list[Path], Path]:
    """Move staged files into out_dir in order (entry file last), then record them in the
    manifest; if either step fails, undo the moves and put back the artifact of the same name
    that was there before (kept aside in the staging folder), so a failed re-export leaves the
    previous artifact as it was. Each file is replaced atomically: a reader sees old or new."""
    backup = files[-1].parent / ".previous"
    moved, kept = [], []
    try:
        for f in files:
            final = out_dir / f.name
            if final.is_file():
                kept.append((_keep_aside(final, backup), final))
            os.replace(f, final)
            moved.append(final)
        return moved, write_manifest(out_dir, files[-1].name, manifest_entry)
    except BaseException:
        for f in moved:
            f.unlink(missing_ok=True)
        for copy, final in kept:
            os.replace(copy, final)
        raise


MAX_STEM = 200        # bytes of an artifact's name: room for ".bundle.tar.gz", ".engine.json.sig" and staging names


def _check_values(target: ExportTarget, o: ExportOptions) -> str:
    """Numbers and the device, checked before any work -> the device to verify on."""
    for name, value, low, high in (("batch", o.batch, 1, MAX_BATCH), ("calib_size", o.calib_size, 1, MAX_COUNT),
                                   ("verify_size", o.verify_size, 1, MAX_COUNT), ("opset", o.opset, *OPSETS)):
        if value is not None and (not isinstance(value, int) or not low <= value <= high):
            raise ExportUsageError(f"--{name.replace('_', '-')} must be an integer in [{low}, {high}], got {value!r}")
    if o.imgsz is not None and (not isinstance(o.imgsz, int) or not 16 <= o.imgsz <= MAX_SIDE or o.imgsz % 16):
        raise ExportUsageError(f"--imgsz must be a multiple of 16 (CMUNeXt has four 2x2 max-pools) in "
                               f"[16, {MAX_SIDE}], got {o.imgsz!r}")
    if o.name is not None and (not o.name.strip() or o.name != Path(o.name).name or o.name.startswith(".")
                               or "\\" in o.name or not o.name.isprintable()):
        raise ExportUsageError(f"--name must be a plain file name without a folder, a leading dot or control "
                               f"characters, got {o.name!r} (the folder is --out)")
    device = o.device or target.default_device
    entry = entry_for_path("artifact" + target.suffix)
    try:
        entry.check_device(device, strict=True)
    except BackendError as exc:
        raise ExportUsageError(f"--device: {exc}") from None
    if o.strict_device and available(entry.requires):     # before any build: INT8 calibrates for minutes
        present = [d.lower() for d in entry.load_class().list_devices()]
        if str(device).lower() not in present and str(device).lower().split(".")[0] not in present:
            raise ExportUsageError(f"--device {device} is not available to {entry.name} here (it sees: "
                                   f"{', '.join(present) or 'none'}); --strict-device refuses to verify elsewhere")
    return device


def check_sign_key(key) -> None:
    """A signing key that cannot sign stops the export before any work."""
    from cmunext_edge.artifacts.signing import SigningKeyError, check_signing_key
    try:
        check_signing_key(key)
    except SigningKeyError as exc:
        raise ExportUsageError(str(exc)) from None


def _plan(weights, options: ExportOptions, log) -> _Job:
    """Check the request against the target table, then load the checkpoint (nothing written)."""
    target = get_target(options.target)
    check_sign_key(options.sign_key)
    precision = check_request(target, options)
    if precision == Precision.INT8 and options.batch > 1:
        raise ExportUsageError(f"--batch {options.batch} with --int8: calibration runs one image at a time, so an "
                               f"INT8 artifact is exported with batch 1 or --dynamic (any batch at run time)")
    device = _check_values(target, options)
    read_manifest(options.out)           # a damaged manifest stops the export before any work
    _check_dependencies(target, precision)
    weights = resolve_weights(weights)
    ckpt = load_checkpoint(weights)
    note = run_split(weights, ckpt.sha256)[1]
    if note:
        log(f"warning: {note}")
    assumed = assumed_size_note(weights, ckpt.sha256)
    if assumed and not options.imgsz:
        log(f"note: {assumed}; --imgsz sets it")
    elif options.imgsz and options.imgsz != ckpt.spec.height and not assumed:
        log(f"warning: the model was trained at {ckpt.spec.height}x{ckpt.spec.width} and is exported at --imgsz "
            f"{options.imgsz}: agreement is measured against PyTorch at {options.imgsz}, so it cannot show how far "
            f"the masks are from the trained model's; compare Dice against ground truth at both sizes before use")
    spec = ckpt.spec.with_size(options.imgsz) if options.imgsz else ckpt.spec
    stem = options.name or _stem(weights, precision, spec.height, ckpt.spec.height, options.batch, options.dynamic)
    if stem.lower().endswith(target.suffix.lower()):       # --name model.onnx: model.onnx, not model.onnx.onnx
        stem = stem[:-len(target.suffix)]
    if len(os.fsencode(stem)) > MAX_STEM:                  # else refused by the file system after the work
        raise ExportUsageError(f"the artifact name {stem[:24]!r}... is {len(os.fsencode(stem))} bytes long, at most "
                               f"{MAX_STEM} (a file name holds 255 bytes, with suffixes and the staging folder's "
                               f"name added): give a shorter --name")
    return _Job(options, target, precision, weights, ckpt, spec, device, stem, log)


def _image_sets(job: _Job):
    """(calibration set or None, verification set or None), both seeded samples.

    Verification is held out by default (verify_data.py): --verify-data (its --split or the
    model's validation list), a shipped model's held-out images, the calibration data, the bundled
    samples. Calibration images are left out of a default verification set; a given one that
    overlaps them or the training list is warned about. Ground truth is loaded per class where it
    is used: verification with a meaningful ground truth, and NNCF accuracy control."""
    o = job.options
    classes = job.ckpt.info.num_classes
    plan = plan_verification(o.verify_data, o.calib, job.ckpt.sha256, o.split, job.weights) if o.verify else None
    if o.split is not None and plan is None:
        raise ExportUsageError("--split chooses the verification images, and --no-verify skips verification: "
                               "drop one of them")
    if o.split is not None and plan.origin != VERIFY_DATA:
        raise ExportUsageError("--split chooses images of --verify-data: give --verify-data DATASET/ with it")
    reuse = plan is not None and plan.origin == CALIBRATION
    drawn = calib_set = None
    if job.precision == Precision.INT8:
        drawn, calib_set = _calibration_sets(job, (reuse and plan.ground_truth) or (o.nncf or {}).get("max_drop") is not None)
    if plan is None:
        job.log(f"warning: --no-verify: this {job.target.name} {job.precision} artifact is NOT checked against "
                f"PyTorch; its manifest and cmunext-info say so")
        return calib_set, None
    calib_names = [s.name for s in calib_set.samples] if calib_set is not None and not reuse else []
    verify_set = _planned(replace(drawn) if (drawn is not None and reuse) else _verify_set(job, plan, calib_set),
                          plan, calib_set, calib_names)
    if not reuse:                       # never verify on images that trained or calibrated it when others are known
        verify_set, left_out = _without_overlap(job, plan, calib_set, calib_names, verify_set)
        if left_out:
            job.log(f"note: {len(left_out)} images of the verification data trained or calibrated the model, or are "
                    f"near copies of such images (e.g. {left_out[0]!r}): left out, verifying on the others")
            verify_set.overlap["left_out"] = left_out
    if reuse and calib_set is not None and calib_set is not drawn:
        # verifying on the images drawn from --calib, of which the target calibrated on a draw (ONNX
        # Runtime / TensorRT Q/DQ: at most 16): those, not all drawn, calibrated it (the held-out
        # finding counted every drawn image as a calibration image, beside a calibration record of 16)
        verify_set.overlap["calibration"] = sorted(s.name for s in calib_set.samples)
    for warning in plan_warnings(plan) + overlap_warnings(verify_set.overlap, plan, len(verify_set)):
        job.log(warning)
    job.log(f"verification set: {len(verify_set)} images from {verify_set.source} ({plan.origin})")
    fewer = classes_note(verify_set.samples, classes, verify_set.source) if plan.ground_truth else None
    if fewer:
        job.log(f"note: {fewer}")
    return calib_set, verify_set


def _calibration_sets(job: _Job, truth: bool):
    """(the calibration images drawn, the ones that calibrate): the same set, or a seeded draw of
    them (CalibrationSet.subset) where the target calibrates on at most so many (ONNX Runtime / TensorRT Q/DQ:
    ort_quant.calibration_cap); the manifest records, and verification leaves out, only those."""
    o = job.options
    split = model_split(job.weights, job.ckpt.sha256)
    drawn = make_calibration_set(o.calib, job.spec, o.calib_size, o.seed, job.ckpt.info.num_classes, truth,
                                 spare_validation_of=split)
    if drawn.spared:
        job.log(f"note: {len(drawn.spared)} images of --calib are the model's validation images "
                f"({Path(split).name}): calibrating on the others, so they stay held out for verification")
    if o.calib is None and shipped_model_name(job.ckpt.sha256) is None:
        job.log("warning: no --calib: the INT8 model is calibrated on the bundled BUSI breast-ultrasound "
                "images (the shipped model's domain), not on this model's: pass --calib with images of its "
                "own domain (not its verification images)")
    cap = job.target.calibration_cap(o)
    calib_set = drawn.subset(cap) if cap is not None and len(drawn) > cap else drawn
    job.log(f"calibration set: {len(calib_set)} images from {calib_set.source} (sha256 {calib_set.sha256[:12]})"
            + (f"; {job.target.name} calibrates on at most {cap}: {cap} of the {len(drawn)} drawn "
               f"(--calib-size), drawn again with --seed; the others are not calibration images" if calib_set is not drawn else ""))
    return drawn, calib_set


def _shared(verify_set) -> list[str]:
    return sorted(set(verify_set.overlap["training"]) | set(verify_set.overlap["calibration"]))


def _without_overlap(job: _Job, plan, calib_set, calib_names, first):
    """(verification set, names left out): `first` re-sampled without the images found to have trained
    or calibrated the model (redraw_without)."""
    try:
        names = {s.name for s in discover(plan.source, plan.split)} - set(calib_names)
    except (FileNotFoundError, ValueError):
        names = set()
    return redraw_without(first, names, lambda left_out: _planned(
        _verify_set(job, plan, calib_set, exclude=left_out), plan, calib_set, calib_names))


def redraw_without(first, names: set, redraw):
    """(set, names left out): `first` drawn again, `redraw(left_out)`, without the images its
    `overlap` finds to have trained or calibrated the model (by name, fingerprint or look-alike,
    known only once decoded), again and again until a draw holds none of them; (`first`, []) when
    none of `names` (the source's) remains. The one loop of an export's verification set and of
    `--target auto`'s evaluation set. (Leaving out only the first sample's overlap let the re-sample
    draw new training images, and a sample made wholly of calibration images was kept while the
    source held others.)"""
    current, left_out = first, []
    while shared := _shared(current):
        left_out = sorted(set(left_out) | set(shared))
        if not names - set(left_out):                 # no other image remains
            return first, []
        current = redraw(left_out)
    return current, left_out


def _planned(verify_set, plan, calib_set, calib_names):
    """`verify_set` with its plan, its ground truth only where the plan has a meaningful one, and its
    overlap with the calibration images (`calib_names`) and the training list (renamed copies too)."""
    if not plan.ground_truth:
        verify_set.masks = [None] * len(verify_set)
    verify_set.plan = plan
    verify_set.overlap = overlaps([s.name for s in verify_set.samples], calib_names, plan, verify_set.fingerprints,
                                  calib_set.fingerprints if calib_names else None)
    return verify_set


def _verify_set(job: _Job, plan, calib_set, exclude=()):
    """The verification images of `plan`: a held-out list whole (up to MAX_HELD_OUT) without the
    calibration images when they come from the defaults; otherwise --verify-size (--calib-size).
    `exclude`: names known to have trained or calibrated the model, left out."""
    o = job.options
    held = plan.origin == HELD_OUT or plan.split is not None
    size = o.verify_size or (MAX_HELD_OUT if held else o.calib_size)
    exclude = [*exclude, *([s.name for s in calib_set.samples] if (calib_set is not None and plan.origin == HELD_OUT)
                           else ())]
    return make_calibration_set(plan.source, job.spec, size, o.seed, job.ckpt.info.num_classes,
                                plan.ground_truth, split=plan.split, exclude=exclude)


def _metadata(job: _Job) -> dict:
    info = job.ckpt.info
    meta = build_metadata(spec=job.spec, variant=info.variant, in_channels=info.in_channels,
                          num_classes=info.num_classes, source_sha256=job.ckpt.sha256,
                          precision=job.precision.value, target=job.target.name)
    meta[PREFIX + HASH_KEY] = PLACEHOLDER        # sealed with the content hash once embedded
    if job.options.runtime:
        meta[PREFIX + "runtime"] = json.dumps(job.options.runtime_settings(), sort_keys=True)
    if job.options.graph_rewrites():
        meta[PREFIX + "graph"] = json.dumps(job.options.graph_rewrites())
    return meta


def _verify(job: _Job, entry: Path, model, verify_set) -> tuple[dict | None, dict]:
    """Verify the staged artifact against PyTorch (if asked) and digest its self-test output."""
    figures = None
    with open_backend(entry, device=job.device, strict_device=job.options.strict_device,
                      verify=False) as backend:
        if backend.fallback_reason:       # said, not only in the manifest; next commands name what ran
            job.log(f"note: {backend.fallback_reason}; verifying on {backend.device} "
                    f"(--strict-device refuses instead)")
            job.device = backend.device
        if verify_set is not None:
            job.log(f"verifying against PyTorch FP32 on {len(verify_set)} images of "
                    f"{short_source(verify_set.plan)} ...")
            figures = verify_backend(backend, verify_set.inputs, reference_logits(model, verify_set.inputs),
                                     verify_set.masks, job.precision, names=[s.name for s in verify_set.samples])
            figures["source"] = verify_set.manifest()
            figures["data"] = {**verify_set.plan.as_dict(), "label": short_source(verify_set.plan),
                               "overlap": verify_set.overlap}
            figures["runtime"]["artifact"] = entry.name      # not the staging path
            not_held_out(figures, verify_set.plan, verify_set.overlap, len(verify_set),
                         all_calibrated=verify_set.plan.origin == CALIBRATION and job.precision == Precision.INT8)
            job.log("verification: " + format_figures(figures))
            ran = figures["runtime"].get("precision")
            if figures["passed"] and ran and ran != job.precision.value and job.precision != Precision.INT8:
                figures["ran_at"] = (f"ran at {ran} on this {backend.device} (not {job.precision.value}): verified as "
                                     f"it runs here; where it runs at {job.precision.value}, check it there "
                                     f"(cmunext-bundle + cmunext-check, or cmunext-bench --data)")
                job.log(f"note: {figures['ran_at']}")
            if figures["passed"] and not figures["verified"]:
                job.log(f"warning: NOT verified: {figures['claim']}")
            if not figures["passed"]:
                raise VerificationError(
                    f"{job.target.name} {job.precision} artifact disagrees with PyTorch FP32: "
                    f"{failure_reason(figures)}; "
                    f"nothing was written (use --no-verify to keep it anyway)."
                    + gate_failure_hint(job.target.name, job.precision, job.device, job.options), figures)
        logits = backend.infer(selftest_input(job.spec))
        if not np.isfinite(np.asarray(logits, dtype=np.float32)).all():
            raise VerificationError(f"{job.target.name} {job.precision} artifact outputs NaN or infinite "
                                    f"logits on its self-test input; nothing was written", figures)
        selftest = make_selftest(job.spec, logits, job.precision.value)
    return figures, selftest


def not_held_out(figures: dict, plan, shared: dict, n_images: int, all_calibrated: bool = False) -> None:
    """A verification on images that trained or calibrated the model, or of a model whose training
    images are not known, passes as it did but is not *verified* (core.agreement.withdraw_verified);
    `data.held_out` says which. `shared`: verify_data.overlaps() (the calibration names only where
    they calibrated this artifact: an INT8 one); `all_calibrated`: the verification set is the
    calibration set."""
    calibrated = n_images if all_calibrated and not shared["calibration"] else len(shared["calibration"])
    finding = held_out_finding(n_images, len(shared["training"]), calibrated,
                               bool(plan.training_list) or plan.held_out is not None, plan.training_list)
    if finding is None:
        if plan.training_list:          # checked against the model's training list: none of them
            figures["data"]["held_out"] = True
        return
    if finding[0] == NOT_HELD_OUT:
        figures["data"]["held_out"] = False
    withdraw_verified(figures, finding, ("verify on other images of the model's domain, none of which its training "
                                         "runs (--init included) used" if plan.split else
                                         "verify on other images of the model's domain (--verify-data, with --split "
                                         "naming its validation images)") if finding[0] == NOT_HELD_OUT else
                      "name images it never trained on with --verify-data DATASET/ --split NAMES.txt, or keep "
                      "the split.json cmunext-train wrote beside the checkpoint")


def _embed_selftest(job: _Job, entry: Path, meta: dict, selftest: dict):
    """Embed metadata + self-test, seal the content hash, reload the artifact and check that the
    hash and the self-test reproduce."""
    job.target.load_embed()(entry, {**meta, PREFIX + "selftest": json.dumps(selftest, sort_keys=True)})
    seal(entry)
    with open_backend(entry, device=job.device, verify=False) as backend:
        report = VerifyReport(str(entry))
        check_embedded(entry, backend.metadata, report)
        check = check_selftest(backend.metadata.get("selftest"), job.spec, backend.infer)
        check.device, check.precision = backend.device, backend.precision
    if not report.ok:
        raise RuntimeError(f"embedded content hash does not reproduce: {report.message()}")
    if not check.passed:
        raise RuntimeError(f"embedded self-test does not reproduce on the export host: {check.message}")
    return check


def _split_of(job: _Job) -> str | None:
    """The model's split.json (absolute), recorded so that a bundle made later, from anywhere,
    leaves the model's training images out of its verification images."""
    from cmunext_edge.data.model_split import model_split
    found = model_split(job.weights, job.ckpt.sha256)
    return str(found.resolve()) if found else None


def _manifest_entry(job: _Job, files, calib_set, figures, check) -> dict:
    o, info = job.options, job.ckpt.info
    int8 = job.precision == Precision.INT8
    return {"target": job.target.name, "precision": job.precision.value, "files": file_entries(files),
            "source": {"path": str(job.weights), "sha256": job.ckpt.sha256, "variant": info.variant,
                       "split": _split_of(job)},
            "input_shape": [None if o.dynamic else o.batch, info.in_channels, job.spec.height, job.spec.width],
            "preprocess": job.spec.to_json(), "toolchain": toolchain_versions(),
            "graph": o.graph_rewrites(), "runtime": o.runtime or {},
            "calibration": calib_set.manifest() if (calib_set and int8) else None,
            "verification": figures, "selftest": check.as_dict(),
            "export_seconds": round(time.perf_counter() - job.started, 1),
            **manifest_fields(job.target.name, job.precision, o)}


def _build_and_publish(job: _Job, staging: Path, model, calib_set, verify_set, before_publish):
    meta = _metadata(job)
    ctx = BuildContext(prepare_model(model, job.options.graph), job.spec, job.ckpt.info.in_channels,
                       job.precision, staging, job.stem, meta, job.options, calib_set)
    job.log(f"building {job.target.name} {job.precision} ...")
    with quiet_toolchains():
        files = job.target.load_builder()(ctx)
    entry = files[-1]
    figures, selftest = _verify(job, entry, model, verify_set)
    check = _embed_selftest(job, entry, meta, selftest)
    record = _manifest_entry(job, files, calib_set, figures, check)
    if job.options.sign_key:        # published with the files, not listed among them (re-signing stays valid)
        from cmunext_edge.artifacts.signing import sign_artifact
        sig = sign_artifact(entry, job.options.sign_key)
        files, record["signature"] = files[:-1] + [sig, entry], sig.name        # entry file last
        job.log(f"signed with {job.options.sign_key}: {sig.name}")
    before_publish()               # a SIGTERM whose exception a callback dropped still stops it here
    published, manifest = _publish(files, job.out_dir, record)
    stale = signature_path(published[-1])
    if not job.options.sign_key and stale.exists():      # it signed the files this export replaced
        stale.unlink()
        job.log(f"note: removed {stale.name}: it signed the artifact this export replaced (sign the new "
                f"one with --sign-key, or cmunext-keys sign)")
    return published, manifest, figures, selftest


def export(weights, options: ExportOptions | None = None, *, log=None, **fields) -> ExportResult:
    """Export `weights` to the target and precision of `options` (an ExportOptions; its fields can
    also be given, or overridden, as keywords); see `cmunext-export --help` for the options.

    Raises ExportUsageError for a request the target table refuses, VerificationError when the
    artifact disagrees with PyTorch (nothing is written in either case).
    """
    if options is not None and not isinstance(options, ExportOptions):
        raise TypeError(f"export(weights, options): options must be an ExportOptions, not {options!r}; "
                        f"give target=..., precision=... as keywords")
    options = replace(options, **fields) if options is not None else ExportOptions(**fields)
    if (target := get_target(options.target)).from_artifact:     # e.g. triton: weights is an artifact
        check_request(target, options)
        if options.sign_key:
            raise ExportUsageError(f"--sign-key does not apply to --target {target.name} (it packages an "
                                   f"existing artifact: sign that one at its export, or with cmunext-keys sign)")
        return target.load_builder()(weights, options, log=log or (lambda msg: print(msg, file=sys.stderr)))
    job = _plan(weights, options, log or (lambda msg: print(msg, file=sys.stderr)))
    calib_set, verify_set = _image_sets(job)
    model = job.ckpt.build()                  # the reference: verification compares against it
    made = missing_folders(job.out_dir)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(job.out_dir, job.log)
    try:
        with sigterm_raises() as sigterm:
            staging = new_staging(job.out_dir, job.stem)
            try:
                published, manifest, figures, selftest = _build_and_publish(job, staging, model, calib_set,
                                                                            verify_set, sigterm.check)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        remove_empty(made)                    # the folders this export made, if still empty
        raise
    artifact = published[-1]
    return ExportResult(artifact, published, manifest, job.target.name, job.precision, figures, selftest,
                        next_commands(artifact, job.device))


def next_commands(artifact: Path, device: str) -> list[str]:
    dev = "" if device == "cpu" else f" --device {device}"
    return [f"cmunext-predict path/to/images --weights {artifact} --out predictions{dev}",
            f"cmunext-bench {artifact}{dev}",
            f"python -c \"from cmunext_edge.runtime.segmenter import EdgeSegmenter; "
            f"print(EdgeSegmenter.from_artifact('{artifact}'{', device=' + repr(device) if dev else ''}).self_test())\""]
