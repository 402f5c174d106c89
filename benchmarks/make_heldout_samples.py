"""Write cmunext_edge/samples/busi-heldout/: the shipped model's 90 held-out validation images
(models/cmunext-s-busi.val.txt) from ../shared/data/busi-train, stored at the network size.

Each image is stored as the official preprocessing resizes it (grayscale, INTER_LINEAR to
256 x 256, lossless PNG) and each mask as the official code reads it at that size (nearest
resize, > 127, stored 0/255). Preprocessing a stored image with the shipped model's contract
(256 x 256) gives exactly the tensor the original gives (the resize to the same size is the
identity), and its stored mask is exactly the network-size ground truth, so agreement and Dice
against ground truth at 256 x 256 are unchanged. This script checks both for every image.

    .venv/bin/python benchmarks/make_heldout_samples.py [../shared/data/busi-train]
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmunext_edge.checkpoints.weights import load_checkpoint      # noqa: E402
from cmunext_edge.data.discovery import discover, read_name_list  # noqa: E402
from cmunext_edge.data.groundtruth import load_truth              # noqa: E402
from cmunext_edge.core.preprocess import load_image, to_bgr_uint8  # noqa: E402

OUT = ROOT / "cmunext_edge" / "samples" / "busi-heldout"
README = """# Held-out BUSI validation images of the shipped model

The {n} images of `models/cmunext-s-busi.val.txt`: the validation part of the shipped model's
split (`models/cmunext-s-busi.split.json`). The model never trained on them, but they chose its
epoch (best validation Dice), so they are held out from training, not entirely unseen. INT8
calibration of the shipped model uses the 16 bundled samples (`../busi`, a subset of these 90);
export verification leaves the calibration images out, so verification and calibration stay
disjoint.

Stored compactly at the network size (256 x 256, lossless PNG, grey where the original is grey; {size_kb} KiB in all):
each image as the official preprocessing resizes it (INTER_LINEAR), each mask as the official
code reads it at that size (nearest, > 127, stored 0/255). At 256 x 256 an export verifies on
exactly the tensors and ground truth the original files give (`benchmarks/make_heldout_samples.py`
checks every image); at another `--imgsz` the image is resized twice, so figures there are close
to, not identical with, those from the originals.

Source: W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, "Dataset of breast ultrasound images",
Data in Brief 28 (2020) 104863, https://doi.org/10.1016/j.dib.2019.104863. Research use only.
"""


def main(src: Path) -> int:
    spec = load_checkpoint(ROOT / "models" / "cmunext-s-busi.safetensors").spec
    names = read_name_list(ROOT / "models" / "cmunext-s-busi.val.txt")
    by_name = {s.name: s for s in discover(src)}
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    (OUT / "masks" / "0").mkdir(parents=True, exist_ok=True)
    for name in names:
        s = by_name[name]
        bgr = to_bgr_uint8(load_image(s.image))
        small = cv2.resize(bgr, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        if (small == small[..., :1]).all():       # grey stored as grey (a third of the size)
            small = small[..., 0]
        truth = load_truth(s, 1, spec.size)[0]
        cv2.imwrite(str(OUT / "images" / f"{name}.png"), small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        cv2.imwrite(str(OUT / "masks" / "0" / f"{name}.png"), truth.astype(np.uint8) * 255,
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
        stored = discover(OUT)
        again = next(x for x in stored if x.name == name)
        assert np.array_equal(spec(again.image), spec(s.image)), f"{name}: input tensor differs"
        assert np.array_equal(load_truth(again, 1, spec.size)[0], truth), f"{name}: mask differs"
    (OUT / "samples.txt").write_text("\n".join(names) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*.png"))
    (OUT / "README.md").write_text(README.format(n=len(names), size_kb=round(size / 1024)))
    print(f"{len(names)} images + masks, {size / 1024:.0f} KiB, identical tensors and ground truth at "
          f"{spec.height} x {spec.width}: {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "busi-train"))
