"""Export the shipped model to the device matrix's artifacts, bundle each, and check every bundle
on this machine (the host row of the device table).

    python benchmarks/devices/make_bundles.py            # then: sudo benchmarks/devices/arm_matrix.sh

Artifacts: ONNX Runtime FP32 (ONNX), ONNX Runtime INT8 (QDQ), OpenVINO FP32, OpenVINO FP16 IR
(runs at the device's default inference precision: f32 on most x86, f16 on ARM) and OpenVINO INT8.
Bundles go to $CMUNEXT_DEVICE_WORK/bundles (default ~/.cache/cmunext-edge/devices), host reports to
reports/host/. --only NAME,... picks a subset.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from cmunext_edge.device.bundle import make_bundle
from cmunext_edge.device.check import run_check, write_report
from cmunext_edge.export.pipeline import export
from cmunext_edge.export.targets import get_target
from cmunext_edge.export.verify import VerificationError

WORK = Path(os.environ.get("CMUNEXT_DEVICE_WORK", Path.home() / ".cache" / "cmunext-edge" / "devices"))
# name -> (target, precision): the artifacts of the device matrix
MATRIX = {"ort-fp32": ("onnx", "fp32"), "ov-fp32": ("openvino", "fp32"), "ov-fp16": ("openvino", "fp16"),
          "ov-int8": ("openvino", "int8"), "ort-int8": ("onnxruntime", "int8")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="cmunext-s-busi", help="shipped model name or checkpoint")
    p.add_argument("--only", help="comma list of " + ", ".join(MATRIX))
    p.add_argument("--calib", help="INT8 calibration images (default: the export's, 64 of the shipped model's training images)")
    p.add_argument("--label", default=None, help="label of this machine in the reports")
    p.add_argument("--n-images", type=int, default=None,
                   help="held-out images each bundle carries (default: what the precision's tail claim needs, 49)")
    p.add_argument("--reuse-exports", action="store_true", help="bundle the artifacts already exported there")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(MATRIX)
    (WORK / "bundles").mkdir(parents=True, exist_ok=True)
    (WORK / "reports" / "host").mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        target, precision = MATRIX[name]
        out = WORK / "exports" / name
        artifact = out / f"cmunext-s-busi_{name}{get_target(target).suffix}"
        if not (args.reuse_exports and artifact.is_file()):
            shutil.rmtree(out, ignore_errors=True)
            try:
                artifact = export(args.weights, target=target, precision=precision, out=out, name=artifact.stem,
                                  calib=args.calib if precision == "int8" else None).artifact
            except VerificationError as exc:     # refused by its gate on this host: nothing to bundle
                print(f"{name}: export refused on the host: {exc}")
                failed.append(name)
                continue
        bundle = make_bundle(artifact, WORK / "bundles", n_images=args.n_images)
        report = run_check(bundle.folder, iters=20, warmup=3, label=args.label)
        write_report(report, WORK / "reports" / "host" / f"{name}.json")
        print(f"{name}: bundle {bundle.folder}: host check {'PASSED' if report['passed'] else 'FAILED'}"
              f" (ran {report.get('ran', {}).get('precision')})" + ("" if report["passed"] else
                                                                   f": {report['first_failure']}"))
        if not report["passed"]:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
