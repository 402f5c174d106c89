"""cmunext-bench: latency, throughput, memory and accuracy of checkpoints and artifacts.

Each ARTIFACT is benchmarked once per --device (and, for PyTorch checkpoints, once per
--precision). Options for one artifact only follow an '@': PATH@key=value,key=value
(e.g. model.pth@precision=bf16,channels_last=1 or model.xml@hint=throughput); they are
passed to that artifact's backend. Rows that fail are reported (also on stderr) and the exit
status is 1, as it is when an image of --images or --data cannot be read (it is left out, named)
or a --json/--markdown/--plot file cannot be written (named; the table is printed);
when every row fails, nothing was measured and no report is written: exit status 2. A device that is missing,
or that the artifact's runtime does not know, under --strict-device stops the run with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cmunext_edge.fileio import printable
from cmunext_edge.cli.common import (Parser, add_debug, batch_size, cli_main, csv_of, device_name, fail, seconds,
                                      nonnegative_int, positive_int, thread_count)

PROG = "cmunext-bench"

EXAMPLE = """examples:
  (the .onnx comes from: cmunext-export --weights cmunext-s-busi --target onnx)
  cmunext-bench cmunext-s-busi exports/cmunext-s-busi_fp32.onnx --iters 20
  cmunext-bench models/cmunext-s-busi.safetensors exports/cmunext-s-busi_fp32.onnx \\
      --precision fp32,bf16 --data your_dataset/ --wide \\
      --json bench.json --markdown bench.md --plot bench.png
  cmunext-bench --list-devices
  cmunext-bench exports/cmunext-s-busi_fp32.xml --device NPU --strict-device   # fails unless an NPU is present
  cmunext-bench exports/cmunext-s-busi_fp32.onnx --check-ort-overhead   # bench timing vs. bare onnxruntime"""


def _csv(cast):
    return lambda text: tuple(cast(v) for v in text.split(",") if v.strip())


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(text: str) -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise ValueError(f"backend option {item!r} is not key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = _value(value.strip())
    return out


def expand_rows(artifacts, devices, precisions, options: dict, backend: str | None = None,
                strict_device: bool = False):
    """Artifacts x devices (x precisions for checkpoints) -> RowSpecs, '@' options applied; with
    `strict_device` a device the row's runtime does not know is an error here, before any work."""
    from cmunext_edge.bench import RowSpec
    from cmunext_edge.resources import resolve_weights
    from cmunext_edge.runtime.registry import check_request
    rows = []
    for text in artifacts:
        path, _, extra = text.partition("@")
        path = str(resolve_weights(path))      # a shipped model's name becomes its file
        opts = {**options, **parse_options(extra)}
        spec = RowSpec(Path(path), backend=backend)
        precs = [opts.pop("precision")] if "precision" in opts else (precisions if spec.is_checkpoint else [None])
        for device in devices:
            for prec in precs:
                o = {**opts, **({"precision": prec} if prec else {})}
                entry, _ = check_request(path, device, backend, o)   # unknown/invalid option or device: error
                if strict_device:
                    entry.check_device(device, strict=True)
                rows.append(RowSpec(Path(path), device, tuple(sorted(o.items())), backend))
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="cmunext-bench", description=__doc__, epilog=EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="*", metavar="ARTIFACT[@key=value,...]",
                   help="checkpoints (.pth/.safetensors, or a shipped model's name) and exported artifacts")
    p.add_argument("--device", type=csv_of(device_name), default=("cpu",), help="comma list, e.g. cpu,cuda (default cpu)")
    p.add_argument("--precision", type=_csv(str), default=("fp32",),
                   help="PyTorch checkpoints only, comma list of fp32,bf16,fp16 (exported artifacts "
                        "carry their precision; use @precision=... to pass one to another backend)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option for every row (repeatable), e.g. threads=2")
    p.add_argument("--backend", help="force a registry backend instead of choosing by suffix")
    p.add_argument("--strict-device", action="store_true", help="fail (exit 2) instead of falling back")
    p.add_argument("--trusted-key", action="append", metavar="PUB.pem", help="trust policy: bench only artifacts "
                   "signed by this public key (repeat for several; default $CMUNEXT_TRUSTED_KEYS); exit 2 otherwise")
    p.add_argument("--no-verify-load", dest="verify", action="store_false",
                   help="do not check artifacts' sha256 and self-test before benchmarking them")
    g = p.add_argument_group("timing")
    g.add_argument("--warmup", type=nonnegative_int, default=10, help="untimed calls before timing (default 10)")
    g.add_argument("--iters", type=positive_int, default=100, help="timed batch-1 calls (default 100)")
    g.add_argument("--min-time", type=seconds, default=0.0, help="time batch 1 for at least this many s")
    g.add_argument("--batch-sizes", type=csv_of(batch_size), default=(1, 2, 4, 8, 16),
                   help="throughput batch sizes (a static-batch artifact uses its own)")
    g.add_argument("--streams", type=csv_of(thread_count), default=(1, 2),
                   help="parallel streams for throughput, each its own backend instance (default 1,2)")
    g.add_argument("--throughput-time", type=seconds, default=1.0, help="seconds per throughput cell; 0 skips")
    g.add_argument("--matmul-time", type=seconds, default=1.0, help="seconds for the GFLOP/s floor; 0 skips")
    g.add_argument("--images", type=Path, help="latency images (default: the bundled BUSI samples)")
    a = p.add_argument_group("accuracy")
    a.add_argument("--data", type=Path, help="official-layout dataset (images/, masks/0/) for Dice")
    a.add_argument("--split", type=Path, help="file of image names to use from --data")
    a.add_argument("--max-images", type=positive_int, help="use only the first N images of --data")
    a.add_argument("--reference", help="PyTorch source checkpoint (or a shipped model's name) for agreement (default: "
                   "the benchmarked checkpoint whose sha256 the artifact's metadata names)")
    o = p.add_argument_group("output")
    o.add_argument("--wide", action="store_true", help="print every column (default: the key columns, "
                   "fitted to the terminal width; --markdown FILE also has them all)")
    o.add_argument("--json", type=Path, help="write all results as JSON")
    o.add_argument("--markdown", type=Path, help="write the table as Markdown")
    o.add_argument("--plot", type=Path, help="write latency vs. Dice as PNG")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    x = p.add_argument_group("other modes")
    x.add_argument("--list-devices", action="store_true", help="list what each backend can use here")
    x.add_argument("--check-ort-overhead", action="store_true",
                   help="for each .onnx ARTIFACT, compare the bench's batch-1 p50 with a bare "
                        "onnxruntime InferenceSession.run loop (acceptance: within 15%%)")
    return add_debug(p)


def list_devices_text() -> str:
    from cmunext_edge.runtime.registry import BACKENDS, list_devices
    found = list_devices()
    lines = [f"{'backend':<14} {'install extra':<14} devices on this machine"]
    for e in BACKENDS:
        devs = found.get(e.name, [])
        lines.append(f"{e.name:<14} {e.extra:<14} {', '.join(devs) if devs else '(none: library missing or no device)'}")
    lines += capabilities_lines()
    return "\n".join(lines)


def capabilities_lines() -> list[str]:
    """The capability probe (CPU, ISA, native INT8/BF16/FP16, runtimes) as text lines."""
    from cmunext_edge.capabilities import detect
    d = detect().as_dict()
    ov, ort = d.get("openvino"), d.get("onnxruntime")
    return [f"CPU: {d['summary']}",
            f"  features: {' '.join(sorted(d['features'])) or '-'}",
            f"  OpenVINO CPU capabilities: {', '.join(ov['optimization_capabilities']) if ov else '(not installed)'}",
            f"  ONNX Runtime providers: {', '.join(ort['providers']) if ort else '(not installed)'}"]


def _ort_overhead(args) -> int:
    from cmunext_edge.bench import check_ort_overhead
    from cmunext_edge.artifacts.kinds import kind_of
    onnx = [p for p in (a.partition("@")[0] for a in args.artifacts) if getattr(kind_of(p), "name", None) == "onnx"]
    if not onnx:
        raise ValueError("--check-ort-overhead needs at least one .onnx ARTIFACT")
    results = [check_ort_overhead(p, iters=max(args.iters, 20), warmup=args.warmup, images=args.images)
               for p in onnx]
    for r in results:
        print(f"{r['artifact']}: bench p50 {r['bench_ms']['p50']:.3f} ms, plain onnxruntime p50 "
              f"{r['plain_ort_ms']['p50']:.3f} ms, ratio {r['ratio_p50']:.3f} "
              f"({'within' if r['within_tolerance'] else 'OUTSIDE'} ±{r['tolerance']:.0%})")
    if args.json:
        from cmunext_edge.bench.report import write_json
        write_json({"schema": "cmunext-bench/ort-overhead/1", "checks": results}, args.json)
    return 0


def _trust(artifacts, trusted_keys) -> str | None:
    """Under a trust policy, every artifact's signature before anything runs (-> the refusal);
    without one, one line saying which are unsigned."""
    from cmunext_edge.artifacts.integrity import VerifyReport, check_trust
    from cmunext_edge.artifacts.signing import trust_policy
    policy = trust_policy(trusted_keys)
    reports = [check_trust(a, policy, VerifyReport(str(a))) for a in artifacts]
    refused = [r.message() for r in reports if r.problems]
    if refused:
        return refused[0]
    if policy is None:
        print("note: signature: " + "; ".join(f"{Path(r.path).name} {r.signature}" for r in reports)
              + " (no trust policy: set --trusted-key or $CMUNEXT_TRUSTED_KEYS to require one)", file=sys.stderr)
    return None


def _reference_checkpoint(text) -> Path:
    """--reference as a checkpoint file: a shipped model's name becomes its file; anything that is
    not a PyTorch checkpoint file is refused before any row runs (ValueError)."""
    from cmunext_edge.artifacts.kinds import is_checkpoint
    from cmunext_edge.resources import resolve_weights
    try:
        path = resolve_weights(str(text))
    except FileNotFoundError as exc:
        raise ValueError(f"--reference: {exc}") from None
    if not path.is_file():
        raise ValueError(f"--reference {path}: no such file")
    if not is_checkpoint(path):
        raise ValueError(f"--reference {path}: not a PyTorch checkpoint file (.pth, .pt, .safetensors) "
                         f"or a shipped model's name")
    return path


def _input_files(rows, args) -> list[Path]:
    """Every file the run reads: artifacts with their companions, manifests and signatures, the
    reference checkpoint and the --data / --images files (a folder that cannot be read is refused
    later, by the bench itself)."""
    from cmunext_edge.artifacts.kinds import artifact_files
    from cmunext_edge.artifacts.manifest import manifest_path
    from cmunext_edge.artifacts.signing import signature_path
    from cmunext_edge.cli.preflight import sample_files
    from cmunext_edge.data.discovery import discover
    files = {Path(p) for p in (args.reference, args.split) if p}
    for r in rows:
        files.update(artifact_files(r.artifact))
        files.update({manifest_path(r.artifact.parent), signature_path(r.artifact)})
    for folder, split in ((args.data, args.split), (args.images, None)):
        try:
            files.update(sample_files(discover(folder, split)) if folder else ())
        except (ValueError, OSError):
            pass
    return sorted(files)


@cli_main(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        print(list_devices_text())
        return 0
    if not args.artifacts:
        return fail(PROG, "give at least one ARTIFACT (or --list-devices) (see cmunext-bench --help)")
    missing = [f"{option} {path}" for option, path in (("--images", args.images), ("--data", args.data),
                                                       ("--split", args.split)) if path and not path.exists()]
    if missing:                       # before any model loads or image is read
        return fail(PROG, f"{', '.join(missing)}: no such file or folder")
    from cmunext_edge.cli.preflight import check_distinct_outputs, check_output_file
    from cmunext_edge.runtime.base import DeviceUnavailableError
    for option, path in (("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)):
        problem = check_output_file(path, option)
        if problem:
            return fail(PROG, problem)
    try:
        if args.check_ort_overhead:
            return _ort_overhead(args)
        from cmunext_edge.bench import BenchConfig, run_bench
        from cmunext_edge.bench.report import format_table, write_json, write_markdown, write_plot
        options = {}
        for text in args.option:
            options.update(parse_options(text))
        rows = expand_rows(args.artifacts, args.device, args.precision, options, args.backend,
                           args.strict_device)
        missing = [str(r.artifact) for r in rows if not r.artifact.exists()]
        if missing:
            raise FileNotFoundError(f"no such artifact: {', '.join(sorted(set(missing)))}")
        if args.reference is not None:       # a shipped model's name, or a checkpoint file
            args.reference = _reference_checkpoint(args.reference)
        problem = check_distinct_outputs((("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)),
                                         _input_files(rows, args))
        if problem:
            return fail(PROG, problem)
        problem = _trust(sorted({r.artifact for r in rows}), args.trusted_key)
        if problem:
            return fail("cmunext-bench", problem)
        config = BenchConfig(rows, warmup=args.warmup, iters=args.iters, min_time_s=args.min_time,
                             batch_sizes=args.batch_sizes, streams=args.streams,
                             throughput_time_s=args.throughput_time, images=args.images, data=args.data,
                             split=args.split, max_images=args.max_images, reference=args.reference,
                             strict_device=args.strict_device, matmul_seconds=args.matmul_time,
                             progress=not args.quiet, verify=args.verify, trusted_keys=args.trusted_key)
        report = run_bench(config)
    except DeviceUnavailableError as exc:
        return fail(PROG, str(exc))
    except (ValueError, FileNotFoundError, ImportError) as exc:
        return fail(PROG, str(exc))
    failed = [r for r in report.rows if r.error]
    if failed and len(failed) == len(report.rows):     # nothing measured: no report files either; one line
        rows = "; ".join(f"{r.label}: {r.error}" for r in failed)
        return fail("cmunext-bench", f"every row failed ({rows}); nothing was measured, no report written")
    for r in failed:
        print(f"cmunext-bench: error: {r.label}: {printable(r.error)}", file=sys.stderr)
    print(format_table(report, wide=args.wide))
    unwritten = 0
    for path, writer in ((args.json, write_json), (args.markdown, write_markdown), (args.plot, write_plot)):
        if path:
            try:
                print(f"wrote {writer(report, path)}")
            except OSError as exc:       # the table above stands; the file is named, none half-written
                print(f"cmunext-bench: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
                unwritten += 1
    if report.skipped:
        print(f"cmunext-bench: {len(report.skipped)} input image(s) could not be used (unreadable, or ground truth "
              f"not usable) and were left out "
              f"(each named above)", file=sys.stderr)
    return 1 if failed or report.skipped or unwritten else 0


if __name__ == "__main__":
    sys.exit(main())
