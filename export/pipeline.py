"""export(): checkpoint -> verified artifact, written atomically, with manifest.json.

Every target builds inside a hidden staging folder beside the output, the artifact is then
loaded through its runtime backend and verified against PyTorch FP32 on real images, its
self-test digest is embedded, and only then are its files moved into place (the entry file
last) and the manifest updated. Any failure or interruption removes the staging folder and
whatever was already moved: no partial artifact is ever left behind.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._deps import EXTRAS, MissingDependencyError, available
from ..artifact_meta import PREFIX, build_metadata, check_selftest, make_selftest, selftest_input
from ..resources import resolve_weights
from ..runtime.registry import open_backend
from ..runtime.tensorrt_backend import INSTALL_HINT
from ..weights import load_checkpoint
from .calibration import make_calibration_set
from .manifest import file_entries, toolchain_versions, write_manifest
from .onnx_export import prepare_model
from .targets import BuildContext, check_request, get_target
from .verify import VerificationError, format_figures, reference_logits, verify_backend


@dataclass
class ExportResult:
    artifact: Path
    files: list[Path]
    manifest: Path
    target: str
    precision: str
    verification: dict | None
    selftest: dict
    next_commands: list[str] = field(default_factory=list)


def _check_dependencies(target, precision: str) -> None:
    needed = list(target.requires) + (["nncf"] if target.name == "openvino" and precision == "int8" else [])
    for module in needed:
        if not available(module):
            if module == "tensorrt":
                raise MissingDependencyError(INSTALL_HINT)
            raise MissingDependencyError(f"target {target.name} needs {module}; install it with: "
                                         f"pip install \"cmunext-edge[{EXTRAS.get(module, target.extra)}]\"")


def _stem(weights: Path, precision: str, imgsz: int, default_size: int, batch: int, dynamic: bool) -> str:
    stem = f"{weights.stem}_{precision}"
    if imgsz != default_size:
        stem += f"_{imgsz}"
    return stem + ("_dynamic" if dynamic else f"_b{batch}" if batch > 1 else "")


def _publish(files: list[Path], out_dir: Path) -> list[Path]:
    """Move staged files into out_dir in order (entry file last); undo on failure."""
    moved = []
    try:
        for f in files:
            final = out_dir / f.name
            os.replace(f, final)
            moved.append(final)
    except BaseException:
        for f in moved:
            f.unlink(missing_ok=True)
        raise
    return moved


def export(weights, target: str = "onnx", precision: str | None = None, *, out="exports",
           calib=None, calib_size: int = 64, imgsz: int | None = None, batch: int = 1,
           dynamic: bool = False, opset: int | None = None, verify: bool = True, verify_data=None,
           verify_size: int | None = None, seed: int = 0, device: str | None = None,
           workspace: float | None = None, dla_core: int | None = None, int8_mode: str | None = None,
           calibrator: str | None = None, calibrate_method: str | None = None, nncf: dict | None = None,
           ort_quant: dict | None = None, graph: dict | None = None, runtime: dict | None = None,
           name: str | None = None, log=None) -> ExportResult:
    """Export `weights` to `target` at `precision`; see `cmunext-export --help` for the options.

    `nncf`: NNCF overrides for OpenVINO INT8 ({model_type, preset, fast_bias_correction,
    subset_size}); `calibrate_method`: minmax/entropy/percentile for ONNX Runtime INT8;
    `int8_mode`: qdq or calibrator and `calibrator`: entropy or minmax for TensorRT INT8.
    `ort_quant`: ONNX Runtime quantization overrides (see ort_quant.ORT_DEFAULTS); `graph`: exact
    rewrites before tracing (onnx_export.GRAPH_OPTIONS: fold_bn, dense_groups); `runtime`: settings
    stored in the artifact that its backend applies by default (e.g. {"inference_precision": "bf16",
    "threads": 2, "hint": "latency"} for OpenVINO, {"threads": 2} for ONNX Runtime).
    Raises VerificationError when the artifact disagrees with PyTorch (nothing is written).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    started = time.perf_counter()
    tgt = get_target(target)
    precision = check_request(tgt, precision, {
        "calib": calib, "dynamic": dynamic, "batch": batch if batch != 1 else None, "opset": opset,
        "workspace": workspace, "dla_core": dla_core, "int8_mode": int8_mode or calibrator, "nncf": nncf,
        "calibrate_method": calibrate_method, "ort_quant": ort_quant})
    _check_dependencies(tgt, precision)
    weights, out_dir = resolve_weights(weights), Path(out)
    ckpt = load_checkpoint(weights)
    spec = ckpt.spec.with_size(imgsz) if imgsz else ckpt.spec
    calib_set = None
    if precision == "int8" or (verify and verify_data is None):
        calib_set = make_calibration_set(calib, spec, calib_size, seed)
        log(f"calibration set: {len(calib_set)} images from {calib_set.source} (sha256 {calib_set.sha256[:12]})")
    verify_set = (make_calibration_set(verify_data, spec, verify_size or calib_size, seed)
                  if verify and verify_data is not None else calib_set)
    model = ckpt.build()                         # the reference: verification compares against it
    built = prepare_model(model, graph)          # what gets traced (exact rewrites only)
    meta = build_metadata(spec=spec, variant=ckpt.info.variant, in_channels=ckpt.info.in_channels,
                          num_classes=ckpt.info.num_classes, source_sha256=ckpt.sha256,
                          precision=precision, target=tgt.name)
    if runtime:
        meta[PREFIX + "runtime"] = json.dumps({k: v for k, v in runtime.items() if v is not None}, sort_keys=True)
    if any((graph or {}).values()):
        meta[PREFIX + "graph"] = json.dumps(sorted(k for k, v in graph.items() if v))
    stem = name or _stem(weights, precision, spec.height, ckpt.spec.height, batch, dynamic)
    device = device or ("cuda" if tgt.name == "tensorrt" else "cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".staging", dir=out_dir))
    try:
        ctx = BuildContext(built, spec, ckpt.info.in_channels, precision, staging, stem, meta, calib_set,
                           batch, dynamic, opset or 17,
                           {"workspace": workspace, "dla_core": dla_core, "int8_mode": int8_mode,
                            "calibrator": calibrator, "calibrate_method": calibrate_method, "nncf": nncf,
                            "ort_quant": ort_quant, "cache_dir": out_dir})
        log(f"building {tgt.name} {precision} ...")
        files = tgt.load_builder()(ctx)
        entry = files[-1]
        figures = None
        with open_backend(entry, device=device) as backend:
            if verify:
                log(f"verifying against PyTorch FP32 on {len(verify_set)} images ...")
                figures = verify_backend(backend, verify_set.inputs, reference_logits(model, verify_set.inputs),
                                         verify_set.masks, precision)
                figures["source"] = verify_set.manifest()
                figures["runtime"]["artifact"] = entry.name      # not the staging path
                log("verification: " + format_figures(figures))
                if not figures["passed"]:
                    raise VerificationError(
                        f"{tgt.name} {precision} artifact disagrees with PyTorch FP32: mask Dice agreement "
                        f"{figures['mask_dice_agreement']:.4f} < {figures['required_agreement']}; nothing was "
                        f"written (use --no-verify to keep it anyway)", figures)
            selftest = make_selftest(spec, backend.infer(selftest_input(spec)), precision)
        embed = importlib.import_module(tgt.builder.split(":")[0]).embed
        embed(entry, {**meta, "cmunext_edge.selftest": json.dumps(selftest, sort_keys=True)})
        with open_backend(entry, device=device) as backend:   # the embedded self-test must pass here
            check = check_selftest(backend.metadata.get("selftest"), spec, backend.infer)
            check.device, check.precision = backend.device, backend.precision
        if not check.passed:
            raise RuntimeError(f"embedded self-test does not reproduce on the export host: {check.message}")
        manifest_entry = {
            "target": tgt.name, "precision": precision, "files": file_entries(files),
            "source": {"path": str(weights), "sha256": ckpt.sha256, "variant": ckpt.info.variant},
            "input_shape": [None if dynamic else batch, ckpt.info.in_channels, spec.height, spec.width],
            "preprocess": spec.to_json(), "toolchain": toolchain_versions(),
            "graph": sorted(k for k, v in (graph or {}).items() if v), "runtime": runtime or {},
            "calibration": calib_set.manifest() if (calib_set and precision == "int8") else None,
            "verification": figures, "selftest": check.as_dict(),
            "export_seconds": round(time.perf_counter() - started, 1)}
        published = _publish(files, out_dir)
        try:
            manifest = write_manifest(out_dir, entry.name, manifest_entry)
        except BaseException:
            for f in published:
                f.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    artifact = out_dir / entry.name
    return ExportResult(artifact, published, manifest, tgt.name, precision, figures, selftest,
                        next_commands(artifact, device))


def next_commands(artifact: Path, device: str) -> list[str]:
    dev = "" if device == "cpu" else f" --device {device}"
    return [f"cmunext-predict path/to/images --weights {artifact} --out predictions{dev}",
            f"cmunext-bench {artifact}{dev}",
            f"python -c \"from cmunext_edge.segmenter import EdgeSegmenter; "
            f"print(EdgeSegmenter.from_artifact('{artifact}'{', device=' + repr(device) if dev else ''}).self_test())\""]
