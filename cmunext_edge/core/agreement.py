"""Agreement of an artifact's outputs with reference outputs: the one comparator of the toolkit.

In the spirit of Polygraphy's `Comparator`: outputs and reference outputs are fed in pairs
(`Comparator.add`), a pluggable compare function turns each pair into per-class figures
(default: the official Dice between the two thresholded masks, per class), and `summary()`
gives the statistics every agreement record carries (export manifest, auto report, bench,
device report): n, mean, the per-image distribution (p5, worst and which image, count below
BAD_IMAGE) and two 95% bounds:

- `bad_share_upper95`: the exact one-sided Clopper-Pearson upper bound on the share of images
  below BAD_IMAGE (with 0 bad images in n it is 1 - 0.05 ** (1 / n): 17% for n = 16);
- `mean_lower95`: a seeded bootstrap lower bound on the mean (2000 resamples, 5th percentile).

`gate(summary, precision)` applies the per-precision table `GATES`: the mean floor, the tail
floor (at most `tail` of the images below BAD_IMAGE) and, for each class of a several-class
model, the mean floor minus CLASS_MARGIN. An artifact that passes is *verified* only when its
tail claim is supported: the 95% upper bound on its bad-image rate is at most twice the tail floor
(6% for a 3% floor). With no bad image that takes `min_images(precision)` images (49 for a 3%
floor); with bad images it takes more (1 bad image in 74: bound 6.3%, not verified). Fewer, or a
wider bound, passes but is not verified. An image whose outputs or reference outputs are not finite
(NaN, inf) agrees with nothing (0.0 per class) and fails the gate by name; its |delta logit| makes
`max_abs_logit_delta` NaN rather than hiding it.

Near misses (informational, not gated): a class whose two masks are both empty but whose artifact
logits come within NEAR_MISS_LOGIT of the threshold (logit 0). Mask agreement calls it a perfect
match, yet another runtime's arithmetic can tip it into a whole false region: the shipped model's
default INT8 IR on benign (304) (PyTorch's largest logit -1.20, the x86 IR's -0.006) drew a blob
on emulated ARM (benchmarks/results/devices_arm_int8default_2026-12-05.md). numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cmunext_edge.core.metrics import iou_dice

BAD_IMAGE = 0.90          # an image whose mask agreement is below this is a "bad" (flipped) image
CONFIDENCE = 0.95
NEAR_MISS_LOGIT = 0.25    # both masks empty, artifact's largest logit above -this: a near miss
CLASS_MARGIN = 0.05
"""With several classes each class's mean agreement must reach the mean floor minus this margin:
a mean over classes could otherwise hide one class (often a small or thin one) that differs."""


@dataclass(frozen=True)
class Gate:
    mean: float               # floor on the mean per-image mask agreement
    tail: float               # at most this share of the images below BAD_IMAGE


GATES = {"fp32": Gate(0.999, 0.03), "fp16": Gate(0.99, 0.03), "bf16": Gate(0.99, 0.03),
         "int8": Gate(0.97, 0.03)}


def clopper_pearson_upper(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """Exact one-sided upper bound on a binomial rate after k events in n trials."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)

    def cdf(p: float) -> float:     # P(X <= k | n, p), in log space (no overflow for large n)
        log_n = math.lgamma(n + 1)
        return sum(math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
                            + (n - i) * math.log1p(-p)) for i in range(k + 1))
    lo, hi = k / n, 1.0
    for _ in range(60):             # cdf falls as p rises: bisect cdf(p) = alpha
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


def min_images(precision: str, confidence: float = CONFIDENCE) -> int:
    """The fewest images whose clean result (no bad image) rules out, at `confidence`, a bad-image
    rate twice the precision's tail floor: what "enough images for the tail claim" means."""
    tail = GATES[str(precision)].tail
    return math.ceil(math.log(1 - confidence) / math.log(1 - 2 * tail))


def images_needed(n_bad: int, precision: str, confidence: float = CONFIDENCE) -> int:
    """The fewest images with `n_bad` bad ones (none more) whose 95% bound on the bad-image share
    reaches the precision's tail claim (twice its floor): min_images for a clean result, more for
    each bad image (1 bad: 78, 2: 103 at the 3% floor)."""
    limit, low = 2 * GATES[str(precision)].tail, min_images(precision, confidence)

    def enough(n: int) -> bool:
        return clopper_pearson_upper(n_bad, n, confidence) <= limit + 1e-12
    if enough(low):
        return low
    high = 2 * low
    while not enough(high):         # the bound falls as n grows: double, then bisect
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def bootstrap_lower(values: np.ndarray, confidence: float = CONFIDENCE, resamples: int = 2000,
                    seed: int = 0) -> float:
    """Seeded bootstrap one-sided lower bound on the mean of `values`."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()) if len(values) else float("nan")
    idx = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    return float(np.quantile(values[idx].mean(axis=1), 1 - confidence))


def distribution(values, names=None) -> dict:
    """n, mean, p5, worst (and which image), bad images and the two 95% bounds of per-image figures."""
    v = np.asarray(values, np.float64)
    if not len(v):
        return {"n": 0}
    worst = int(np.argmin(v))
    bad = int(np.sum(v < BAD_IMAGE))
    return {"n": int(len(v)), "mean": float(v.mean()), "p5": float(np.percentile(v, 5)),
            "worst": float(v[worst]), "worst_image": names[worst] if names else worst,
            "bad_below": BAD_IMAGE, "n_bad": bad, "bad_share": bad / len(v),
            "bad_share_upper95": clopper_pearson_upper(bad, len(v)), "mean_lower95": bootstrap_lower(v)}


def mask_dice(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Default compare function: the official Dice between the two thresholded masks, per class
    (C x H x W logits -> C values)."""
    return np.array([iou_dice(a > 0, r > 0)[1] for a, r in zip(output, reference)])


def near_misses(output: np.ndarray, reference: np.ndarray, name) -> list[dict]:
    """The classes (C x H x W logits) whose two masks are both empty while the output's largest
    logit lies within NEAR_MISS_LOGIT of the threshold: one per class, with both largest logits."""
    found = []
    for k, (o, r) in enumerate(zip(output, reference)):
        if o.size and not (o > 0).any() and not (r > 0).any() and o.max() > -NEAR_MISS_LOGIT:
            found.append({"image": str(name), "class": k, "max_logit": round(float(o.max()), 4),
                          "reference_max_logit": round(float(r.max()), 4)})
    return found


class Comparator:
    """Collects per-image agreement of outputs with reference outputs; see the module docstring."""

    def __init__(self, compare=mask_dice):
        self.compare = compare
        self.per_class: list[np.ndarray] = []          # one C-vector per image
        self.names: list = []
        self.max_abs_delta = 0.0
        self._abs_sum, self._count, self.identical = 0.0, 0, 0
        self.nonfinite: list = []                       # names of images with NaN/inf (reference) outputs
        self.near_misses: list[dict] = []               # empty masks, artifact logits near the threshold

    def add(self, outputs, references, names=None) -> None:
        """A batch (N x C x H x W) of outputs and the reference outputs for the same inputs."""
        for i, (o, r) in enumerate(zip(outputs, references)):
            o, r = np.asarray(o, np.float32), np.asarray(r, np.float32)
            name = names[i] if names is not None else len(self.names)
            finite = bool(np.isfinite(o).all() and np.isfinite(r).all())
            figures = np.asarray(self.compare(o, r), np.float64)
            self.per_class.append(figures if finite else np.zeros_like(figures))
            self.names.append(name)
            if not finite:
                self.nonfinite.append(name)
            d = np.abs(o - r)
            worst = float(d.max()) if d.size else 0.0
            self.max_abs_delta = worst if math.isnan(worst) else max(self.max_abs_delta, worst)
            self._abs_sum, self._count = self._abs_sum + float(d.sum()), self._count + d.size
            self.identical += int(finite and np.array_equal(o > 0, r > 0))
            if finite:
                self.near_misses += near_misses(o, r, name)

    def __len__(self) -> int:
        return len(self.per_class)

    @property
    def per_image(self) -> np.ndarray:
        """Each image's agreement (its classes averaged)."""
        return np.array([c.mean() for c in self.per_class])

    def summary(self) -> dict:
        """The agreement record: the legacy keys (mask_dice_agreement = mean, min_...) beside the
        distribution; for several classes each class's mean and distribution too."""
        if not self.per_class:
            return {"n_images": 0}
        per_image = self.per_image
        out = {"n_images": len(per_image), "mask_dice_agreement": float(per_image.mean()),
               "min_mask_dice_agreement": float(per_image.min()), "max_abs_logit_delta": self.max_abs_delta,
               "mean_abs_logit_delta": self._abs_sum / max(1, self._count), "identical_masks": self.identical,
               "distribution": distribution(per_image, self.names),
               "per_image_agreement": [round(float(v), 5) for v in per_image],
               "nonfinite_images": len(self.nonfinite)}
        out["n_near_misses"] = len(self.near_misses)
        if self.near_misses:
            out["near_misses"] = sorted(self.near_misses, key=lambda m: -m["max_logit"])[:10]
        if self.nonfinite:
            out["nonfinite_image_names"] = [str(n) for n in self.nonfinite[:10]]
        matrix = np.stack(self.per_class)
        if matrix.shape[1] > 1:
            out["per_class_agreement"] = [float(v) for v in matrix.mean(axis=0)]
            out["per_class_distribution"] = [distribution(matrix[:, k], self.names) for k in range(matrix.shape[1])]
        return out


def gate(summary: dict, precision: str, more_images: str = "--verify-data") -> dict:
    """The gate's decision on an agreement summary: passed (mean, tail and per-class floors hold),
    verified (passed on enough images for the tail claim), the reasons and the figures it used.
    `more_images`: how the user gives more images, for the claim's advice (export: --verify-data)."""
    g, need_n = GATES[str(precision)], min_images(precision)
    dist = summary.get("distribution") or {"n": 0}
    n, reasons = dist["n"], []
    bad_outputs = summary.get("nonfinite_images") or 0
    if bad_outputs:
        first = (summary.get("nonfinite_image_names") or ["?"])[0]
        reasons.append(f"{bad_outputs} of {n} images have NaN or infinite logits (first: {first})")
    elif _isnan(summary.get("max_abs_logit_delta")) or _isnan(dist.get("mean")):
        reasons.append("max |delta logit| is NaN: the outputs are not finite")
    if n == 0:
        reasons.append("no images compared")
    else:
        if not dist["mean"] >= g.mean:          # NaN fails too
            reasons.append(f"mean mask Dice agreement {dist['mean']:.4f} < {g.mean}")
        if dist["bad_share"] > g.tail + 1e-12:
            reasons.append(f"{dist['n_bad']} of {n} images ({100 * dist['bad_share']:.1f}%) below "
                           f"{BAD_IMAGE} agreement > tail floor {100 * g.tail:g}% (worst "
                           f"{dist['worst']:.3f}: {dist['worst_image']})")
        for k, a in enumerate(summary.get("per_class_agreement") or []):
            if a < g.mean - CLASS_MARGIN:
                reasons.append(f"class {k} mask Dice agreement {a:.4f} < {g.mean} - {CLASS_MARGIN} (per-class margin)")
    passed = not reasons
    verified = passed and tail_claim_holds(dist, precision)
    unverified = None if verified or not passed else (
        "too few images" if n < need_n else "95% bound above the tail claim")
    return {"required_agreement": g.mean, "tail_floor": g.tail, "bad_below": BAD_IMAGE,
            "min_images": need_n, "passed": passed, "verified": verified, "unverified": unverified,
            "failure": "; ".join(reasons) or None,
            "claim": claim(dist, precision, more_images) if n else None}


NOT_HELD_OUT, HELD_OUT_UNKNOWN = "not held out", "held-out status unknown"


def held_out_finding(n_images: int, trained: int = 0, calibrated: int = 0, training_known: bool = True,
                     training_list=None) -> tuple[str, str] | None:
    """(reason, why) when the images a record was measured on are not held out from the model
    (`trained` of them trained it, `calibrated` calibrated its INT8 artifact) or cannot be known to
    be (its training images are not known); None when they are held out. One wording for export
    verification, --target auto, cmunext-bench and cmunext-check."""
    why = ([f"{trained} of its {n_images} images trained the model or are near copies of its training images"
            + (f" ({training_list})" if training_list else "")]
           if trained else []) + ([f"{calibrated} of its {n_images} images calibrated the INT8 model"] if calibrated else [])
    if why:
        return NOT_HELD_OUT, "; ".join(why)
    if not training_known:
        return HELD_OUT_UNKNOWN, "the model's training images are not known (no split.json beside its checkpoint)"
    return None


def withdraw_verified(record: dict, finding: tuple[str, str] | None, advice: str) -> None:
    """A passed record measured on images that are not (known to be) held out keeps its figures and
    its pass, but not the verified claim: that claim is about images the model has never seen."""
    if finding and record.get("passed"):
        reason, why = finding
        earlier = record.get("claim") if record.get("verified") is False else None   # e.g. too few images
        record.update(verified=False, unverified=reason,
                      claim=f"{reason}: {why}; {advice}" + (f"; and {earlier}" if earlier else ""))


def record_inconsistency(record: dict | None) -> str | None:
    """Why a stored verification record (manifest.json) contradicts itself, or None: its per-image
    figures must give its distribution, its mean its distribution's mean, and its passed/verified
    what the gate decides from those figures. manifest.json is not signed, so an edited record
    ("verified" beside an agreement of 0.31) is named rather than believed."""
    if not record or str(record.get("precision")) not in GATES:
        return None
    try:
        dist = record.get("distribution")
        if not dist:
            return "it has no per-image distribution" if record.get("passed") else None
        per_image = record.get("per_image_agreement")
        if per_image:
            again = distribution(np.asarray(per_image, np.float64), None)
            for key, tol in (("n", 0), ("n_bad", 0), ("mean", 1e-4), ("bad_share_upper95", 1e-6)):
                if abs(float(again[key]) - float(dist[key])) > tol:
                    return f"its distribution's {key} {dist[key]} is not that of its per-image figures ({again[key]})"
        if abs(float(record["mask_dice_agreement"]) - float(dist["mean"])) > 1e-4:
            return (f"its agreement {record['mask_dice_agreement']} is not its distribution's mean "
                    f"{float(dist['mean']):.4f}")
        decided = gate(record, record["precision"])
        for key in ("passed", "verified"):
            if record.get(key) and not decided[key]:
                return f"it says {key}, but its figures do not ({decided['failure'] or decided['unverified']})"
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return f"it cannot be read ({type(exc).__name__}: {exc})"
    return None


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def tail_claim_holds(dist: dict, precision: str) -> bool:
    """Whether the figures support the precision's tail claim: enough images, and the 95% bound on
    the bad-image share at most twice the tail floor."""
    return dist["n"] >= min_images(precision) and dist["bad_share_upper95"] <= 2 * GATES[str(precision)].tail + 1e-12


def claim(dist: dict, precision: str, more_images: str = "--verify-data") -> str:
    """What the figures support, one sentence; `more_images` names how to give more images."""
    need_n, tail = images_needed(dist["n_bad"], precision), GATES[str(precision)].tail
    bound = f"at most {100 * dist['bad_share_upper95']:.1f}% of such images below {BAD_IMAGE} (95% bound)"
    if tail_claim_holds(dist, precision):
        return f"{bound}, from {dist['n']} images"
    if dist["n"] >= min_images(precision):
        return (f"{dist['n_bad']} of {dist['n']} images below {BAD_IMAGE}: {bound}, above the {100 * 2 * tail:g}% "
                f"the {precision} tail claim needs (twice its {100 * tail:g}% floor); more held-out images "
                f"({more_images}: {need_n} with no further bad one) would narrow it")
    return (f"only {dist['n']} images: {bound}, too few for the {precision} tail claim "
            f"(<= {100 * tail:g}% below {BAD_IMAGE}); give {more_images} at least "
            f"{need_n} held-out images" + (f" ({dist['n_bad']} bad image(s) seen: {min_images(precision)} "
                                           f"would do with none)" if dist["n_bad"] else ""))
