"""cmunext-info: what a CMUNeXt checkpoint or exported artifact is, without running it.

For an artifact (.onnx, OpenVINO .xml, TensorRT .engine/.plan with its sidecar .json) it prints
the format, precision, variant, classes, input shape, preprocessing, stored runtime settings and
the export's verification (from manifest.json beside it) and whether its files still match that
manifest, or without a manifest entry the content hash embedded at export (exit 1 when they do
not: a load refuses such an artifact); no torch needed.
For a checkpoint it prints the variant (detected from tensor shapes), input channels, classes, parameters,
multiply-accumulates at an input size, the preprocessing contract and the file's sha256, and checks
that every weight is finite (exit 1 when one is NaN or infinite: every other tool refuses it; a
.safetensors file is checked without torch, a .pth/.pt when torch is installed).

How MACs are counted: one multiply-accumulate per weight use in every Conv2d
(out_channels x H_out x W_out x in_channels/groups x kH x kW, per image, computed
from the conv weight shapes at the given size); BatchNorm, activations, pooling, upsampling,
concatenation and bias additions are not counted. FLOPs = 2 x MACs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cmunext_edge.cli.common import EXIT_PARTIAL, cli_main, fail, input_path, make_parser, network_side
from cmunext_edge.fileio import loads_json

PROG = "cmunext-info"

EXAMPLE = """examples:
  cmunext-info models/cmunext-s-busi.safetensors
  cmunext-info cmunext-s-busi --size 224 320 --json
  cmunext-info exports/cmunext-s-busi_fp32.onnx      (after: cmunext-export --weights cmunext-s-busi --target onnx)
  cmunext-info exports/cmunext-s-busi_int8.xml"""


def build_parser():
    p = make_parser(PROG, __doc__, EXAMPLE)
    p.add_argument("path", type=input_path, help="checkpoint (.pth, .pt, .safetensors), a shipped model name, or an "
                                "exported artifact (.onnx, .xml, .engine, .plan)")
    p.add_argument("--size", type=network_side, nargs="+", metavar="N",
                   help="checkpoints only: input size for MACs, one value (square) or H W (default: the spec's size)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _suffix_hint(path) -> str:
    """For a file whose suffix no kind has: what cmunext-info reads (it still tried it as a
    checkpoint, which may be saved under any name)."""
    from cmunext_edge.artifacts.kinds import SUFFIXES, kind_of
    suffix = Path(str(path)).suffix
    if not suffix or kind_of(path) is not None:
        return ""
    return f"; {suffix!r} is no kind cmunext-info knows: it reads {', '.join(SUFFIXES)}"


@cli_main(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from cmunext_edge._deps import MissingDependencyError
    from cmunext_edge.artifacts.info import is_artifact
    not_read = what_else(args.path)
    if not_read:
        return fail(PROG, not_read)
    if is_artifact(args.path):
        if args.size:
            return fail(PROG, "--size applies to checkpoints: an exported artifact's input size is "
                        "fixed at export (cmunext-info shows its input shape)")
        return _artifact(args)
    from cmunext_edge.core.complexity import variant_complexity
    from cmunext_edge.resources import resolve_weights
    from cmunext_edge.checkpoints.weights import CheckpointError, inspect_checkpoint
    try:
        ckpt = inspect_checkpoint(resolve_weights(args.path))
        spec = ckpt.spec
        if args.size:
            if len(args.size) > 2:
                return fail(PROG, "--size takes one value or two (H W)")
            spec = spec.with_size(args.size[0], args.size[-1])
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        return fail(PROG, str(exc) + _suffix_hint(args.path))
    except MissingDependencyError as exc:     # a .pth needs torch to unpickle
        return fail(PROG, str(exc))
    cx = variant_complexity(ckpt.info.variant, spec.size, ckpt.info.in_channels, ckpt.info.num_classes)
    info = {"path": str(ckpt.path), "variant": ckpt.info.variant, "in_channels": ckpt.info.in_channels,
            "num_classes": ckpt.info.num_classes, "params": cx.params, "params_m": round(cx.mparams, 3),
            "input_size": list(spec.size), "macs": cx.macs, "gmacs": round(cx.gmacs, 4),
            "gflops": round(2 * cx.gmacs, 4), "sha256": ckpt.sha256,
            "preprocess": json.loads(spec.to_json())}
    finite, problem, readable = weights_finite(ckpt.path)
    info.update({"weights_finite": finite, "weights_readable": readable, "weights_problem": problem})
    from cmunext_edge.resources import run_split
    from cmunext_edge.checkpoints.weights import assumed_size_note
    for note in (run_split(ckpt.path, ckpt.sha256)[1], None if args.size else assumed_size_note(ckpt.path, ckpt.sha256)):
        if note:
            info.setdefault("notes", []).append(note)
            print(f"note: {note}", file=sys.stderr)
    from cmunext_edge.capabilities import detect
    if args.json:
        print(json.dumps({**info, "capabilities": detect().as_dict()}, indent=2))
        return _weights_code(info)
    print(f"path          {info['path']}\nvariant       {info['variant']}\n"
          f"in_channels   {info['in_channels']}\nclasses       {info['num_classes']}\n"
          f"parameters    {info['params']:,} ({info['params_m']:.3f} M)\n"
          f"MACs          {info['gmacs']:.3f} G at {spec.height}x{spec.width} "
          f"(conv multiply-accumulates; FLOPs = {info['gflops']:.3f} G)\n"
          f"preprocess    {spec.channel_order.upper()}, {spec.interpolation} resize to "
          f"{spec.height}x{spec.width}, mean {spec.mean}, std {spec.std}, extra scale "
          f"{spec.extra_scale:.6g}, threshold {spec.threshold}\nsha256        {info['sha256']}\n"
          f"weights       {_weights_line(finite, problem, readable)}\n"
          f"this CPU      {detect().summary()}")
    return _weights_code(info)


def _weights_line(finite: bool | None, problem: str | None, readable: bool) -> str:
    if finite:
        return "every value finite"
    if not readable:
        return f"UNREADABLE: {problem}"
    return f"NOT FINITE: {problem}" if finite is False else f"not checked ({problem})"


def _weights_code(info: dict) -> int:
    """1 when a weight is NaN or infinite, or the weights cannot be read (a truncated file):
    described, but every other tool refuses to load it."""
    if info["weights_finite"] is False or not info["weights_readable"]:
        print(f"cmunext-info: error: {info['weights_problem']}", file=sys.stderr)
        return 1
    return 0


FLOAT_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def weights_finite(path) -> tuple[bool | None, str | None, bool]:
    """(finite, why, readable): (True, None, True) when every floating-point weight is finite,
    (False, why, True) when one is NaN or infinite (the message of checkpoints.weights.check_finite,
    which every loading tool applies), (None, why, False) when the weights cannot be read (a
    truncated file: every loading tool refuses it too), (None, why, True) when they could not be
    checked here. A .safetensors file is read with numpy (no torch); a .pth/.pt needs torch (the
    safe loader, weights_only)."""
    from pathlib import Path
    from cmunext_edge._deps import available
    from cmunext_edge.checkpoints.inspect import CheckpointError
    from cmunext_edge.resources import is_safetensors
    path = Path(path)
    if is_safetensors(path):
        try:
            bad = _safetensors_nonfinite(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"{path}: weights unreadable: {exc}", False
        if not bad:
            return True, None, True
        total = sum(n for _, n in bad)
        return False, (f"{path}: {total} weight value(s) in {len(bad)} tensor(s) are NaN or infinite "
                       f"(first: {bad[0][0]}); such a model predicts nothing meaningful, and every other "
                       f"tool refuses to load it. Use an earlier checkpoint or retrain (e.g. with a lower --lr)"), True
    if not available("torch"):
        return None, "reading a .pth's weights needs torch: pip install \"cmunext-edge[torch]\"", True
    from cmunext_edge.checkpoints.weights import load_checkpoint
    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        if "NaN or infinite" in str(exc):
            return False, str(exc), True
        return None, str(exc), False
    return True, None, True


def _safetensors_nonfinite(path) -> list[tuple[str, int]]:
    """[(tensor name, count of NaN/inf values)] of a .safetensors file, read with numpy alone."""
    import struct
    import numpy as np
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = loads_json(fh.read(length))
        base = 8 + length
        bad = []
        for name, entry in header.items():
            if name == "__metadata__" or entry["dtype"] not in (*FLOAT_DTYPES, "BF16"):
                continue
            start, end = (int(v) for v in entry["data_offsets"])
            fh.seek(base + start)
            raw = fh.read(end - start)
            if len(raw) != end - start:
                raise ValueError(f"tensor {name} runs past the end of the file")
            if entry["dtype"] == "BF16":        # no numpy bfloat16: all exponent bits set = NaN or inf
                n = int(np.count_nonzero((np.frombuffer(raw, "<u2") & 0x7F80) == 0x7F80))
            else:
                n = int(np.count_nonzero(~np.isfinite(np.frombuffer(raw, FLOAT_DTYPES[entry["dtype"]]))))
            if n:
                bad.append((name, n))
    return bad


READS = ("a checkpoint (.pth, .pt, .safetensors) or an exported artifact (.onnx, .xml, .engine, .plan), "
         "one file")


def what_else(given: str) -> str | None:
    """The reason (one line) when `given` is something cmunext-info does not read, naming what it
    is and what to give instead: a folder, a device bundle (folder or archive), an OpenVINO .bin,
    a manifest, signature or report. None: read it as a checkpoint or artifact."""
    from pathlib import Path
    path = Path(given)
    name = path.name.lower()
    if path.is_dir():
        manifest = path / "bundle.json"
        if manifest.is_file():
            try:
                entry = loads_json(manifest.read_text()).get("artifact")
            except (OSError, ValueError, AttributeError):
                entry = None
            inside = f"; cmunext-info {path / entry} describes its artifact" if isinstance(entry, str) else ""
            return (f"{path} is a device bundle folder: cmunext-check {path} checks it on the device"
                    f"{inside} (cmunext-info reads {READS})")
        return f"{path} is a folder; cmunext-info reads {READS}"
    from cmunext_edge.artifacts.info import is_artifact
    if not path.is_file() or is_artifact(path):
        return None
    if name.endswith((".tar.gz", ".tgz")):
        what = "a device bundle archive" if ".bundle." in name else "a .tar.gz archive"
        return (f"{path} is {what}, not a model file: cmunext-check {path} checks a bundle on the device "
                f"(cmunext-info reads {READS})")
    if path.suffix.lower() == ".bin":
        xml = path.with_suffix(".xml")
        beside = "" if xml.is_file() else " (not found beside it)"
        return (f"{path} is the weights file of an OpenVINO IR (or another binary file); cmunext-info reads "
                f"the IR's .xml: cmunext-info {xml}{beside}")
    if path.suffix.lower() == ".sig":
        return f"{path} is a signature; cmunext-keys verify checks it (cmunext-info reads {READS})"
    if name == "manifest.json":
        return f"{path} is an export manifest; cmunext-info reads the artifact beside it ({READS})"
    if name == "bundle.json":
        return f"{path} is a device bundle's manifest: cmunext-check {path.parent} checks that bundle"
    if name.endswith(".json") and "device_report" in name:
        return f"{path} is a cmunext-check device report: cmunext-compare reads it"
    if name.endswith(".json"):
        return f"{path} is a JSON file, not a model; cmunext-info reads {READS}"
    return None


def _artifact(args) -> int:
    from cmunext_edge._deps import MissingDependencyError
    from cmunext_edge.artifacts.info import describe_artifact, verification_line
    try:
        info = describe_artifact(args.path)
    except MissingDependencyError as exc:
        return fail(PROG, str(exc), code=1)
    except (OSError, ValueError) as exc:
        return fail(PROG, str(exc))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return _files_code(info)
    pre = info["preprocess"] or {}
    size = pre.get("size") or [pre.get("height"), pre.get("width")]
    rows = [("path", info["path"]), ("format", f"{info['format']} ({info['target']} target)"),
            ("precision", f"{info['precision']} (as exported; the device may run another: "
                          f"cmunext-bench shows what ran)"),
            ("variant", info["variant"]), ("in_channels", info["in_channels"]), ("classes", info["num_classes"]),
            ("input shape", info["input_shape"]),
            ("preprocess", f"{str(pre.get('channel_order', '?')).upper()}, {pre.get('interpolation')} resize to "
                           f"{size[0]}x{size[-1]}, mean {pre.get('mean')}, std {pre.get('std')}, "
                           f"extra scale {pre.get('extra_scale', 1.0):.6g}, threshold {pre.get('threshold')}"),
            ("runtime", info["runtime_settings"] or "backend defaults"),
            ("graph", ", ".join(info["graph_rewrites"]) or "as traced"),
            ("self-test", "embedded" if info["selftest"] else "none"),
            ("verification", verification_line(info["verification"], info["in_manifest"], info.get("auto"),
                                               info.get("manifest_problem"))
             + (f"; {info['verification']['ran_at']}" if (info["verification"] or {}).get("ran_at") else "")),
            ("files", ", ".join(f"{f['name']} ({f['bytes'] / 1e6:.2f} MB)" for f in info["files"])),
            ("files check", ("MODIFIED OR DAMAGED: " if info["files_check"]["ok"] is False else "")
             + info["files_check"]["message"]),
            ("source sha256", info["source_sha256"]), ("toolkit", info["toolkit_version"])]
    rows += [(k, v) for k, v in (("calibration", _calibration_line(info.get("calibration"))),
                                 ("int8 settings", _int8_line(info.get("int8_settings"))),
                                 ("tensorrt", info["tensorrt"])) if v]
    print("\n".join(f"{k:<14}{v}" for k, v in rows))
    return _files_code(info)


def _calibration_line(calib: dict | None) -> str | None:
    """The manifest's calibration record in one line (None: not calibrated)."""
    if not isinstance(calib, dict):
        return None
    files = calib.get("files")
    n = len(files) if isinstance(files, list) else calib.get("size")
    return (f"{n} image(s) from {calib.get('source')} (seed {calib.get('seed')}, set sha256 "
            f"{str(calib.get('sha256'))[:16]}; names in manifest.json)")


def _int8_line(settings: dict | None) -> str | None:
    """The INT8 recipe of the manifest (quantizer settings, layers kept in float) in one line."""
    if not isinstance(settings, dict) or not settings:
        return None
    parts = []
    for tool, values in settings.items():
        if not isinstance(values, dict):
            parts.append(f"{tool}: {values}")
            continue
        patterns = values.get("float_layer_patterns") or []
        shown = [f"{k}={v}" for k, v in values.items() if k != "float_layer_patterns" and v not in (None, [], {}, "")]
        parts.append(f"{tool}: {', '.join(shown)}" + (f"; {len(patterns)} layer pattern(s) kept in float"
                                                       if patterns else ""))
    return "; ".join(parts)


def _files_code(info: dict) -> int:
    """1 when the files no longer match their manifest (described, but not what was exported), or
    when the manifest's verification record contradicts itself (edited: not believed)."""
    from cmunext_edge.core.agreement import record_inconsistency
    if info["files_check"]["ok"] is False:
        return fail(PROG, info["files_check"]["message"], EXIT_PARTIAL)
    edited = record_inconsistency(info.get("verification"))
    return fail(PROG, f"{info['path']}: the verification record in manifest.json contradicts itself "
                      f"({edited}); edited?", EXIT_PARTIAL) if edited else 0


if __name__ == "__main__":
    sys.exit(main())
