"""What DICOM costs per image against the PNG path: decode (file -> BGR uint8) and output
(DICOM SEG vs PNG mask), on the ultrasound objects built from the bundled BUSI samples
(cmunext_edge/data/dicom_sample.py: 576x448, RGB/MONOCHROME2, uncompressed/JPEG baseline, a
3-frame cine loop). Both sides are measured in the same run, alternating, median of `--rounds`.

  .venv/bin/python benchmarks/dicom_io.py --rounds 30 --out benchmarks/results/dicom_io_<date>
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import python, rel  # noqa: E402

from cmunext_edge.capabilities import detect  # noqa: E402
from cmunext_edge.core.preprocess import load_image  # noqa: E402
from cmunext_edge.core import dicom  # noqa: E402
from cmunext_edge.data.dicom_sample import write_ultrasound_dicoms  # noqa: E402
from cmunext_edge.predict.dicom_seg import SegOptions, build_seg  # noqa: E402
from cmunext_edge.runtime.algorithm import algorithm_of  # noqa: E402


def ms(fn, rounds: int, other) -> tuple[float, float]:
    """Median ms of fn and of other, alternating calls (same conditions for both)."""
    a, b = [], []
    for _ in range(rounds):
        for fun, acc in ((fn, a), (other, b)):
            t = time.perf_counter()
            fun()
            acc.append((time.perf_counter() - t) * 1e3)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", type=Path, required=True, help="results path without suffix")
    args = p.parse_args()
    rows = []
    algo = algorithm_of(None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_ultrasound_dicoms(folder)
        cases = [("us_rgb", None), ("us_mono", None), ("us_rgb_jpeg", None), ("us_mono_jpeg", None), ("us_cine", 1)]
        for name, frame in cases:
            path = folder / f"{name}.dcm"
            bgr = load_image(path, frame=frame)
            png = folder / f"{name}.bench.png"
            cv2.imwrite(str(png), bgr)                # the same pixels (decoded) as a PNG
            dicom._cached_header.cache_clear()
            dcm_ms, png_ms = ms(lambda: (dicom._cached_header.cache_clear(), load_image(path, frame=frame)),
                                args.rounds, lambda: load_image(png))
            header = dicom.read_header(path)
            frames = int(header.get("NumberOfFrames", 1) or 1)
            mask = np.zeros((frames, *bgr.shape[:2], 1), bool)
            mask[:, 100:250, 150:350] = True

            def seg():
                buf = BytesIO()
                build_seg([header], mask, SegOptions(), algo).save_as(buf)

            def png_masks():
                for k in range(frames):
                    (folder / f"m{k}.png").write_bytes(cv2.imencode(".png", mask[k, ..., 0].astype(np.uint8) * 255)[1])
            seg_ms, mask_ms = ms(seg, args.rounds, png_masks)
            rows.append({"object": name, "transfer_syntax": header.file_meta.TransferSyntaxUID.name,
                         "photometric": str(header.PhotometricInterpretation), "frames": frames,
                         "size": f"{bgr.shape[1]}x{bgr.shape[0]}", "decode_dicom_ms": round(dcm_ms, 3),
                         "decode_png_ms": round(png_ms, 3), "seg_write_ms_per_object": round(seg_ms, 3),
                         "png_masks_write_ms_per_object": round(mask_ms, 3)})
    caps = detect()
    record = {"command": f"{python()} benchmarks/dicom_io.py --rounds {args.rounds} --out {rel(args.out)}",
              "cpu": caps.model, "note": "2-core machine shared with other engineers; medians of "
              "alternating rounds; decode_dicom includes re-reading the header (cache cleared)",
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    lines = [f"# DICOM decode and SEG write vs the PNG path", "", f"command: `{record['command']}`  ",
             f"CPU: {record['cpu']} ({record['note']})", "",
             "| object | transfer syntax | photometric | frames | DICOM decode ms (one frame) | PNG decode ms | "
             "SEG write ms (object) | PNG masks write ms (object) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['object']} | {r['transfer_syntax']} | {r['photometric']} | {r['frames']} | {r['decode_dicom_ms']} "
              f"| {r['decode_png_ms']} | {r['seg_write_ms_per_object']} | {r['png_masks_write_ms_per_object']} |"
              for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
