"""Which images an export verifies on, and what that verification may claim.

`--verify-data` wins; otherwise the calibration data (`--calib`) when given; otherwise the bundled
BUSI breast-ultrasound samples. Those samples are the domain of the shipped BUSI model only: for
any other checkpoint a verification on them reports agreement with PyTorch FP32 alone (no Dice
against ground truth, which would be meaningless) and warns that they are not the model's domain.
The plan is recorded in manifest.json (`verification.data`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from cmunext_edge.artifacts.kinds import is_checkpoint
from cmunext_edge.fileio import sha256_file
from cmunext_edge.resources import SAMPLES_DIR, models_dir

VERIFY_DATA, CALIBRATION, BUNDLED = "--verify-data", "calibration data (--calib)", "bundled BUSI samples"


@dataclass(frozen=True)
class VerifyPlan:
    source: str                   # folder or file the images come from
    origin: str                   # VERIFY_DATA, CALIBRATION or BUNDLED
    ground_truth: bool            # whether Dice against ground-truth masks is reported
    note: str                     # what the figures mean, one sentence

    def as_dict(self) -> dict:
        return asdict(self)


def shipped_model_name(sha256: str) -> str | None:
    """The shipped model (models/) whose weights file has this sha256, if any."""
    try:
        folder = models_dir()
    except FileNotFoundError:
        return None
    for path in sorted(folder.iterdir()):
        if is_checkpoint(path) and sha256_file(path) == sha256:
            return path.stem
    return None


def plan_verification(verify_data, calib, weights_sha256: str) -> VerifyPlan:
    """Where the verification images come from and whether ground-truth Dice is meaningful there."""
    if verify_data is not None:
        return VerifyPlan(str(verify_data), VERIFY_DATA, True,
                          "vs PyTorch FP32 (and ground truth where masks exist) on the given data")
    if calib is not None:
        return VerifyPlan(str(calib), CALIBRATION, True,
                          "vs PyTorch FP32 (and ground truth where masks exist) on the calibration data")
    shipped = shipped_model_name(weights_sha256)
    if shipped:
        return VerifyPlan(str(SAMPLES_DIR), BUNDLED, True,
                          f"vs PyTorch FP32 and ground truth on the bundled BUSI samples ({shipped}'s domain)")
    return VerifyPlan(str(SAMPLES_DIR), BUNDLED, False,
                      "agreement with PyTorch FP32 only: the bundled BUSI breast-ultrasound samples are "
                      "not this model's domain, so no Dice against ground truth is reported")


def domain_warning(plan: VerifyPlan) -> str | None:
    """The warning printed when the verification images are not the model's domain."""
    if plan.ground_truth:
        return None
    return ("warning: no --verify-data (or --calib) given: verifying on the bundled BUSI "
            "breast-ultrasound samples, which are not this model's domain. The figures are the "
            "agreement with PyTorch FP32 only (no Dice against ground truth); pass "
            "--verify-data your_dataset/ to verify on the model's own images.")


def short_source(plan: VerifyPlan) -> str:
    """'bundled BUSI samples' or the folder name of the data, for one-line reports."""
    return plan.origin if plan.origin == BUNDLED else f"{Path(plan.source).name or plan.source} ({plan.origin})"
