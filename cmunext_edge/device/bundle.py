"""Device bundles: one folder (and a .tar.gz) to copy to a device and prove the artifact there.

A bundle holds the artifact's files, its preprocessing contract and embedded self-test as
readable JSON, a few verification images with their ground truth (every class's: one mask per
class in verify/masks/<k>/, or the label images in verify/labels/; a one-class model keeps the
single verify/masks/ folder) and the logits the
artifact gave for them on the export host, a pinned requirements file for the artifact's
runtime only (numpy, OpenCV and that runtime: no torch), a wheel of this toolkit's core so
that `cmunext-check` installs without a package index for it, and a README for the device.
`bundle.json` lists the sha256 of every other file; `bundle.json.sha256` holds its own hash.
`sbom.cdx.json` is the CycloneDX SBOM of what the device installs and of the model (sbom.py); with
`sign_key`, the artifact copy is signed (artifact/<entry>.sig) and so is the whole bundle
(`bundle.sig`, over every file), for `cmunext-check --trusted-key` (artifacts/signing.py).
`cmunext-check BUNDLE` (cmunext_edge.device.check) verifies all of it on the device.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import random
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cmunext_edge._version import __version__
from cmunext_edge.artifacts.kinds import companion_problem, kind_of
from cmunext_edge.artifacts.manifest import calibration_files, entry_hashes, manifest_entry
from cmunext_edge.artifacts.meta import AGREEMENT_THRESHOLDS
from cmunext_edge.core.agreement import GATES, held_out_finding, min_images
from cmunext_edge.device.bundle_truth import copy_truth, spec_input, truth_scores
from cmunext_edge.data.discovery import discover, seeded_sample
from cmunext_edge.data.model_split import model_split, training_images
from cmunext_edge.fileio import (loads_json, clear_stale_staging, hash_mismatches, missing_folders, new_staging, not_a_file,
                                 remove_empty, require_file, sha256_file, writable_folder_problem)
from cmunext_edge.data.groundtruth import classes_check, classes_note, load_truth
from cmunext_edge.core.preprocess import ImageReadError, naming
from cmunext_edge.resources import HELDOUT_DIR, SAMPLES_DIR, shipped_model_name
from cmunext_edge.device.wheel import write_core_wheel

FORMAT = "cmunext-edge device bundle"
VERSION = 1
MANIFEST = "bundle.json"
MANIFEST_HASH = "bundle.json.sha256"
SIGNATURE = "bundle.sig"
REFERENCE = "verify/reference.npz"
MAX_DICE_DROP = 0.02      # Dice (vs ground truth) on the device may be at most this far below the host's
# python module a backend needs -> the distribution that pins it in requirements.txt
RUNTIME_DISTS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
                 "tensorrt": ("tensorrt", "tensorrt-cu12")}
CORE_DISTS = ("numpy", "opencv-python-headless")
SIGN_DISTS = ("model-signing", "pyopenssl")     # the device's verifier (the `sign` extra)


class BundleError(RuntimeError):
    """A bundle that cannot be written, or one that is damaged, tampered with or inconsistent."""


@dataclass
class BundleResult:
    folder: Path
    archive: Path | None
    manifest: dict


def artifact_files(artifact: Path) -> list[Path]:
    """The artifact's files (companions first, entry file last), from manifest.json or by its kind
    (called once verified load has checked that entry: every name in it a file beside the artifact)."""
    entry = manifest_entry(artifact)
    if entry:
        files = [artifact.parent / name for name in entry_hashes(entry)[0]]
        sig = artifact.with_name(artifact.name + ".sig")       # signed later (cmunext-keys sign)
        files += [sig] if sig.is_file() and sig not in files else []
        return [f for f in files if f.name != artifact.name] + [artifact]
    problem = companion_problem(artifact)
    if problem:
        raise BundleError(problem)
    kind = kind_of(artifact)
    return (kind.companion_files(artifact) if kind else []) + [artifact]


def _version(dists) -> tuple[str, str] | None:
    for dist in dists:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def requirements(runtime_module: str, signed: bool = False) -> list[str]:
    """Pinned lines for numpy, OpenCV and the one runtime the artifact needs, as on this host
    (and the signature verifier for a signed bundle)."""
    pins = [_version((d,)) for d in CORE_DISTS] + [_version(RUNTIME_DISTS.get(runtime_module, (runtime_module,)))]
    pins += [_version((d,)) for d in SIGN_DISTS] if signed else []
    return [f"{d}=={v}" for d, v in (p for p in pins if p)]


def default_images(source_sha256: str | None):
    """The verification images of a bundle without --images: a shipped model's held-out
    validation images; any other model has no default (BundleError: --images is required)."""
    if source_sha256 and shipped_model_name(source_sha256):
        return HELDOUT_DIR if HELDOUT_DIR.is_dir() else SAMPLES_DIR
    raise BundleError("this artifact was not exported from a shipped model, so the bundled BUSI "
                      "breast-ultrasound images are not its domain: give --images with held-out images "
                      "of the model's own data (official layout: images/, masks/0/)")


def _pick_samples(images, n: int, num_classes: int = 1, calibration=(), split=None) -> tuple[list, dict]:
    """(the candidates in the order they are tried, what the pool left out and why): `n` seeded
    images with masks of `images` first, then the rest of the pool in seeded order (a replacement for
    each image found unusable). Never an image that calibrated the artifact (`calibration`: file
    names) or trained its model (`split`: the model's split.json, by name and by pixel fingerprint)
    when others are there; if none are, the overlap is counted (and cmunext-check does not call the
    artifact verified): _used() counts it on the images actually used."""
    found = discover(images)
    samples = [s for s in found if s.mask is not None]
    if not samples:
        raise BundleError(f"{images}: verification images need ground-truth masks "
                          "(official layout images/ and masks/0/)")
    calib = {s.name for s in samples if s.image.name in set(calibration)}
    trained = training_images(samples, split)
    pool = [s for s in samples if s.name not in calib | trained] or samples
    where = f"{images or SAMPLES_DIR} (--images)"
    problem = classes_check(pool, num_classes, where, "verification ground truth")
    if problem:
        raise BundleError(problem)
    picked = seeded_sample(pool, n, 0)
    names = {s.name for s in picked}
    spare = sorted((s for s in pool if s.name not in names), key=lambda s: s.name)
    random.Random(1).shuffle(spare)
    note = classes_note(pool, num_classes, where)      # the data holds more classes than the model
    return picked + spare, {"without_mask_not_used": len(found) - len(samples), "calib": calib, "trained": trained,
                            "training_list": str(split) if split else None,
                            **({"classes_note": note} if note else {})}


def _used(pool: dict, rows: list[dict], skipped: list[dict]) -> dict:
    """bundle.json `images` counts for the images the references were made of (`rows`)."""
    names = {r["name"] for r in rows}
    calib, trained = pool["calib"], pool["trained"]
    return {"without_mask_not_used": pool["without_mask_not_used"],
            "calibration_not_used": len(calib - names), "training_not_used": len(trained - names),
            "calibration_overlap": len(calib & names), "training_overlap": len(trained & names),
            "training_list": pool["training_list"], **({"unusable_skipped": skipped} if skipped else {}),
            **({"classes_note": pool["classes_note"]} if "classes_note" in pool else {})}


def held_out_of(images: dict) -> tuple[str, str] | None:
    """core.agreement.held_out_finding for a bundle's verification images (bundle.json `images`):
    some trained the model or calibrated the artifact (no other images were there), or the model's
    training images were not known when it was bundled ("training_list": null; a bundle made
    before that key existed is not judged)."""
    return held_out_finding(images.get("n") or 0, images.get("training_overlap") or 0,
                            images.get("calibration_overlap") or 0,
                            images.get("training_list", "") is not None, images.get("training_list"))


def _model_split(artifact: Path, meta: dict) -> Path | None:
    """The split.json of the artifact's model: the one its export recorded (source.split, or
    verification.data.training_list), else a shipped model's; None when unknown."""
    entry = manifest_entry(artifact) or {}
    recorded = [(entry.get("source") or {}).get("split"),
                ((entry.get("verification") or {}).get("data") or {}).get("training_list")]
    found = [Path(r) for r in recorded if isinstance(r, str) and r and Path(r).is_file()]
    return found[0] if found else model_split(None, meta.get("source_sha256"))


def _reference(backend, candidates, n: int, folder: Path) -> tuple[list[dict], list[dict]]:
    """(reference rows, unusable images skipped): copy images and ground truth of the first `n`
    usable `candidates`, run the host artifact on them, save logits; per-image host figures
    (official Dice over all classes; each class's too for several). An unreadable image or ground
    truth is skipped, named with its reason, and the next candidate takes its place; BundleError
    when none is usable."""
    (folder / "verify" / "images").mkdir(parents=True)
    classes = int(backend.num_classes or 1)
    logits, inputs, rows, skipped = [], [], [], []
    for s in candidates:
        if len(rows) == n:
            break
        try:
            out, x, row = _one_reference(backend, s, folder, classes)
        except BundleError as exc:
            skipped.append({"name": s.name, "reason": str(exc)})
            continue
        logits.append(out)
        inputs.append(x)
        rows.append(row)
    if not rows:
        more = f" (and {len(skipped) - 1} more unusable)" if len(skipped) > 1 else ""
        raise BundleError(f"{skipped[0]['reason']}{more}")
    # the host's input tensors too: the device runs them to judge its runtime apart from its
    # preprocessing (OpenCV's resize differs by a grey level between x86 and ARM builds)
    np.savez_compressed(folder / REFERENCE, logits=np.stack(logits).astype(np.float32),
                        inputs=np.stack(inputs).astype(np.float32))
    return rows, skipped


def _one_reference(backend, s, folder: Path, classes: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(host logits, input tensor, row) of one verification image; BundleError naming the user's
    file when the image or its ground truth is unusable (its copy is removed again)."""
    img_rel = f"verify/images/{s.name}{s.image.suffix.lower()}"
    shutil.copyfile(s.image, folder / img_rel)
    try:            # the copy is read (what the device gets); an error names the user's file, not the copy
        try:
            x = spec_input(backend.spec, folder / img_rel)
        except ImageReadError as exc:
            raise BundleError(f"verification image unusable: "
                              f"{naming(s.image, str(exc).replace(str(folder / img_rel), str(s.image)))}") from None
        try:
            target = load_truth(s, classes, backend.spec.size)   # read from the user's files: errors name them
            row = {"name": s.name, "image": img_rel, **copy_truth(s, folder, classes)}
        except (ImageReadError, ValueError) as exc:
            raise BundleError(f"verification ground truth unusable: {exc}") from None
    except BundleError:
        (folder / img_rel).unlink(missing_ok=True)
        raise
    out = backend.infer(x)[0]
    host = truth_scores(out, target)
    row["host_dice"] = round(host["dice"], 6)
    if "class_dice" in host:
        row["host_class_dice"] = [round(d, 6) for d in host["class_dice"]]
    return out, x[0], row


def host_description() -> dict:
    """What the export host is: platform, CPU capabilities when that module is present."""
    info = {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "processor": platform.processor() or None}
    try:
        from cmunext_edge import capabilities
        info["capabilities"] = capabilities.detect().as_dict()
    except Exception:      # absent in older toolkits; the report stays useful without it
        pass
    return info


def file_table(folder: Path) -> dict:
    """relative path -> {sha256, bytes} of every file in the bundle except the manifest pair."""
    out = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel not in (MANIFEST, MANIFEST_HASH, SIGNATURE):
            out[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    return out


def _readme(manifest: dict) -> str:
    art, req = manifest["artifact"], manifest["requirements"]
    return f"""# cmunext-edge device bundle: {Path(art).name}

Artifact: `{art}` ({manifest['backend']}, {manifest['precision']}), made on {manifest['host']['machine']}
with cmunext-edge {manifest['toolkit_version']}. Runtime requirements (no torch): {', '.join(req)}.

On the device, from inside this folder:

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt {manifest['wheel']}
    .venv/bin/cmunext-check .            # add --device GPU/NPU/cuda where the runtime offers it
{"    .venv/bin/cmunext-check . --trusted-key RELEASE.pub.pem   # signed bundle: refuse anything else" + chr(10) if manifest.get("signed") else ""}
`cmunext-check` verifies the sha256 of every file listed in bundle.json, that the preprocessing
contract (preprocess.json) is the one embedded in the artifact, runs the artifact's self-test,
runs the export host's input tensors of verify/images (verify/reference.npz) and compares the
outputs with the host's (mask Dice agreement, max logit delta), then preprocesses the images on
the device and compares again and with the ground-truth masks (Dice), times a short benchmark and
writes device_report.json. It also checks that the installed packages are the ones sbom.cdx.json
(CycloneDX) lists. Exit code 0 only when all of it holds; 1 with one line naming the
first failure otherwise. Merge reports of several devices with `cmunext-compare REPORT...`.
Under emulation (QEMU) the times are not speeds.
"""


def make_bundle(artifact, out=None, *, images=None, n_images: int | None = None, device: str = "cpu",
                archive: bool = True, sign_key=None) -> BundleResult:
    """Write `<out>/<artifact stem>.bundle/` (+ `.tar.gz`) for `artifact`; see the module docstring.

    `n_images` None: as many as the precision's tail claim needs (core.agreement.min_images, 49),
    or all the images there are when fewer (the device report then states the weaker claim).
    Without `images`, only a shipped model's artifact has default images (its held-out ones)."""
    from cmunext_edge.artifacts.signing import check_signing_key
    from cmunext_edge.runtime.registry import entry_for_path
    artifact = Path(artifact)
    try:
        require_file(artifact)
    except FileNotFoundError as exc:
        raise BundleError(f"{exc} (give the exported .onnx, .xml or .engine)") from None
    check_signing_key(sign_key)
    entry = entry_for_path(artifact)
    out = Path(out) if out else artifact.parent
    final = out / f"{artifact.stem}.bundle"
    problem = (writable_folder_problem(out, "--out")
               or _not_replaceable(final, final.with_name(final.name + ".tar.gz"), artifact.name))
    if problem:
        raise BundleError(problem)
    made = missing_folders(out)                                   # made here: removed again on failure
    out.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(out)
    staging = new_staging(out, final.name)
    done = False
    try:
        work = staging / final.name
        (work / "artifact").mkdir(parents=True)
        manifest = _fill(work, artifact, entry, images, n_images, device, sign_key)
        tar = _archive(work) if archive else None
        _publish(work, tar, final, staging)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            remove_empty(made)
    return BundleResult(final, final.with_name(final.name + ".tar.gz") if archive else None, manifest)


def _not_replaceable(final: Path, final_tar: Path, artifact_name: str) -> str | None:
    """Why the bundle's folder or archive name is taken by something a bundle must not replace (a
    file, a folder that is not a bundle, a bundle of another artifact, e.g. m.onnx's where m.xml is
    bundled; a folder or special file at the archive's name), else None: checked before any work."""
    if final.exists() and not (final.is_dir() and (final / MANIFEST).is_file()):
        return f"{final} exists and is not a bundle (no {MANIFEST} in it): not replaced; move it or choose another --out"
    if final.is_dir():
        try:
            there = Path(_read_manifest(final)["artifact"]).name
        except (BundleError, OSError, KeyError, TypeError):
            there = None
        if there != artifact_name:
            return (f"{final} holds a bundle of {there or 'an unreadable bundle.json'}, not of {artifact_name}: "
                    f"not replaced; move it or choose another --out")
    if final_tar.exists() and not final_tar.is_file():
        return f"{final_tar} exists and is not a file: not replaced; move it or choose another --out"
    return None


def _publish(work: Path, tar: Path | None, final: Path, staging: Path) -> None:
    """Move the finished bundle folder (and archive) into place. What was there under those names
    (the previous bundle; with --no-archive, its archive, which would no longer match) goes into
    `staging` only now; if any move fails, every move is undone: a failed run leaves it all as it was."""
    final_tar = final.with_name(final.name + ".tar.gz")
    undo = []                                            # (path now, where it goes back; None: remove)
    try:
        for new, dest in ((work, final), (tar, final_tar)):
            if dest.exists() or dest.is_symlink():
                kept = staging / f"previous-{dest.name}"
                dest.rename(kept)
                undo.append((kept, dest))
            if new is not None:
                new.rename(dest)
                undo.append((dest, None))
    except BaseException:
        for now, back in reversed(undo):
            if back is not None:
                now.rename(back)
            elif now.is_dir():
                shutil.rmtree(now, ignore_errors=True)
            else:
                now.unlink(missing_ok=True)
        raise


def _fill(folder: Path, artifact: Path, entry, images, n_images: int | None, device: str, sign_key) -> dict:
    """Copy, run, pin, describe and (with `sign_key`) sign everything in the bundle -> its manifest."""
    from cmunext_edge.artifacts.signing import sign_artifact, sign_files
    from cmunext_edge.device.sbom import SBOM, write_requirements, write_sbom
    from cmunext_edge.runtime.registry import open_backend
    with open_backend(artifact, device=device) as backend:      # verified before any file is copied
        copied = [Path(shutil.copyfile(f, folder / "artifact" / f.name)) for f in artifact_files(artifact)]
        meta = backend.metadata
        if "spec" not in meta or not meta.get("selftest"):
            raise BundleError(f"{artifact}: not an exported artifact (no embedded preprocessing "
                              "contract or self-test); export it with cmunext-export first")
        precision = meta.get("precision", "fp32")
        images = images or default_images(meta.get("source_sha256"))
        n = n_images or min_images(precision if precision in GATES else "int8")
        calib = calibration_files(artifact)
        candidates, pool = _pick_samples(images, n, int(backend.num_classes or 1), calib, _model_split(artifact, meta))
        refs, skipped = _reference(backend, candidates, n, folder)
        used = _used(pool, refs, skipped)
        ran = backend.describe()
    (folder / "preprocess.json").write_text(json.dumps(json.loads(meta["spec"].to_json()), indent=2) + "\n")
    (folder / "selftest.json").write_text(json.dumps(meta["selftest"], indent=2, sort_keys=True) + "\n")
    reqs = requirements(entry.requires, signed=bool(sign_key))
    wheel = write_core_wheel(folder / "wheels")
    model = {"name": artifact.name, "backend": entry.name, "precision": precision,
             "sha256": sha256_file(artifact), "source_sha256": meta.get("source_sha256"),
             "files": {f.name: sha256_file(f) for f in copied if not f.name.endswith(".sig")}}
    write_sbom(folder, write_requirements(folder, reqs), wheel, model)
    if sign_key:
        sign_artifact(folder / "artifact" / artifact.name, sign_key)
    manifest = {"format": FORMAT, "version": VERSION, "toolkit_version": __version__,
                "artifact": f"artifact/{artifact.name}", "backend": entry.name, "precision": precision,
                "requirements": reqs, "wheel": wheel.relative_to(folder).as_posix(), "references": refs,
                "sbom": SBOM, "signed": bool(sign_key),
                "thresholds": {"min_agreement": AGREEMENT_THRESHOLDS.get(precision, 0.97),
                               "max_dice_drop": MAX_DICE_DROP},
                "images": {"source": str(images), "n": len(refs), "artifact_calibration_images": len(calib), **used},
                "host": {**host_description(), "ran": ran}}
    (folder / "README.md").write_text(_readme(manifest))
    manifest["files"] = file_table(folder)
    write_manifest(folder, manifest)
    if sign_key:
        sign_files(folder, [f for f in folder.rglob("*") if f.is_file()], sign_key, folder / SIGNATURE)
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (folder / MANIFEST).write_text(text)
    (folder / MANIFEST_HASH).write_text(f"{hashlib.sha256(text.encode()).hexdigest()}  {MANIFEST}\n")


def _archive(folder: Path) -> Path:
    tar = folder.with_name(folder.name + ".tar.gz")
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return tar


def read_bundle(folder, whole: bool = True) -> tuple[Path, dict]:
    """(folder, manifest) of a bundle folder or .tar.gz; BundleError if unreadable. An archive is
    checked member by member before anything is extracted, extracted into a new staging folder
    whose manifest is read there, then takes a name beside the archive that did not exist
    (NAME.bundle, else NAME.bundle-2, ...): a refused or damaged archive leaves nothing, and no
    file already there is ever replaced."""
    folder = Path(folder)
    problem = _not_a_bundle_path(folder)
    if problem:
        raise BundleError(problem)
    if is_archive(folder):
        staging, inner, manifest = stage_archive(folder, whole)
        try:
            return publish(inner, folder.parent), manifest
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder, _read_manifest(folder, whole)


def _not_a_bundle_path(path: Path) -> str | None:
    """Why `path` cannot be a bundle folder or archive, naming what it is instead (and, for a file
    of a bundle or an artifact, what to give); None for a folder or a .tar.gz file."""
    if path.is_dir() or is_archive(path):
        return None
    if not path.is_file():
        return f"{path}: {not_a_file(path) or 'no such bundle folder or .tar.gz'}"
    kind = kind_of(path)
    hint = (f"; it is a bundle's {MANIFEST}: cmunext-check {path.parent} checks that bundle" if path.name == MANIFEST
            else f"; it is an exported artifact: cmunext-bundle {path} makes its bundle" if kind and kind.exported
            else "")
    return f"{path}: a file, not a bundle folder or .tar.gz{hint}"


def _read_manifest(folder: Path, whole: bool = True) -> dict:
    """bundle.json of `folder`, its format and its file table checked; with `whole`, every field the
    check reads (a trust policy checks the rest after the signature: manifest_shape_problem)."""
    path = folder / MANIFEST
    if not path.is_file():
        what = not_a_file(path)
        raise BundleError(f"{folder}: not a bundle ({f'its {MANIFEST} is {what}' if what else f'no {MANIFEST}'})")
    try:
        manifest = loads_json(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a cmunext-edge device bundle")
    problem = manifest_shape_problem(manifest, whole)
    if problem:
        raise BundleError(f"{path}: damaged or edited: {problem}; re-make the bundle with cmunext-bundle")
    return manifest


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _row_problem(row) -> str | None:
    """What is wrong with one `references` row's shape (None: the keys the check reads, typed)."""
    if not isinstance(row, dict):
        return f"a references row is {type(row).__name__}, not an object"
    truth = [k for k in ("mask", "masks", "labels") if k in row]
    paths = [row.get("image")] + ([row.get(truth[0])] if truth else [])
    paths = [p for item in paths for p in (item if isinstance(item, list) and item else [item])]
    if not isinstance(row.get("name"), str) or not truth or not all(isinstance(p, str) for p in paths):
        return f"references row {row.get('name')!r} lacks a name, an image or its ground truth path"
    if not _is_number(row.get("host_dice")):
        return f"references row {row['name']!r}: host_dice {row.get('host_dice')!r} is not a number"
    return None


def manifest_shape_problem(manifest: dict, whole: bool = True) -> str | None:
    """The first field of a bundle.json (already its format) whose type is not what cmunext-bundle
    writes, named (None: every field the check reads is there and typed): a hand-edited, re-hashed
    bundle.json is one line naming the field, never a TypeError from deep inside a check."""
    files, refs, thr = manifest.get("files"), manifest.get("references"), manifest.get("thresholds")
    if not (isinstance(files, dict) and all(isinstance(v, dict) and isinstance(v.get("sha256"), str)
                                            for v in files.values())):
        return "'files' is not a table of files with their sha256"
    if not whole:                     # the file table is what a signature check needs
        return None
    if not (isinstance(refs, list) and refs):
        return "'references' is not a list of verification images"
    row = next((why for why in map(_row_problem, refs) if why), None)
    if row:
        return row
    if not (isinstance(thr, dict) and all(_is_number(thr.get(k)) for k in ("min_agreement", "max_dice_drop"))):
        return "'thresholds' lacks a numeric min_agreement and max_dice_drop"
    odd = [f"{k!r} is not a {'string' if kind is str else 'JSON object'}"      # "artifact": verify_files judges it
           for k, kind in (("backend", str), ("precision", str), ("images", dict), ("host", dict))
           if manifest.get(k) is not None and not isinstance(manifest[k], kind)]
    return odd[0] if odd else None


def _archive_folder(tar: Path, members) -> str:
    """The one folder a bundle archive holds; BundleError for anything else in it (absolute or '..'
    names, links, devices), before a byte is extracted."""
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not parts:
            raise BundleError(f"{tar}: not a bundle archive: member {m.name!r} points outside its folder")
        if not (m.isfile() or m.isdir()):
            raise BundleError(f"{tar}: not a bundle archive: member {m.name!r} is a link or special file "
                              "(bundles hold plain files only)")
    tops = {Path(m.name).parts[0] for m in members}
    if len(tops) != 1:
        raise BundleError(f"{tar}: a bundle archive holds exactly one folder, this one holds {len(tops)} entries")
    return tops.pop()


def is_archive(bundle) -> bool:
    return Path(bundle).is_file() and Path(bundle).name.endswith(".tar.gz")


def stage_archive(tar: Path, whole: bool = True) -> tuple[Path, Path, dict]:
    """(staging folder, the bundle folder in it, its manifest) of a bundle archive: every member
    vetted before a byte is extracted (bundle._archive_folder: no absolute or '..' names, no links),
    then extracted into a staging folder made new beside the archive. Nothing outside the staging
    folder is written; BundleError (staging removed) when the archive is not a readable bundle."""
    import tempfile
    import zlib
    try:
        with tarfile.open(tar, "r:gz") as tf:
            members = tf.getmembers()
            top = _archive_folder(tar, members)
            staging = Path(tempfile.mkdtemp(prefix=f".{top}.checking-", dir=tar.parent))
            try:
                tf.extractall(staging, filter="data")
                try:
                    manifest = _read_manifest(staging / top, whole)
                except BundleError as exc:      # named as the archive's, not the staging folder's
                    raise BundleError(f"{tar}: {str(exc).split(': ', 1)[-1]}") from None
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise BundleError(f"{tar}: not a readable bundle archive (damaged, truncated or not a .tar.gz: "
                          f"{exc or type(exc).__name__})") from None
    return staging, staging / top, manifest


def publish(folder: Path, parent: Path) -> Path:
    """Move the checked bundle folder `folder` to `parent`/<its name>, or <its name>-2, -3, ... when
    that exists: a name that did not exist, so no file already there is ever replaced."""
    for n in range(1, 1000):
        target = parent / (folder.name if n == 1 else f"{folder.name}-{n}")
        try:
            target.mkdir()          # claims the name (fails on any file, folder or link there)
        except FileExistsError:
            continue
        try:
            folder.rename(target)   # onto the empty folder just made
        except OSError:
            target.rmdir()
            raise
        return target
    raise BundleError(f"{parent}: no free name for the extracted bundle {folder.name} (999 taken)")


def verify_files(folder: Path, manifest: dict) -> list[str]:
    """Problems with the bundle's files (empty list: every sha256 matches, nothing missing or added)."""
    problems = []
    hash_file = folder / MANIFEST_HASH
    got = sha256_file(folder / MANIFEST)
    want = (hash_file.read_bytes().split() or [b""])[0].decode(errors="replace") if hash_file.is_file() else None
    if want != got:
        problems.append(f"{MANIFEST} was modified (sha256 {got[:12]}, {MANIFEST_HASH} says "
                        f"{(want or 'nothing')[:12]})")
    listed = manifest.get("files", {})
    problems += [f"{rel} points outside the bundle" for rel in listed if not _inside(rel)]
    art = manifest.get("artifact")
    if not (isinstance(art, str) and art.startswith("artifact/") and _inside(art) and art in listed):
        problems.append(f"{MANIFEST} names the artifact {art!r}, which is not one of the bundle's own "
                        f"artifact/ files it lists")
    expected = {rel: info["sha256"] for rel, info in sorted(listed.items()) if _inside(rel)}
    problems += [f"{rel} is {not_a_file(folder / rel) or 'missing'}" if digest is None else
                 f"{rel} sha256 mismatch (expected {want[:12]}, got {digest[:12]})"
                 for rel, digest, want in hash_mismatches(folder, expected)]
    extra = [rel for rel in file_table(folder) if rel not in listed and not _is_device_output(rel)]
    problems += [f"{rel} is not part of the bundle" for rel in extra if rel.startswith("artifact/")]
    return problems


def _inside(rel) -> bool:
    """A bundle-relative path that stays inside the bundle (no absolute path, no '..')."""
    path = PurePosixPath(str(rel))
    return bool(path.parts) and not path.is_absolute() and ".." not in path.parts and "\\" not in str(rel)


def _is_device_output(rel: str) -> bool:
    return rel == "device_report.json" or rel.startswith(".venv/")
