"""What an exported artifact is, read from its files without running it and without torch.

ONNX: `metadata_props` (through `onnx`, else ONNX Runtime's model metadata); OpenVINO IR: the
`rt_info/model_info` block and Parameter shapes of the .xml, parsed as XML (no OpenVINO needed);
TensorRT: the sidecar `<engine>.json`. The export's verification comes from manifest.json beside
the artifact, when there is one. One table (READERS) maps artifact kinds (artifacts/kinds.py) to
readers.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from cmunext_edge._deps import MissingDependencyError, available, require
from cmunext_edge.artifacts.kinds import ARTIFACT_SUFFIXES, companion_problem, kind_of, sidecar_entry
from cmunext_edge.artifacts.manifest import manifest_lookup, no_entry_reason
from cmunext_edge.artifacts.meta import MetadataError, parse_metadata
from cmunext_edge.core.metrics import format_class_dice
from cmunext_edge.fileio import require_file, sha256_file, loads_json


def _onnx(path: Path) -> tuple[dict, list]:
    if available("onnx"):
        model = require("onnx").load(str(path), load_external_data=False)
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
        return {p.key: p.value for p in model.metadata_props}, dims[0] if dims else []
    if not available("onnxruntime"):
        raise MissingDependencyError('reading an .onnx artifact needs onnxruntime (or onnx); install it '
                                     'with: pip install "cmunext-edge[onnxruntime]"')
    ort = require("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map), list(sess.get_inputs()[0].shape)


def _openvino_ir(path: Path) -> tuple[dict, list]:
    root = ET.parse(path).getroot()
    info = root.find("rt_info/model_info")
    meta = {el.tag: el.get("value", "") for el in (info if info is not None else [])}
    shape = []
    for layer in root.iter("layer"):
        if layer.get("type") == "Parameter":
            data = layer.find("data")
            raw = (data.get("shape", "") if data is not None else "").split(",")
            shape = [int(v) if v.strip().lstrip("-").isdigit() and int(v) >= 0 else "?" for v in raw if v.strip()]
            break
    return meta, shape


def _tensorrt(path: Path) -> tuple[dict, list]:
    problem = companion_problem(path)
    if problem:
        raise FileNotFoundError(problem)
    data = loads_json(kind_of(path).companion_files(path)[0].read_text())
    return {**(data.get("metadata") or {}), "_tensorrt_version": data.get("tensorrt_version", ""),
            "_gpu": data.get("name") or data.get("gpu", "")}, data.get("shapes") or []


# artifact kind name -> reader of (flat metadata, input shape)
READERS = {"onnx": _onnx, "openvino": _openvino_ir, "tensorrt": _tensorrt}


def is_artifact(path: str | Path) -> bool:
    """An exported artifact's entry file, or a companion naming it (m.engine.json)."""
    return sidecar_entry(path).suffix.lower() in ARTIFACT_SUFFIXES


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"


def describe_artifact(path: str | Path) -> dict:
    """Format, metadata (variant, classes, precision, preprocessing, runtime settings), input shape,
    files and the export's verification of an exported artifact."""
    path = sidecar_entry(Path(path))
    art = kind_of(path)
    kind, files = art.label, art.files(path)
    if not (art.name == "tensorrt" and files[1].is_file()):     # an engine is described from its sidecar
        require_file(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: an empty file (0 bytes), not a readable {kind} artifact")
    flat, shape = _read(path)
    problem = companion_problem(path)            # after the file itself: a damaged one is said first
    if problem:
        raise FileNotFoundError(problem)
    try:
        meta = parse_metadata(flat)
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}: the file was modified or damaged") from None
    if not meta:
        raise ValueError(f"{path}: {_article(kind)} {kind} file without cmunext-edge metadata (not exported by cmunext-export)")
    spec = meta.pop("spec", None)
    selftest = meta.pop("selftest", None)
    entry, damaged = manifest_lookup(path)
    return {"path": str(path), "format": kind, "target": meta.get("target"), "precision": meta.get("precision"),
            "variant": meta.get("variant"), "in_channels": meta.get("in_channels"),
            "num_classes": meta.get("num_classes"), "input_shape": shape,
            "preprocess": json.loads(spec.to_json()) if spec else None,
            "runtime_settings": json.loads(meta["runtime"]) if meta.get("runtime") else {},
            "graph_rewrites": json.loads(meta["graph"]) if meta.get("graph") else [],
            "source_sha256": meta.get("source_sha256"), "toolkit_version": meta.get("toolkit_version"),
            "selftest": bool(selftest), "tensorrt": {k[1:]: v for k, v in flat.items() if k.startswith("_")} or None,
            "files": [{"name": f.name, "bytes": f.stat().st_size} for f in files if f.is_file()],
            "sha256": sha256_file(path) if path.is_file() else None,
            "verification": (entry or {}).get("verification"), "in_manifest": entry is not None,
            "manifest_problem": damaged, "auto": (entry or {}).get("auto"),
            "calibration": (entry or {}).get("calibration"),
            "int8_settings": (entry or {}).get("int8_settings"), "files_check": files_check(path, flat)}


def _read(path: Path) -> tuple[dict, list]:
    """(flat metadata, input shape) of the artifact at `path`; ValueError for a damaged file."""
    kind = kind_of(path)
    try:
        return READERS[kind.name](path)
    except (OSError, MissingDependencyError):
        raise
    except Exception as exc:      # protobuf DecodeError, XML ParseError, JSON errors: a damaged file
        first = (str(exc).strip().splitlines() or ["damaged or truncated"])[0][:160]
        raise ValueError(f"{path}: not a readable {kind.label} file ({type(exc).__name__}: {first})") from None


def files_check(path: str | Path, flat: dict | None = None) -> dict:
    """The artifact's files as a load checks them before the runtime parses anything (the same
    code, artifacts/integrity.py): against manifest.json beside them, else against the content hash
    embedded at export (read from `flat`, the artifact's metadata, when given). -> {"ok": bool,
    "source": "manifest" | "embedded" | None, "message": str}. The self-test needs the runtime: a
    load or cmunext-bench runs it."""
    from cmunext_edge.artifacts.integrity import VerifyReport, check_embedded, check_manifest
    path = sidecar_entry(Path(path))
    report = VerifyReport(str(path))
    if not check_manifest(path, report):
        check_embedded(path, _read(path)[0] if flat is None else flat, report)
    if report.problems:
        return {"ok": False, "source": report.hash_source, "message": f"{path}: " + "; ".join(report.problems)}
    return {"ok": True, "source": report.hash_source,
            "message": "sha256 of every file matches manifest.json" if report.hash_source == "manifest" else
            f"{no_entry_reason(report.manifest_problem)}; the files match the content hash embedded at export"}


def export_verification_of(path) -> str | None:
    """How the export verified the artifact at `path` against PyTorch, in one line (manifest.json
    beside it); None for a checkpoint. EdgeSegmenter.describe() and both engines of
    cmunext-predict report it."""
    kind = kind_of(path)
    if kind is None or not kind.exported:
        return None
    entry, damaged = manifest_lookup(path)
    return verification_line((entry or {}).get("verification"), entry is not None, (entry or {}).get("auto"), damaged)


def verification_line(v: dict | None, in_manifest: bool, auto: dict | None = None,
                      manifest_problem: str | None = None) -> str:
    """The export's verification record in one line; `manifest_problem`: why manifest.json beside
    the artifact is damaged (artifacts/manifest.py manifest_lookup), when it is."""
    if not in_manifest:
        return f"unknown ({no_entry_reason(manifest_problem)})"
    if not v:
        return ("NOT verified: chosen by --target auto without a verification record (see its "
                f"{auto.get('report', 'auto_report.md')})" if auto else "NOT verified at export (--no-verify)")
    from cmunext_edge.core.agreement import record_inconsistency
    edited = record_inconsistency(v)
    if edited:
        return f"NOT TRUSTED: the verification record in manifest.json contradicts itself ({edited}); edited?"
    data = (v.get("data") or {}).get("label") or (v.get("source") or {}).get("source", "?")
    gt = v.get("dice_vs_ground_truth")
    status = "FAILED" if not v.get("passed") else \
        (f"passed, NOT verified ({v.get('unverified') or 'too few images'})" if v.get("verified") is False else
         "verified" if v.get("verified") else "passed")
    d = v.get("distribution") or {}
    tail = (f", worst {d['worst']:.4f}, {d['n_bad']} below {d['bad_below']} (95% bound on that share "
            f"{100 * d['bad_share_upper95']:.1f}%)" if d.get("n") else "")
    return (f"{status}: vs PyTorch FP32 on {v['n_images']} images of {data}, "
            f"mask Dice agreement {v['mask_dice_agreement']:.4f}{format_class_dice(v.get('per_class_agreement'))} "
            f"(required {v['required_agreement']}){tail}"
            + (f", Dice vs ground truth {gt:.4f}{format_class_dice(v.get('per_class_dice_vs_ground_truth'))}"
               if gt is not None else ", no ground-truth Dice"))
