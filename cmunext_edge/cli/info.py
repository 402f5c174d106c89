"""cmunext-info: what a CMUNeXt checkpoint or exported artifact is, without running it.

For an artifact (.onnx, OpenVINO .xml, TensorRT .engine/.plan with its sidecar .json) it prints
the format, precision, variant, classes, input shape, preprocessing, stored runtime settings and
the export's verification (from manifest.json beside it) and whether its files still match that
manifest (exit 1 when they do not); no torch needed.
For a checkpoint it prints the variant (detected from tensor shapes), input channels, classes, parameters,
multiply-accumulates at an input size, the preprocessing contract and the file's sha256.

How MACs are counted: one multiply-accumulate per weight use in every Conv2d
(out_channels x H_out x W_out x in_channels/groups x kH x kW, per image, computed
from the conv weight shapes at the given size); BatchNorm, activations, pooling, upsampling,
concatenation and bias additions are not counted. FLOPs = 2 x MACs.
"""
from __future__ import annotations

import json
import sys

from cmunext_edge.cli.common import cli_main, fail, make_parser, network_side

EXAMPLE = """examples:
  cmunext-info models/cmunext-s-busi.safetensors
  cmunext-info cmunext-s-busi --size 224 320 --json
  cmunext-info exports/cmunext-s-busi_fp32.onnx      (after: cmunext-export --weights cmunext-s-busi --target onnx)
  cmunext-info exports/cmunext-s-busi_int8.xml"""


def build_parser():
    p = make_parser("cmunext-info", __doc__, EXAMPLE)
    p.add_argument("path", help="checkpoint (.pth, .pt, .safetensors), a shipped model name, or an "
                                "exported artifact (.onnx, .xml, .engine, .plan)")
    p.add_argument("--size", type=network_side, nargs="+", metavar="N",
                   help="checkpoints only: input size for MACs, one value (square) or H W (default: the spec's size)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


@cli_main("cmunext-info")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from cmunext_edge._deps import MissingDependencyError
    from cmunext_edge.artifacts.info import is_artifact
    if is_artifact(args.path):
        if args.size:
            return fail("cmunext-info", "--size applies to checkpoints: an exported artifact's input size is "
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
                return fail("cmunext-info", "--size takes one value or two (H W)")
            spec = spec.with_size(args.size[0], args.size[-1])
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        return fail("cmunext-info", str(exc))
    except MissingDependencyError as exc:     # a .pth needs torch to unpickle
        return fail("cmunext-info", str(exc))
    cx = variant_complexity(ckpt.info.variant, spec.size, ckpt.info.in_channels, ckpt.info.num_classes)
    info = {"path": str(ckpt.path), "variant": ckpt.info.variant, "in_channels": ckpt.info.in_channels,
            "num_classes": ckpt.info.num_classes, "params": cx.params, "params_m": round(cx.mparams, 3),
            "input_size": list(spec.size), "macs": cx.macs, "gmacs": round(cx.gmacs, 4),
            "gflops": round(2 * cx.gmacs, 4), "sha256": ckpt.sha256,
            "preprocess": json.loads(spec.to_json())}
    from cmunext_edge.capabilities import detect
    if args.json:
        print(json.dumps({**info, "capabilities": detect().as_dict()}, indent=2))
        return 0
    print(f"path          {info['path']}\nvariant       {info['variant']}\n"
          f"in_channels   {info['in_channels']}\nclasses       {info['num_classes']}\n"
          f"parameters    {info['params']:,} ({info['params_m']:.3f} M)\n"
          f"MACs          {info['gmacs']:.3f} G at {spec.height}x{spec.width} "
          f"(conv multiply-accumulates; FLOPs = {info['gflops']:.3f} G)\n"
          f"preprocess    {spec.channel_order.upper()}, {spec.interpolation} resize to "
          f"{spec.height}x{spec.width}, mean {spec.mean}, std {spec.std}, extra scale "
          f"{spec.extra_scale:.6g}, threshold {spec.threshold}\nsha256        {info['sha256']}\n"
          f"this CPU      {detect().summary()}")
    return 0


def _artifact(args) -> int:
    from cmunext_edge._deps import MissingDependencyError
    from cmunext_edge.artifacts.info import describe_artifact, verification_line
    try:
        info = describe_artifact(args.path)
    except MissingDependencyError as exc:
        return fail("cmunext-info", str(exc), code=1)
    except (OSError, ValueError) as exc:
        return fail("cmunext-info", str(exc))
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
                           f"threshold {pre.get('threshold')}"),
            ("runtime", info["runtime_settings"] or "backend defaults"),
            ("graph", ", ".join(info["graph_rewrites"]) or "as traced"),
            ("self-test", "embedded" if info["selftest"] else "none"),
            ("verification", verification_line(info["verification"], info["in_manifest"], info.get("auto"))),
            ("files", ", ".join(f"{f['name']} ({f['bytes'] / 1e6:.2f} MB)" for f in info["files"])),
            ("files check", ("MODIFIED OR DAMAGED: " if info["files_check"]["ok"] is False else "")
             + info["files_check"]["message"]),
            ("source sha256", info["source_sha256"]), ("toolkit", info["toolkit_version"])]
    if info["tensorrt"]:
        rows.append(("tensorrt", info["tensorrt"]))
    print("\n".join(f"{k:<14}{v}" for k, v in rows))
    return _files_code(info)


def _files_code(info: dict) -> int:
    """1 when the files no longer match their manifest (described, but not what was exported)."""
    if info["files_check"]["ok"] is False:
        print(f"cmunext-info: error: {info['files_check']['message']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
