"""cmunext-check: prove a device bundle on the device it was copied to.

Verifies the sha256 of every bundle file and the preprocessing contract, runs the artifact's
self-test, compares its outputs with the export host's and with ground truth, times a short
benchmark and writes device_report.json; checks the installed packages against the bundle's SBOM.
With --trusted-key (or $CMUNEXT_TRUSTED_KEYS) the bundle and its artifact must be signed by a
trusted key. Needs numpy, OpenCV and the artifact's runtime only (and the `sign` extra for a trust
policy)."""
from __future__ import annotations

import sys
from pathlib import Path

from cmunext_edge.core.agreement import NEAR_MISS_LOGIT
from cmunext_edge.device.bundle import BundleError
from cmunext_edge.cli.common import cli_main, device_name, fail, input_path, make_parser, nonnegative_int, positive_int

EXAMPLE = """examples:
  cmunext-check exports/cmunext-s-busi_fp32.bundle
  cmunext-check cmunext-s-busi_fp32.bundle.tar.gz --device GPU --iters 50
  cmunext-check bundle/ --iters 2 --warmup 1 --emulated "QEMU user-mode, QEMU_CPU=cortex-a72"
  cmunext-check cmunext-s-busi_fp32.bundle --trusted-key release.pub.pem

exit codes: 0 every check holds; 1 a check failed (the first failure is printed on one line);
2 usage error, not a bundle (or its bundle.json damaged or edited), or refused by the trust policy
(unsigned, another key, changed);
130 interrupted (Ctrl-C), 143 terminated (SIGTERM, e.g. by `timeout`): the report is still written,
marked "interrupted", with the steps done and the images of the interrupted step that finished
(never called passed or verified). Under emulation the times are not speeds (say so with --emulated)."""


def build_parser():
    p = make_parser("cmunext-check", __doc__, EXAMPLE)
    p.add_argument("bundle", type=input_path, help="bundle folder or .bundle.tar.gz (checked in a new staging folder, then "
                                  "kept beside it under its folder name, or NAME-2, ... when that exists)")
    p.add_argument("--device", type=device_name, default="cpu", help="device to run on (cpu; GPU/NPU/AUTO for OpenVINO; cuda)")
    p.add_argument("--iters", type=positive_int, default=20, help="timed batch-1 inferences (default 20)")
    p.add_argument("--warmup", type=nonnegative_int, default=3, help="untimed inferences first (default 3)")
    p.add_argument("--images", type=positive_int, help="use only the first N verification images (slow devices, "
                                              "emulation; default all)")
    p.add_argument("--label", help="name of this device in reports (default: its CPU and architecture)")
    p.add_argument("--emulated", metavar="NOTE", help="mark the run as emulated (times are not speeds)")
    p.add_argument("--report", help="where to write the report (default BUNDLE/device_report.json; never a "
                                    "file of the bundle, an archive or a trusted key: checked before the check runs)")
    p.add_argument("--quiet", action="store_true", help="print only the verdict line")
    p.add_argument("--progress", action="store_true", help="per-image progress with ETA on stderr (slow "
                   "devices, emulation; a line about every 10%% in logs)")
    p.add_argument("--trusted-key", action="append", metavar="PUB.pem", help="trust policy: the bundle and its "
                   "artifact must be signed by this key (repeat for several; default $CMUNEXT_TRUSTED_KEYS)")
    return p


@cli_main("cmunext-check")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from cmunext_edge.artifacts.signing import TrustPolicyError
    from cmunext_edge.device.check import run_check, write_report
    problem = check_report(args)
    if problem:
        return fail("cmunext-check", problem)
    try:
        report = run_check(args.bundle, device=args.device, warmup=args.warmup, iters=args.iters,
                           label=args.label, emulated=args.emulated, max_images=args.images,
                           trusted_keys=args.trusted_key, progress=args.progress and not args.quiet)
    except (BundleError, TrustPolicyError, ImportError) as exc:
        return fail("cmunext-check", str(exc))
    except KeyboardInterrupt as exc:        # the partial report first; the exit code stays 130/143
        partial = getattr(exc, "report", None)
        if partial is not None and _report_path(args, partial) is not None:
            path = write_report(partial, _report_path(args, partial))
            print(f"cmunext-check: interrupted during {partial['interrupted']['step']}; partial report: {path}"
                  f"\n  {summary(partial)}", file=sys.stderr)
        raise
    path = _report_path(args, report)
    if path is not None:          # None: an archive refused by the trust policy (nothing kept)
        path = write_report(report, path)
    if report.get("refused"):     # refused before anything ran: one line (the report says the rest)
        return fail("cmunext-check", report["refused"])
    if not args.quiet:
        for c in report["checks"]:
            print(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']:<24} {c['message'] if not c['passed'] else ''}")
        print(summary(report))
        if report["bundle"].get("archive") and report["bundle"].get("path"):
            print(f"extracted: {report['bundle']['archive']} -> {report['bundle']['path']}")
    if not report["passed"]:
        print(f"cmunext-check: FAILED: {report['first_failure']}", file=sys.stderr)
        return 1
    print(f"cmunext-check: PASSED ({report['label']}); report: {path}")
    return 0


def _report_path(args, report: dict) -> Path | None:
    if args.report is not None:
        return Path(args.report)
    folder = report["bundle"].get("path")
    return Path(folder) / "device_report.json" if folder else None


def check_report(args) -> str | None:
    """Why --report cannot be written, before the check runs (an empty value, a folder, a folder
    that cannot be made), or why it would replace what the check reads: a file of the bundle
    (bundle.json, its .sha256, bundle.sig, any file bundle.json lists, anything under artifact/),
    the archive, or a trusted key. None when it can be written."""
    import os
    from cmunext_edge.artifacts.signing import ENV_VAR
    from cmunext_edge.cli.preflight import check_distinct_outputs, check_output_file
    from cmunext_edge.device.check import bundle_inputs, is_archive
    if args.report is None:
        return None
    problem = check_output_file(args.report, "--report")
    if problem:
        return problem
    keys = args.trusted_key or [k for k in os.environ.get(ENV_VAR, "").split(os.pathsep) if k.strip()]
    problem = check_distinct_outputs([("--report", args.report)], [*bundle_inputs(args.bundle), *keys])
    if problem:
        return problem.replace("is an input of this run", "is a file this check reads")
    bundle = Path(args.bundle)
    if bundle.is_dir() and not is_archive(bundle):
        report = Path(args.report).resolve()
        if report.is_relative_to((bundle / "artifact").resolve()):
            return (f"--report {args.report} lies in the bundle's artifact/ folder (a file there that the "
                    f"bundle does not list fails the check); write it elsewhere")
    return None


def summary(report: dict) -> str:
    ran, agr, dice, lat = (report.get(k) or {} for k in ("ran", "agreement", "dice", "latency_ms"))
    b = report["bundle"]
    parts = [f"{b['backend'] or '(no backend named)'} {b['precision'] or '(no precision named)'} artifact ran on "
             f"{ran.get('device', '?')} at {ran.get('precision', '?')}", f"bundle {report.get('signature')}"]
    sb = report.get("sbom")
    if sb:
        model = sb.get("model") or {}
        parts.append(f"SBOM (CycloneDX {sb['spec_version']}): {sb['packages']} packages installed as listed, "
                     f"{len(sb['extra'])} installed not listed; model {model.get('name')} sha256 "
                     f"{str(model.get('sha256'))[:12]}, source checkpoint {str(model.get('source_checkpoint_sha256'))[:12]}")
    if agr:
        done = f" (interrupted: {agr['images']} of {agr['images_planned']} images)" if agr.get("interrupted") else ""
        parts.append(f"agreement with host on its inputs{done} {agr['mask_dice_mean']:.4f} ({agr['identical_masks']}/"
                     f"{agr['images']} masks identical, max logit delta {agr['max_abs_logit_delta']:.3g}; "
                     f"{'' if agr.get('verified') else 'NOT verified for the tail: '}{agr.get('claim') or '-'})")
        if agr.get("per_class_mask_dice"):
            parts.append("per class agreement " + ", ".join(f"{k}: {v:.4f}" for k, v in enumerate(agr["per_class_mask_dice"])))
        if agr.get("n_near_misses"):
            first = agr["near_misses"][0]
            parts.append(f"{agr['n_near_misses']} near miss(es): both masks empty, device's largest logit within "
                         f"{NEAR_MISS_LOGIT} of the threshold (first: {first['image']} {first['max_logit']:+.3f})")
    e2e = report.get("end_to_end")
    if e2e:
        done = f"; interrupted: {e2e['images']} of {e2e['images_planned']} images" if e2e.get("interrupted") else ""
        parts.append(f"end to end (device preprocessing, {100 * e2e['input_values_differing']:.1f}% of input "
                     f"values differ from the host's{done}) {e2e['mask_dice_mean']:.4f}")
    if dice:
        parts.append(f"Dice {dice['device']:.4f} (host {dice['host']:.4f})")
        if dice.get("per_class_device"):
            parts.append("per class Dice " + ", ".join(f"{k}: {d:.4f} (host {h:.4f})" for k, (d, h) in enumerate(
                zip(dice["per_class_device"], dice["per_class_host"]))))
    if lat:
        parts.append(f"p50 {lat['p50']:.2f} ms" + (" (emulated: not a speed)" if report.get("emulated") else ""))
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
