"""cmunext-export: turn CMUNeXt weights into a verified edge artifact (ONNX, OpenVINO, ONNX
Runtime INT8, TensorRT), with its preprocessing contract, a self-test and manifest.json."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from cmunext_edge._deps import MissingDependencyError
from cmunext_edge.export.calibration import CalibrationError
from cmunext_edge.export.openvino_export import FLOAT_LAYERS
from cmunext_edge.export.options import OPSETS
from cmunext_edge.export.targets import ExportUsageError, help_table
from cmunext_edge.export.verify import VerificationError
from cmunext_edge.core.precision import Int8Mode, Precision
from cmunext_edge.checkpoints.weights import CheckpointError
from cmunext_edge.cli.common import (Parser, add_debug, batch_size, cli_main, device_name, fail, int_range, network_side, nonnegative_float, output_path,
                                      nonnegative_int, positive_float, positive_int, seed, thread_count)

PROG = "cmunext-export"

EXAMPLE = """examples:
  (cmunext-s-busi is the shipped model; your_dataset/ stands for your images/ + masks/0/ folder)
  cmunext-export --weights cmunext-s-busi --target onnx
  cmunext-export --weights models/cmunext-s-busi.safetensors --target openvino --int8 --calib-size 16
  cmunext-export --weights runs/mine/best.pth --target openvino --int8 --calib your_calibration_images/ \\
      --verify-data your_dataset/    (its validation images: runs/mine/split.json is read)
  cmunext-export --weights runs/mine/best.pth --target onnx --verify-data your_dataset/ --split val.txt
  cmunext-export --weights best.pth --target ort --int8 --calib your_dataset/ --calib-size 16 --out exports
  cmunext-export --weights best.pth --target trt --fp16 --dynamic --workspace 2   (on the GPU machine)
  cmunext-export --weights cmunext-s-busi --target auto --candidates ort-fp32,ov-fp32,ov-int8-transformer-dense
  cmunext-export --weights runs/mine/best.pth --target auto --device CPU --max-dice-drop 0.5 \\
      --calib your_train_images/ --verify-data your_dataset/ --split runs/mine/split.json --out exports/auto
      (builds every candidate for the device, measures latency, throughput and Dice, keeps the
       fastest within the Dice budget and writes auto_report.{md,json,png} beside it; calibrate
       on training images, not on the images the Dice budget is measured on)
  cmunext-export --weights exports/cmunext-s-busi_fp32.onnx --target triton --out model_repository

verification data (held out by default): --verify-data (its --split, or the validation list of the
split.json beside a cmunext-train checkpoint), else a shipped model's own held-out validation
images, else the calibration data (--calib, with a warning: not held out), else the bundled BUSI
samples (a model other than the shipped BUSI one: agreement with PyTorch FP32 only, no
ground-truth Dice). Calibration images are left out of a default verification set; overlaps of
--verify-data with --calib or the training list are warned about. The gate: mean mask agreement
>= the precision's floor and at most 3% of images below 0.90. Verified: passed, with the 95% bound on
the share below 0.90 at most 6% (49 clean images; more with bad ones), on images that neither
trained nor calibrated the model; otherwise the artifact is kept but says NOT verified and why
(docs/export.md, "Verification").
manifest.json records the images, the distribution and the 95% bounds.

exit codes: 0 success; 2 nothing written (usage error, unreadable weights, missing extra, failed
verification, write error); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): nothing is left behind.

""" + help_table()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="cmunext-export", description=__doc__, epilog=EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help=".pth/.pt/.safetensors checkpoint (official format accepted); "
                                                     "for --target triton an exported .onnx/.xml/.engine")
    p.add_argument("--target", required=True, help="onnx, openvino (ov), onnxruntime (ort), tensorrt (trt), triton "
                                                   "(a Triton model repository), or auto (fastest verified "
                                                   "candidate for --device)")
    prec = p.add_mutually_exclusive_group()
    for flag in Precision.names():
        prec.add_argument(f"--{flag}", dest="precision", action="store_const", const=flag,
                          help=f"{flag.upper()} artifact" + (" (calibrated on --calib)" if flag == "int8" else ""))
    p.add_argument("--calib", help="INT8 calibration images: a folder or an official-layout dataset "
                                   "(default: 64 of the shipped model's training images, cmunext_edge/samples/busi-calib); "
                                   "verification leaves them out")
    p.add_argument("--calib-size", type=positive_int, default=64, help="images sampled (seeded) for calibration (default 64)")
    p.add_argument("--imgsz", type=network_side, help="square network input size, multiple of 16 (default: the checkpoint's; another size than the model trained at is warned about: agreement with PyTorch at that size cannot show how far its masks move)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--batch", type=batch_size, default=1, help="static batch size (default 1)")
    shape.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    p.add_argument("--opset", type=int_range(*OPSETS), help=f"ONNX opset, {OPSETS[0]}-{OPSETS[1]} (default 17)")
    p.add_argument("--out", default="exports", type=output_path, help="output folder (default exports/)")
    v = p.add_argument_group("verification")
    v.add_argument("--verify-data", help="verification images, with masks/0/ for ground-truth Dice "
                   "(default: the model's held-out images when known, else --calib, else the bundled samples)")
    v.add_argument("--verify-size", type=positive_int, help="images sampled from the verification data (default: a "
                   "held-out list whole, up to 200; otherwise --calib-size)")
    v.add_argument("--no-verify", dest="verify", action="store_false",
                   help="keep the artifact without checking it (warns; the manifest says NOT verified)")
    v.add_argument("--seed", type=seed, default=0, help="sampling seed (default 0)")
    v.add_argument("--device", type=device_name, help="device the artifact is verified on (default cpu; cuda for TensorRT); "
                                    "a device not present falls back to CPU and says so")
    v.add_argument("--strict-device", action="store_true",
                   help="fail (exit 2, nothing written) instead of verifying on another device than --device")
    t = p.add_argument_group("TensorRT and quantization")
    t.add_argument("--workspace", type=positive_float, help="TensorRT builder workspace in GiB")
    t.add_argument("--dla-core", type=nonnegative_int, help="Jetson DLA core (GPU fallback stays on)")
    t.add_argument("--int8-mode", choices=Int8Mode.names(), help="TensorRT INT8: explicit Q/DQ (default) "
                   "or an implicit calibrator (TensorRT 8.x / JetPack 5)")
    t.add_argument("--calibrator", choices=["entropy", "minmax"], help="TensorRT calibrator (with --int8-mode calibrator)")
    t.add_argument("--calibrate-method", choices=["percentile", "minmax", "entropy"],
                   help="QDQ activation calibration for ONNX Runtime / TensorRT Q/DQ INT8 (default percentile)")
    t.add_argument("--int8-float-layers", metavar="NAME|PATTERNS",
                   help="OpenVINO or ONNX Runtime INT8: convolutions kept in float (NNCF ignored scope; nodes "
                        "ONNX Runtime leaves unquantized), recorded in the artifact (int8_float_layers): a "
                        f"named list ({', '.join(FLOAT_LAYERS)}; default faithful-wide) or comma-separated "
                        "node-name patterns, e.g. a set found by benchmarks/int8_faithful.py for your model")
    t.add_argument("--name", help="artifact file name without suffix")
    a = p.add_argument_group("--target auto")
    a.add_argument("--max-dice-drop", type=nonnegative_float, default=0.5,
                   help="Dice budget in points below PyTorch FP32 on the same images (0.5 = 0.005; default 0.5)")
    v.add_argument("--split", help="name list or training split.json (its 'val' list) choosing the images of "
                   "--verify-data (default: the split.json beside a cmunext-train checkpoint when "
                   "--verify-data holds its validation images)")
    a.add_argument("--candidates", help="comma list of candidate names (default: all for the device)")
    a.add_argument("--threads", type=thread_count, help="inference threads to measure with and store in the artifact")
    a.add_argument("--no-agreement-floor", dest="agreement_floor", action="store_false",
                   help="select on the Dice budget alone, ignoring the per-precision agreement gate with "
                        "PyTorch that every verified export needs (mean FP32 0.999, FP16/BF16 0.99, INT8 "
                        "0.97; at most 3%% of images below 0.90)")
    t.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--sign-key", metavar="KEY.pem", help="sign the artifact's files with this private key "
                   "(-> ARTIFACT.sig beside them; make one with cmunext-keys new; docs/signing.md)")
    p.add_argument("--bundle", action="store_true", help="also write a device bundle (folder + .tar.gz) "
                   "beside the artifact (signed too with --sign-key): see cmunext-bundle --help")
    return add_debug(p)


# Options that only some targets use, so that none is silently ignored: (options, targets that
# take them, what to say). Options are argparse dests; "precision" is --fp32/--fp16/--bf16/--int8.
AUTO_ONLY = ("max_dice_drop", "candidates", "threads", "agreement_floor")
BUILT_ONLY = ("precision", "imgsz", "batch", "dynamic", "name", "opset", "bundle", "workspace", "dla_core",
              "int8_mode", "calibrator", "calibrate_method", "int8_float_layers")
VERIFYING = ("calib", "verify_data", "split", "verify_size", "imgsz", "opset", "dynamic", "bundle")
TARGET_ONLY_OPTIONS = (
    (AUTO_ONLY, {"auto"}, "applies to --target auto only"),
    (("verify",), {"onnx", "openvino", "onnxruntime", "tensorrt", "triton"},
     "does not apply to --target auto (it verifies every candidate: that is how it chooses)"),
    (BUILT_ONLY, {"onnx", "openvino", "onnxruntime", "tensorrt", "triton"},
     "does not apply to --target auto (it chooses the precision, shape and names of its candidates; "
     "export the winner's kind again with that option if you need it)"),
    (VERIFYING, {"onnx", "openvino", "onnxruntime", "tensorrt", "auto"},
     "does not apply to --target triton (it packages an exported artifact as it is)"),
    (("seed",), {"onnx", "openvino", "onnxruntime", "tensorrt", "triton"},
     "does not apply to --target auto (its calibration and evaluation images are drawn with seed 0)"),
    (("strict_device",), {"onnx", "openvino", "onnxruntime", "tensorrt", "triton"},
     "does not apply to --target auto (it measures its candidates on --device as its runtimes run there)"),
)


def unused_option(args, parser) -> str | None:
    """The first option given that the target would ignore, as a refusal (None: all apply)."""
    from cmunext_edge.export.targets import get_target
    target = "auto" if args.target.lower() == "auto" else get_target(args.target).name
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    flags["precision"] = f"--{args.precision}" if args.precision else "--fp32"
    for options, targets, why in TARGET_ONLY_OPTIONS:
        for dest in options:
            if target not in targets and getattr(args, dest, None) != parser.get_default(dest):
                return f"{flags[dest]} {why}"
    return None


@cli_main(PROG)
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from cmunext_edge.cli.preflight import check_outputs
    problem = check_outputs(args.out) or unused_option(args, parser)   # before any work: a long export
    if problem:                                                          # never ends refused
        return fail(PROG, problem)
    problem = bundle_problem(args)
    if problem:
        return fail(PROG, problem)
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    if args.target.lower() == "auto":
        with quiet_stdout:              # with --json, stdout carries the JSON alone
            return _auto(args)
    from cmunext_edge.export.options import ExportOptions
    from cmunext_edge.export.pipeline import export
    try:
        fields = {k: v for k, v in vars(args).items() if k in ExportOptions.field_names()}
        if args.int8_float_layers is not None:
            setting, value = int8_float_layers(args)
            fields[setting] = {"float_layers": value}
        with quiet_stdout:              # toolchains (ONNX Runtime's calibration, NNCF) print there
            result = export(args.weights, ExportOptions(**fields))
    except (ExportUsageError, VerificationError) as exc:
        return fail(PROG, str(exc))
    except (MissingDependencyError, CalibrationError, CheckpointError, FileNotFoundError, ValueError) as exc:
        return fail(PROG, str(exc))
    except OSError as exc:
        return fail(PROG, f"could not write the artifact ({exc}); nothing was left behind")
    if args.json:
        print(json.dumps({"artifact": str(result.artifact), "files": [str(f) for f in result.files],
                          "manifest": str(result.manifest), "target": result.target,
                          "precision": result.precision, "verification": result.verification}, indent=2))
    print(f"\nexported {result.target} {result.precision}: {result.artifact}\n"
          f"manifest: {result.manifest}\nnext:", file=sys.stderr if args.json else sys.stdout)
    for cmd in result.next_commands:
        print("  " + cmd, file=sys.stderr if args.json else sys.stdout)
    if args.bundle:
        from cmunext_edge.cli.bundle import run as make_bundle
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            return make_bundle(result.artifact, device=args.device or "cpu", sign_key=args.sign_key)
    return 0


def bundle_problem(args) -> str | None:
    """--bundle needs held-out verification images with masks, which only a shipped model has by
    default (cmunext-bundle --images for any other): refused before the export, not after it."""
    if not args.bundle:
        return None
    from cmunext_edge.fileio import sha256_file
    from cmunext_edge.resources import resolve_weights, shipped_model_name
    try:
        weights = resolve_weights(args.weights)
        shipped = weights.is_file() and shipped_model_name(sha256_file(weights))
    except (FileNotFoundError, ValueError, OSError):
        return None                       # the export names what is wrong with --weights
    if shipped:
        return None
    return (f"--bundle: {args.weights} is not a shipped model, so there are no default held-out images to put in "
            f"its device bundle; export without --bundle, then run: cmunext-bundle ARTIFACT --images "
            f"YOUR_HELD_OUT_DATASET/ (images/ and masks/0/ the model never trained on)")


# target -> the ExportOptions setting whose `float_layers` --int8-float-layers fills
FLOAT_LAYERS_SETTING = {"openvino": "nncf", "onnxruntime": "ort_quant"}


def int8_float_layers(args) -> tuple[str, str | list[str]]:
    """--int8-float-layers as (ExportOptions setting, its `float_layers`): a FLOAT_LAYERS name, or a
    list of node-name patterns; only for an OpenVINO or ONNX Runtime INT8 export."""
    from cmunext_edge.export.targets import get_target
    target = get_target(args.target)
    setting = FLOAT_LAYERS_SETTING.get(target.name)
    if setting is None or str(args.precision or target.precisions[0]) != "int8":
        raise ExportUsageError("--int8-float-layers is for OpenVINO or ONNX Runtime INT8 "
                               "(--target openvino --int8, --target onnxruntime)")
    value = args.int8_float_layers.strip()
    if value.lower() in FLOAT_LAYERS:
        return setting, value.lower()
    patterns = [x.strip() for x in value.split(",") if x.strip()]
    if not patterns:
        raise ExportUsageError(f"--int8-float-layers {value!r}: a name ({', '.join(FLOAT_LAYERS)}) or patterns")
    return setting, patterns


def _auto(args) -> int:
    from cmunext_edge.export.auto import run_auto
    from cmunext_edge.export.pipeline import check_sign_key
    try:
        check_sign_key(args.sign_key)
        rep = run_auto(args.weights, device=(args.device or "CPU").upper(), max_dice_drop=args.max_dice_drop,
                       out=args.out if args.out != "exports" else "exports/auto", data=args.verify_data,
                       split=args.split, eval_size=args.verify_size, calib=args.calib, calib_size=args.calib_size,
                       candidates=args.candidates.split(",") if args.candidates else None, threads=args.threads,
                       agreement_floor=args.agreement_floor)
    except (MissingDependencyError, CalibrationError, CheckpointError, FileNotFoundError, ValueError,
            ExportUsageError) as exc:
        return fail(PROG, str(exc))
    stream = sys.stderr if args.json else sys.stdout
    if args.json:
        print(json.dumps(rep, indent=2))
    print(Path(rep["report_files"][1]).read_text(), file=stream)
    if not rep["winner"]:
        print("cmunext-export: no candidate is within the Dice budget; nothing was chosen", file=sys.stderr)
        return 2
    if args.sign_key:
        from cmunext_edge.artifacts.signing import sign_artifact
        print(f"signed: {sign_artifact(rep['artifact'], args.sign_key)}", file=stream)
    print(f"chosen: {rep['winner']} -> {rep['artifact']}\nreport: {', '.join(rep['report_files'])}\n"
          f"next:\n  cmunext-bench {rep['artifact']}", file=stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
