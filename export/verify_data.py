"""Which images an export verifies on, and what that verification may claim.

Held out by default: an export never verifies on images that trained or calibrated the model
when others are known. In order:

1. `--verify-data` (with `--split`, or the `split.json` beside a cmunext-train checkpoint whose
   validation names the dataset holds: that list of it);
2. for a shipped model, its own held-out validation images packaged with the toolkit
   (`samples/busi-heldout`, the 90 of `models/<name>.val.txt`);
3. the calibration data (`--calib`): not held out for an INT8 model, which says so;
4. the bundled BUSI samples: the shipped model's domain only; for any other checkpoint
   the figures are agreement with PyTorch FP32 alone (no Dice against ground truth).

Calibration images are left out of a default verification set (disjoint by name). Images of a
given `--verify-data` that calibrated the model or are on its training list (by name, or by pixel
fingerprint: a renamed copy or near copy is the same image, data/fingerprint.py) are left out when
others remain (said, and recorded as `overlap.left_out`); a set made only of such images is warned
about and not called verified. The plan, the training list's source and the overlaps are recorded in manifest.json.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from cmunext_edge.data.fingerprint import Seen
from cmunext_edge.data.model_split import model_split, split_lists
from cmunext_edge.resources import HELDOUT_DIR, SAMPLES_DIR, shipped_model_name

VERIFY_DATA, HELD_OUT = "--verify-data", "held-out validation images"
CALIBRATION, BUNDLED = "calibration data (--calib)", "bundled BUSI samples"
MAX_HELD_OUT = 200                 # a held-out list is verified whole up to this many images


@dataclass(frozen=True)
class VerifyPlan:
    source: str                   # folder or file the images come from
    origin: str                   # VERIFY_DATA, HELD_OUT, CALIBRATION or BUNDLED
    ground_truth: bool            # whether Dice against ground truth is reported
    note: str                     # what the figures mean, one sentence
    split: str | None = None      # names file / split.json choosing images of `source`
    held_out: bool | None = None  # True: known not to be training images; None: unknown
    training_list: str | None = None   # where the model's training names come from, if known
    training_names: tuple = field(default=(), repr=False)
    training_seen: Seen = field(default_factory=Seen, repr=False)   # their fingerprints (data/fingerprint.py)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("training_names")
        d.pop("training_seen")
        return d


def _names_in(source) -> set:
    images = Path(source) / "images"
    return {p.stem for p in images.iterdir()} if images.is_dir() else set()


def plan_verification(verify_data, calib, weights_sha256: str, split=None, weights=None) -> VerifyPlan:
    """Where the verification images come from and what the figures may claim (module docstring)."""
    model_split_path = model_split(weights, weights_sha256)
    train, val, seen = split_lists(model_split_path)
    known = {"training_list": str(model_split_path.resolve()) if train else None, "training_names": tuple(train),
             "training_seen": seen}
    if verify_data is not None:
        if split is None and val and set(val) <= _names_in(verify_data):
            split = str(model_split_path)
        return VerifyPlan(str(verify_data), VERIFY_DATA, True,
                          "vs PyTorch FP32 (and ground truth where masks exist) on the given data"
                          + (f", the validation list of {Path(split).name}" if split else ""),
                          split=None if split is None else str(split),
                          held_out=True if split is not None else None, **known)
    shipped = shipped_model_name(weights_sha256)
    if shipped and HELDOUT_DIR.is_dir():
        return VerifyPlan(str(HELDOUT_DIR), HELD_OUT, True,
                          f"vs PyTorch FP32 and ground truth on {shipped}'s held-out validation images "
                          f"(never trained on; they chose its epoch)", held_out=True, **known)
    if calib is not None:
        return VerifyPlan(str(calib), CALIBRATION, True,
                          "vs PyTorch FP32 (and ground truth where masks exist) on the calibration data",
                          held_out=None, **known)
    if shipped:
        return VerifyPlan(str(SAMPLES_DIR), BUNDLED, True,
                          f"vs PyTorch FP32 and ground truth on the bundled BUSI samples ({shipped}'s domain)",
                          held_out=True, **known)
    return VerifyPlan(str(SAMPLES_DIR), BUNDLED, False,
                      "agreement with PyTorch FP32 only: the bundled BUSI breast-ultrasound samples are "
                      "not this model's domain, so no Dice against ground truth is reported", **known)


def plan_warnings(plan: VerifyPlan, has_split_file: bool = False) -> list[str]:
    """Warnings printed before verifying: a foreign domain, or data not known to be held out."""
    out = []
    if not plan.ground_truth:
        out.append("warning: no --verify-data (or --calib) given: verifying on the bundled BUSI "
                   "breast-ultrasound samples, which are not this model's domain. The figures are the "
                   "agreement with PyTorch FP32 only (no Dice against ground truth); pass "
                   "--verify-data your_dataset/ to verify on the model's own images.")
    if plan.origin == VERIFY_DATA and not plan.training_list:
        out.append("note: the model's training images are not known (no split.json beside the checkpoint, "
                   "not a shipped model): --verify-data cannot be checked for training images; make sure "
                   "it holds images the model never trained on")
    if plan.origin == CALIBRATION:
        out.append("warning: verifying on the calibration images (--calib), which are not held out"
                   + (f"; {plan.training_list} lists the model's validation images: pass --verify-data "
                      f"DATASET/ to verify on them" if plan.training_list else
                      "; pass --verify-data with other images of the model's domain"))
    return out


def domain_warning(plan: VerifyPlan) -> str | None:
    """The warning printed when the verification images are not the model's domain."""
    warnings = [w for w in plan_warnings(plan) if "not this model's domain" in w]
    return warnings[0] if warnings else None


def overlaps(verify_names, calib_names, plan: VerifyPlan, verify_prints: dict | None = None,
             calib_prints: dict | None = None) -> dict:
    """The verification images that are also calibration images or training images of the model:
    by name, and by fingerprint where known ({name: fingerprint}, data/fingerprint.py), so that a
    renamed copy and a near copy (resized, re-encoded, cropped a little) are found too."""
    v = set(verify_names)
    calibration, training = v & set(calib_names or ()), v & set(plan.training_names)
    if verify_prints:
        seen_calib = Seen.of((calib_prints or {}).values())
        calibration |= {n for n, f in verify_prints.items() if seen_calib.holds(f)}
        training |= {n for n, f in verify_prints.items() if plan.training_seen.holds(f)}
    return {"calibration": sorted(calibration), "training": sorted(training)}


def overlap_warnings(shared: dict, plan: VerifyPlan, n: int) -> list[str]:
    out = []
    if shared["training"]:
        out.append(f"warning: {len(shared['training'])} of the {n} verification images are training images "
                   f"of this model or near copies of them ({plan.training_list}, e.g. {shared['training'][0]!r}): the figures "
                   f"overstate how the artifact does on new images; "
                   + ("give --verify-data images none of its training runs (--init included) used" if plan.split
                      else "use --split with its validation list"))
    if shared["calibration"]:
        out.append(f"warning: {len(shared['calibration'])} of the {n} verification images also calibrated "
                   f"the INT8 model (or are near copies of its calibration images) (e.g. {shared['calibration'][0]!r}): keep --verify-data and --calib disjoint")
    return out


def short_source(plan: VerifyPlan) -> str:
    """'bundled BUSI samples' or the folder name of the data, for one-line reports."""
    return plan.origin if plan.origin in (BUNDLED, HELD_OUT) else f"{Path(plan.source).name or plan.source} ({plan.origin})"
