"""Agreement of the C++ EdgeSegmenter's masks on emulated ARM (arm_embed.sh) with `cmunext-predict`
on this host, for the same artifact and images: per-image official Dice between the 0/255 masks at
the image's size, with n, mean, p5, worst, images below 0.90 and the 95% bounds
(cmunext_edge.core.agreement.distribution), judged against the precision's mean floor. Emulated
times are printed as what they are (QEMU user mode), never as speeds.

    .venv/bin/python benchmarks/devices/embed_agreement.py --out benchmarks/results/embed_arm_<date>
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmunext_edge.artifacts.manifest import calibration_files  # noqa: E402
from cmunext_edge.capabilities import detect  # noqa: E402
from cmunext_edge.core.agreement import GATES, distribution  # noqa: E402
from make_bundles import MATRIX  # noqa: E402  (artifact name -> (target, precision))
from cmunext_edge.core.metrics import iou_dice  # noqa: E402

WORK = Path(os.environ.get("CMUNEXT_DEVICE_WORK", Path.home() / ".cache" / "cmunext-edge" / "devices"))


def runs(summary: Path) -> list[dict]:
    """The arm_embed.sh runs, latest per (cpu, artifact): rc, cpu, artifact, entry, images."""
    latest = {}
    for line in summary.read_text().splitlines():
        row = dict(kv.split("=", 1) for kv in line.split())
        latest[(row["cpu"], row["artifact"])] = row
    return list(latest.values())


def host_masks(artifact: str, entry: str, images: Path) -> Path:
    """cmunext-predict's masks on this host for the artifact (made once per artifact and images)."""
    return predict_masks(str(WORK / "exports" / artifact / entry), artifact, images)


def predict_masks(weights: str, label: str, images: Path) -> Path:
    """cmunext-predict's masks on this host for `weights` (an artifact, or a checkpoint: PyTorch)."""
    out = WORK / "embed" / "host-predict" / f"{label}-{images.parent.name}-{images.name}"   # busi/images != busi-heldout/images
    if not (out / "masks").is_dir():
        subprocess.run([sys.executable, "-m", "cmunext_edge.cli.predict", str(images), "--weights",
                        weights, "--out", str(out), "--quiet"], check=True)
    return out / "masks"


def image_set(artifact: str, entry: str, images: Path) -> dict:
    """Which images a run used and how many of them calibrated the artifact (its manifest entry)."""
    calib = calibration_files(WORK / "exports" / artifact / entry)
    stems = {f.stem for f in images.iterdir() if f.is_file()}
    return {"folder": str(images.relative_to(ROOT)) if images.is_relative_to(ROOT) else str(images),
            "n": len(stems), "calibrated_the_artifact": len(stems & {Path(c).stem for c in calib})}


def agreement(arm: Path, host: Path) -> tuple[dict, list[str]]:
    scores, names, problems, identical = [], [], [], 0
    for ref in sorted(host.glob("*.png")):
        got = cv2.imread(str(arm / ref.name), cv2.IMREAD_UNCHANGED)
        want = cv2.imread(str(ref), cv2.IMREAD_UNCHANGED)
        if got is None or got.shape != want.shape:
            problems.append(f"{ref.name}: {'missing' if got is None else f'shape {got.shape} != {want.shape}'}")
            scores.append(0.0)
        else:
            scores.append(iou_dice(got > 127, want > 127)[1])
            identical += int(np.array_equal(got, want))
        names.append(ref.stem)
    return {**distribution(scores, names), "n_identical": identical}, problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="record path without suffix (.md and .json are written)")
    p.add_argument("--artifacts", nargs="+", metavar="NAME", help="only these artifacts' runs (default: all)")
    p.add_argument("--versus-pytorch", metavar="CHECKPOINT", help="also compare the ARM masks and the host "
                   "artifact's with PyTorch FP32 of this checkpoint (e.g. cmunext-s-busi): what the export gate "
                   "measured on the host, at the image's size")
    args = p.parse_args(argv)
    rows = []
    for run in sorted(runs(WORK / "embed" / "summary.txt"), key=lambda r: (r["artifact"], r["cpu"])):
        if args.artifacts and run["artifact"] not in args.artifacts:
            continue
        arm = WORK / "embed" / run["cpu"] / run["artifact"]
        row = {"cpu": run["cpu"], "artifact": run["artifact"], "entry": run["entry"], "exit": int(run["rc"]),
               "images": image_set(run["artifact"], run["entry"], Path(run["images"]))}
        times = arm / "times.json"
        if times.is_file():
            row["emulated_times"] = json.loads(times.read_text())
        if row["exit"] == 0:
            host = host_masks(run["artifact"], run["entry"], Path(run["images"]))
            row["agreement"], row["problems"] = agreement(arm / "masks", host)
            row["floor"] = GATES[MATRIX[run["artifact"]][1]].mean
            row["passed"] = row["agreement"]["mean"] >= row["floor"] and not row["problems"]
            if args.versus_pytorch:
                torch_masks = predict_masks(args.versus_pytorch, "pytorch-" + Path(args.versus_pytorch).stem,
                                            Path(run["images"]))
                row["arm_vs_pytorch"] = agreement(arm / "masks", torch_masks)[0]
                row["host_vs_pytorch"] = agreement(host, torch_masks)[0]
        else:
            row["log_tail"] = (arm / "run.log").read_text()[-600:] if (arm / "run.log").is_file() else ""
        rows.append(row)
    record = {"date": time.strftime("%Y-%m-%d"), "host": detect().summary(), "rows": rows,
              "versus_pytorch": args.versus_pytorch}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    return 0 if rows and all(r.get("passed") for r in rows) else 1


def _dist(a: dict) -> str:
    return (f"{a['mean']:.4f} / {a['p5']:.4f} / {a['worst']:.4f} ({a['worst_image']}) / {a['n_bad']} "
            f"({a['bad_share_upper95']:.1%})")


def markdown(record: dict) -> str:
    lines = [f"# C++ EdgeSegmenter on emulated ARM vs cmunext-predict on the host ({record['date']})", "",
             f"Host: {record['host']}. The arm64 build ran inside a Debian bookworm root under QEMU user mode "
             "(benchmarks/devices/arm_embed.sh); **emulated times are not speeds**. Agreement: per-image official "
             "Dice between the C++ mask on the emulated CPU and `cmunext-predict`'s mask on the host, same artifact "
             "and images, at the image's size. Images (column): `cmunext_edge/samples/busi` holds the 16 bundled "
             "samples, `busi-heldout` all 90 of the shipped model's validation images; both are held out from its "
             "training; make_bundles.py calibrates its INT8 artifacts with the export's default (since 2026-12-05: 64 "
             "of the model's training images, cmunext_edge/samples/busi-calib; before: the 16 bundled samples) ('calibrated': "
             "how many of a row's images calibrated its artifact). 16 images say nothing about the tail.", "",
             "| artifact | emulated CPU | images (calibrated) | exit | n | identical masks | mean | p5 | worst (image) "
             "| below 0.90 (95% bound) | floor | passed |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in record["rows"]:
        a, im = r.get("agreement"), r["images"]
        head = f"| {r['artifact']} ({r['entry']}) | {r['cpu']} | {im['folder']} ({im['calibrated_the_artifact']}) | {r['exit']}"
        if a:
            lines.append(f"{head} | {a['n']} | {a['n_identical']} | {a['mean']:.4f} | {a['p5']:.4f} | "
                         f"{a['worst']:.4f} ({a['worst_image']}) | {a['n_bad']} ({a['bad_share_upper95']:.1%}) | "
                         f"{r['floor']} | {r['passed']} |")
        else:
            lines.append(f"{head} | - | - | - | - | - | - | - | False |")
    versus = [r for r in record["rows"] if "arm_vs_pytorch" in r]
    if versus:
        lines += ["", "Against PyTorch FP32 (`--versus-pytorch`: cmunext-predict of the checkpoint on the host, same "
                  "images, at the image's size; what the export gate measures):", "",
                  "| artifact | emulated CPU | ARM vs PyTorch: mean / p5 / worst (image) / below 0.90 (95% bound) "
                  "| host artifact vs PyTorch: same |", "|---|---|---|---|"]
        lines += [f"| {r['artifact']} | {r['cpu']} | {_dist(r['arm_vs_pytorch'])} | {_dist(r['host_vs_pytorch'])} |"
                  for r in versus]
    lines += ["", "What each emulated load reported (`describe()`: integrity and self-test before the first image):", ""]
    lines += [f"- {r['artifact']} on {r['cpu']}: `{r['emulated_times']['describe'].split(': ', 1)[-1]}`"
              for r in record["rows"] if "describe" in r.get("emulated_times", {})]
    problems = [f"- {r['artifact']} on {r['cpu']}: {p}" for r in record["rows"] for p in r.get("problems", [])]
    failures = [f"- {r['artifact']} on {r['cpu']} (exit {r['exit']}): `{r['log_tail'].strip()[-300:]}`"
                for r in record["rows"] if "log_tail" in r]
    arts = " ".join(sorted({r["artifact"] for r in record["rows"]}))
    commands = ["", "Commands (repository root, as root):", "", "```",
                ".venv/bin/python benchmarks/devices/make_bundles.py   # the artifacts (and bundles)",
                *[f'CMUNEXT_EMBED_ARTIFACTS="{arts}" CMUNEXT_EMBED_IMAGES={folder} benchmarks/devices/arm_embed.sh'
                  for folder in sorted({r["images"]["folder"] for r in record["rows"]})],
                f".venv/bin/python benchmarks/devices/embed_agreement.py --artifacts {arts} "
                + (f"--versus-pytorch {record['versus_pytorch']} " if record.get("versus_pytorch") else "") + "--out benchmarks/results/embed_arm_<date>",
                "```"]
    return "\n".join(lines + ([""] + problems if problems else []) + ([""] + failures if failures else [])
                     + commands) + "\n"


if __name__ == "__main__":
    sys.exit(main())
