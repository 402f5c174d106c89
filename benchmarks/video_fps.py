"""End-to-end video frames/s per backend: decode + preprocess + inference + postprocess + writing
(overlay.mp4 and per-frame PNG masks), as `cmunext-predict clip.mp4` runs it, for a 256x256 and a
640x480 clip made from the bundled samples. Run it on a quiet machine:

    .venv/bin/python benchmarks/video_fps.py cmunext-s-busi exports/cmunext-s-busi_fp32.onnx \
        exports/cmunext-s-busi_fp32.xml --frames 300 --markdown benchmarks/results/video_fps.md

Each artifact runs each clip `--repeats` times (the best run is kept, after one warm-up run of
10 frames); every run must account for every frame or the script fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmunext_edge.capabilities import detect  # noqa: E402
from cmunext_edge.resources import SAMPLES_DIR  # noqa: E402
from cmunext_edge.runtime.segmenter import EdgeSegmenter  # noqa: E402
from cmunext_edge.predict.video import segment_video  # noqa: E402

SIZES = ((256, 256), (640, 480))


def make_clip(path: Path, size, frames: int) -> Path:
    """A clip of the bundled samples, each shown for 4 frames with a small horizontal drift."""
    images = sorted((SAMPLES_DIR / "images").glob("*.png"))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    for i in range(frames):
        w.write(np.roll(cv2.resize(cv2.imread(str(images[(i // 4) % len(images)])), size), 3 * (i % 4), axis=1))
    w.release()
    return path


def measure(artifact: str, clip: Path, repeats: int, batch_size: int, device: str) -> dict:
    seg = EdgeSegmenter(artifact, device=device)
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        segment_video(seg, clip, Path(tmp) / "warm", max_frames=10)
        for r in range(repeats):
            s = segment_video(seg, clip, Path(tmp) / f"run{r}", batch_size=batch_size)
            if not s.frames_decoded == s.frames_written == s.declared_frames:
                raise RuntimeError(f"{artifact} on {clip.name}: {s.frames_decoded} decoded, "
                                   f"{s.frames_written} written of {s.declared_frames}")
            best = s if best is None or s.frames_per_s > best.frames_per_s else best
    d = seg.describe()
    seg.close()
    return {"artifact": artifact, "backend": d["backend"], "device": d["device"], "precision": d["precision"],
            "clip": clip.name, "frames": best.frames_decoded, "seconds": round(best.seconds, 3),
            "frames_per_s": round(best.frames_per_s, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+", help="checkpoints / exported artifacts / shipped model names")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = [make_clip(Path(tmp) / f"clip_{w}x{h}.mp4", (w, h), args.frames) for w, h in SIZES]
        for artifact in args.artifacts:
            for clip in clips:
                rows.append(measure(artifact, clip, args.repeats, args.batch_size, args.device))
                print(json.dumps(rows[-1]))
    caps = detect()
    machine = {"cpu": caps.summary(), "cores": os.cpu_count(),
               "load_average_before": load0, "load_average_after": os.getloadavg(),
               "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv)}
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    if args.markdown:
        lines = ["# Video frames/s, end to end (decode, inference, overlay.mp4 + PNG masks)", "",
                 f"- {machine['date']}, {machine['cpu']}, {machine['cores']} cores, load average before "
                 f"{', '.join(f'{x:.2f}' for x in load0)}; command: `{machine['command']}`", "",
                 "| artifact | backend/device/precision | clip | frames | s | frames/s |", "|---|---|---|---:|---:|---:|"]
        lines += [f"| {r['artifact']} | {r['backend']}/{r['device']}/{r['precision']} | {r['clip']} | "
                  f"{r['frames']} | {r['seconds']} | {r['frames_per_s']} |" for r in rows]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
