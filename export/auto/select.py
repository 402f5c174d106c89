"""Candidate rows of `--target auto` and the selection among them: `Measured` (one candidate's
figures), `CandidateStatus`, `select` (the fastest faithful candidate within the Dice budget) and
`selection_note` (why, in a sentence)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cmunext_edge.artifacts.meta import AGREEMENT_THRESHOLDS
from cmunext_edge.core.agreement import BAD_IMAGE


class CandidateStatus(str, Enum):
    """What selection decided about a candidate (a str: JSON and reports show the value)."""
    KEPT = "kept"
    WITHIN_BUDGET = "within budget"
    REJECTED = "rejected"
    SKIPPED = "skipped"               # not built: the inputs it needs are missing (reason says which)
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass
class Measured:
    name: str
    target: str
    precision: str
    note: str
    settings: dict
    artifact: str | None = None
    status: CandidateStatus = CandidateStatus.ERROR
    reason: str = ""
    latency_ms: list = field(default_factory=list)
    p50_ms: float | None = None
    images_per_s: float | None = None
    dice: float | None = None
    dice_drop_points: float | None = None
    agreement: float | None = None
    per_class_dice: list | None = None    # several classes only (report JSON drops it for one)
    worst: float | None = None            # the worst image's agreement, and which image
    worst_image: str | None = None
    n_bad: int | None = None              # images below core.agreement.BAD_IMAGE agreement
    bad_upper95: float | None = None      # 95% upper bound on the share of such images
    faithful: bool | None = None          # the precision's agreement gate (mean and tail floors)
    verified: bool | None = None          # faithful on enough images for the tail claim
    gate_failure: str | None = None
    verification: dict | None = field(default=None, repr=False)   # written into the winner's manifest
    device: str | None = None
    export_s: float | None = None
    throughput_setting: str | None = None


# Timing tie: run-to-run noise of p50 on a 2-core virtual machine is 5-10% (alternating A/B rounds,
# benchmarks/int8_notes.md "Calibration on training images"), so closer candidates are a tie.
TIE_PCT = 5.0


def select(rows, max_dice_drop: float, device: str = "CPU", tie_pct: float = TIE_PCT,
           agreement_floor: bool = True):
    """Mark every row kept / within budget / rejected with its reason; return the winner or None.

    With `agreement_floor` (default) a candidate must pass its precision's agreement gate on the
    held-out evaluation images (core.agreement.GATES: the mean floor, FP32 0.999 / FP16, BF16 0.99
    / INT8 0.97, and the tail floor, at most 3% of images below 0.90 agreement): a better Dice
    against ground truth does not excuse masks that differ from the model's. Among the faithful
    candidates within the Dice budget, the verified ones (the tail claim holds: enough images, a
    95% bound on the bad-image share at most twice the tail floor) come first when there are any:
    the fastest of them wins, and a faster candidate that passed but is not verified does not.
    Candidates within `tie_pct` percent of the fastest p50 are a tie (timing noise), which the
    lower 95% bound on the bad-image share breaks, then the smaller Dice drop."""
    ok = []
    for r in rows:
        if r.status == CandidateStatus.SKIPPED:
            continue
        if r.p50_ms is None:
            r.status, r.reason = CandidateStatus.ERROR, r.reason or "not measured"
            continue
        if r.device and r.device.split(":")[0].upper() != device.upper() and device.upper() != "CPU":
            r.status, r.reason = CandidateStatus.REJECTED, f"ran on {r.device}, not on {device}"
        elif r.dice_drop_points is None:
            r.status, r.reason = CandidateStatus.REJECTED, "no ground truth to measure the Dice drop"
        elif r.dice_drop_points > max_dice_drop + 1e-9:
            r.status, r.reason = CandidateStatus.REJECTED, (f"Dice drop {r.dice_drop_points:.3f} points > budget "
                                                            f"{max_dice_drop:g}")
        elif agreement_floor and _unfaithful(r):
            r.status, r.reason = CandidateStatus.REJECTED, f"not faithful to PyTorch: {_unfaithful(r)}"
        else:
            ok.append(r)
    if not ok:
        return None
    pool = [r for r in ok if r.verified] or ok
    fastest = min(r.p50_ms for r in pool)
    ties = [r for r in pool if r.p50_ms <= fastest * (1 + tie_pct / 100)]
    winner = min(ties, key=lambda r: (r.bad_upper95 if r.bad_upper95 is not None else 1.0,
                                      r.dice_drop_points, r.p50_ms))
    for r in ok:
        r.status = CandidateStatus.KEPT if r is winner else CandidateStatus.WITHIN_BUDGET
        if r is winner:
            r.reason = ("fastest verified candidate within the Dice budget" if r.verified and len(pool) < len(ok)
                        else "fastest faithful candidate within the Dice budget") + (
                f" (tie within {tie_pct:g}% of {fastest:.2f} ms: lowest bad-image bound, smallest Dice drop)"
                if len(ties) > 1 else "")
        elif r in ties:
            r.reason = f"tie with {winner.name} (within {tie_pct:g}%), higher bad-image bound or Dice drop"
        elif r not in pool:
            r.reason = (f"passed but not verified ({r.verification.get('claim') if r.verification else 'tail claim'}), "
                        f"{r.p50_ms - winner.p50_ms:+.2f} ms vs {winner.name}, which is verified")
        else:
            r.reason = f"within budget, {r.p50_ms - winner.p50_ms:+.2f} ms vs {winner.name}"
    return winner


def _unfaithful(r: Measured) -> str | None:
    """Why the row fails its agreement gate (None: it passes, or was not scored)."""
    if r.faithful is None:
        if r.agreement is not None and r.agreement < AGREEMENT_THRESHOLDS[r.precision]:
            return f"agreement {r.agreement:.4f} < {AGREEMENT_THRESHOLDS[r.precision]} required for {r.precision}"
        return None
    return None if r.faithful else r.gate_failure


def selection_note(rows, winner) -> str:
    """Why the winner was chosen, in a sentence; says so when no INT8 candidate is faithful."""
    if winner is None:
        return "no candidate is faithful and within the Dice budget"
    int8 = [r for r in rows if r.precision == "int8" and r.faithful is not None]
    note = f"{winner.name}: {winner.reason}"
    if int8 and not any(r.faithful for r in int8):
        best = min(int8, key=lambda r: r.n_bad)
        note += (f"; no INT8 candidate is faithful on the {best.verification['n_images']} held-out images "
                 f"(fewest bad images: {best.name}, {best.n_bad} below {BAD_IMAGE}, worst {best.worst:.3f}), "
                 f"so the fastest faithful {winner.precision} candidate is kept")
    if winner.verified is False:
        note += f"; NOT verified: {winner.verification.get('claim')}"
    return note
