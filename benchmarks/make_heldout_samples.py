"""Write the shipped model's image sets at the network size, from ../shared/data/busi-train:

- cmunext_edge/samples/busi-heldout/: its held-out validation images (models/cmunext-s-busi.val.txt)
  that are not near copies of its training images (data/fingerprint.py: 64 of the 90; BUSI holds
  several copies of some scans), the default export verification set;
- cmunext_edge/samples/busi-calib/: 64 of its 362 training images (the product's seeded sampler,
  seed 0, over the split's "train" list), the default INT8 calibration set. Calibrating on training
  images leaves all held-out images to verification (benchmarks/int8_notes.md, "Calibration on
  training images").

Each image is stored as the official preprocessing resizes it (grayscale, INTER_LINEAR to
256 x 256, lossless PNG) and each mask as the official code reads it at that size (nearest
resize, > 127, stored 0/255). Preprocessing a stored image with the shipped model's contract
(256 x 256) gives exactly the tensor the original gives (the resize to the same size is the
identity), and its stored mask is exactly the network-size ground truth, so agreement and Dice
against ground truth at 256 x 256 are unchanged. This script checks both for every image.

    .venv/bin/python benchmarks/make_heldout_samples.py [../shared/data/busi-train]
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmunext_edge.checkpoints.weights import load_checkpoint      # noqa: E402
from cmunext_edge.data.discovery import discover, read_name_list, seeded_sample  # noqa: E402
from cmunext_edge.data.groundtruth import load_truth              # noqa: E402
from cmunext_edge.data.model_split import training_images        # noqa: E402
from cmunext_edge.core.preprocess import load_image, to_bgr_uint8  # noqa: E402

SAMPLES = ROOT / "cmunext_edge" / "samples"
SPLIT = ROOT / "models" / "cmunext-s-busi.split.json"
CALIB_SIZE, CALIB_SEED = 64, 0
README_HELDOUT = """# Held-out BUSI validation images of the shipped model

{n} of the {n_val} images of `models/cmunext-s-busi.val.txt`, the validation part of the shipped model's
split (`models/cmunext-s-busi.split.json`). The other {n_near} are near copies of its training images
(the same scan with or without calipers, or cropped a few pixels differently; BUSI holds several
copies of some scans): their look-alike hashes lie within 6 of 64 bits of a training image's
(`cmunext_edge/data/fingerprint.py`), so they are left out. The model never trained on these {n}, but
they chose its epoch (best validation Dice), so they are held out from training, not entirely unseen.
INT8 calibration of the shipped model uses 64 of its training images (`../busi-calib`), so all {n} stay
for verification; a `--calib` folder that shares images with these is left out of verification,
so verification and calibration stay disjoint.

Stored compactly at the network size (256 x 256, lossless PNG, grey where the original is grey; {size_kb} KiB in all):
each image as the official preprocessing resizes it (INTER_LINEAR), each mask as the official
code reads it at that size (nearest, > 127, stored 0/255). At 256 x 256 an export verifies on
exactly the tensors and ground truth the original files give (`benchmarks/make_heldout_samples.py`
checks every image); at another `--imgsz` the image is resized twice, so figures there are close
to, not identical with, those from the originals.

Source: W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, "Dataset of breast ultrasound images",
Data in Brief 28 (2020) 104863, https://doi.org/10.1016/j.dib.2019.104863. Research use only.
"""


README_CALIB = """# INT8 calibration images of the shipped model

{n} of the 362 training images of the shipped model's split (`models/cmunext-s-busi.split.json`,
"train"), drawn by the product's seeded sampler (seed {seed}): the default `--calib` of
`cmunext-export --int8` and of `--target auto`. The model trained on them; they only set the INT8
quantization ranges. Calibrating on training images leaves all held-out validation images
(`../busi-heldout`) to verification. Masks are stored for NNCF accuracy control, which scores Dice
on the calibration images.

Stored like `../busi-heldout` ({size_kb} KiB in all): at the network size (256 x 256, lossless PNG,
grey where the original is grey), each image as the official preprocessing resizes it, each mask as
the official code reads it at that size; the input tensors are exactly those of the original files
(`benchmarks/make_heldout_samples.py` checks every image).

Source: W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, "Dataset of breast ultrasound images",
Data in Brief 28 (2020) 104863, https://doi.org/10.1016/j.dib.2019.104863. Research use only.
"""

def write_set(src: Path, names: list[str], out: Path, spec) -> int:
    """Each named image (and mask) of `src` at network size into `out`; checked; total bytes."""
    by_name = {s.name: s for s in discover(src)}
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks" / "0").mkdir(parents=True, exist_ok=True)
    for name in names:
        s = by_name[name]
        bgr = to_bgr_uint8(load_image(s.image))
        small = cv2.resize(bgr, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        if (small == small[..., :1]).all():       # grey stored as grey (a third of the size)
            small = small[..., 0]
        truth = load_truth(s, 1, spec.size)[0]
        cv2.imwrite(str(out / "images" / f"{name}.png"), small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        cv2.imwrite(str(out / "masks" / "0" / f"{name}.png"), truth.astype(np.uint8) * 255,
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    stored = {x.name: x for x in discover(out)}
    for name in names:
        s = by_name[name]
        assert np.array_equal(spec(stored[name].image), spec(s.image)), f"{name}: input tensor differs"
        assert np.array_equal(load_truth(stored[name], 1, spec.size)[0], load_truth(s, 1, spec.size)[0]), \
            f"{name}: mask differs"
    (out / "samples.txt").write_text("\n".join(names) + "\n")
    return sum(f.stat().st_size for f in out.rglob("*.png"))


def calibration_names(src: Path) -> list[str]:
    """The default calibration draw: CALIB_SIZE of the split's training images, seed CALIB_SEED."""
    train = set(json.loads(SPLIT.read_text())["train"])
    return [s.name for s in seeded_sample([s for s in discover(src) if s.name in train], CALIB_SIZE, CALIB_SEED)]


def heldout_names(src: Path) -> tuple[list[str], list[str]]:
    """(validation names that are not near copies of training images, those that are)."""
    val = read_name_list(ROOT / "models" / "cmunext-s-busi.val.txt")
    near = training_images([s for s in discover(src) if s.name in set(val)], SPLIT)
    return [n for n in val if n not in near], sorted(near)


def main(src: Path) -> int:
    spec = load_checkpoint(ROOT / "models" / "cmunext-s-busi.safetensors").spec
    held, near = heldout_names(src)
    sets = (("busi-heldout", held, README_HELDOUT), ("busi-calib", calibration_names(src), README_CALIB))
    for folder, names, readme in sets:
        out = SAMPLES / folder
        shutil.rmtree(out / "images", ignore_errors=True)
        shutil.rmtree(out / "masks", ignore_errors=True)
        size = write_set(src, names, out, spec)
        (out / "README.md").write_text(readme.format(n=len(names), size_kb=round(size / 1024), seed=CALIB_SEED,
                                                     n_val=len(held) + len(near), n_near=len(near)))
        print(f"{len(names)} images + masks, {size / 1024:.0f} KiB, identical tensors and ground truth at "
              f"{spec.height} x {spec.width}: {out.relative_to(ROOT)}")
    return 0

if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "busi-train"))
