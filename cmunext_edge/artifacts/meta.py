"""What every exported artifact carries: the metadata keys and the embedded self-test.

Metadata is a flat ``str -> str`` dict whose keys start with ``cmunext_edge.``; ONNX keeps
it in ``metadata_props``, OpenVINO in ``rt_info["model_info"]``, TensorRT in the sidecar
``<engine>.json``. The self-test is a fixed input (regenerated from a seed, checked by its
sha256) and a digest of the output the artifact gave on the export host: 8x8 average-pooled
logits and the thresholded mask as zlib-compressed bits. On the target device the runtime
regenerates the input, runs it and compares (mean mask Dice and max pooled-logit delta). So the
self-test checks "same as at export", never agreement with PyTorch (that is the export's
verification, recorded in manifest.json).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from cmunext_edge._version import __version__
from cmunext_edge.core.agreement import GATES
from cmunext_edge.core.metrics import mean_dice
from cmunext_edge.core.preprocess import PreprocessSpec
from cmunext_edge.fileio import loads_json

PREFIX = "cmunext_edge."
KEYS = ("format_version", "preprocess", "variant", "in_channels", "num_classes", "threshold",
        "source_sha256", "toolkit_version", "precision", "target", "selftest", "runtime", "graph",
        "content_sha256")
FORMAT_VERSION = "1"
# Minimum mean mask Dice agreement per precision: export verification and self-test. The one
# table is core.agreement.GATES (mean floor and tail floor per precision).
AGREEMENT_THRESHOLDS = {p: g.mean for p, g in GATES.items()}
POOL = 8


def build_metadata(*, spec: PreprocessSpec, variant: str, in_channels: int, num_classes: int,
                   source_sha256: str, precision: str, target: str, selftest: dict | None = None) -> dict:
    """The flat, prefixed string dict written into an artifact."""
    meta = {"format_version": FORMAT_VERSION, "preprocess": spec.to_json(), "variant": variant,
            "in_channels": str(in_channels), "num_classes": str(num_classes),
            "threshold": repr(float(spec.threshold)), "source_sha256": source_sha256,
            "toolkit_version": __version__, "precision": precision, "target": target}
    if selftest is not None:
        meta["selftest"] = json.dumps(selftest, sort_keys=True)
    return {PREFIX + k: v for k, v in meta.items()}


def runtime_settings(meta: dict) -> dict:
    """The runtime settings an export stored (`cmunext_edge.runtime`, JSON): e.g. OpenVINO
    inference_precision / threads / hint / num_streams, ONNX Runtime threads. Backends use them
    as defaults; options passed explicitly still win."""
    raw = meta.get("runtime")
    if not raw:
        return {}
    try:
        value = loads_json(raw) if isinstance(raw, str) else dict(raw)
    except ValueError:
        return {}
    return {k: v for k, v in value.items() if v is not None}


class MetadataError(ValueError):
    """An artifact's embedded metadata (its preprocessing contract or self-test) cannot be decoded:
    the file was modified or damaged."""


def parse_metadata(flat: dict) -> dict:
    """Prefixed flat dict (extra keys ignored) -> {key: value} with `spec` and `selftest` decoded;
    MetadataError when either cannot be."""
    meta = {k[len(PREFIX):]: str(v) for k, v in flat.items() if k.startswith(PREFIX)}
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"artifact metadata format_version {meta['format_version'][:20]!r}; this runtime reads "
                         f"format {FORMAT_VERSION} (upgrade cmunext-edge, or re-export with this version)")
    if "preprocess" in meta:
        try:
            meta["spec"] = PreprocessSpec.from_json(meta["preprocess"])
        except ValueError as exc:
            raise MetadataError(f"the embedded preprocessing contract is damaged ({exc})") from None
    if "selftest" in meta:
        try:
            meta["selftest"] = loads_json(meta["selftest"])
        except ValueError as exc:
            raise MetadataError(f"the embedded self-test data is damaged (not JSON: {exc})") from None
    for key in ("in_channels", "num_classes"):
        if key in meta:
            meta[key] = int(meta[key])
    return meta


def apply_metadata(backend, flat: dict) -> dict:
    """Set spec, metadata, num_classes of a runtime backend from an artifact's metadata."""
    meta = parse_metadata(flat)
    backend.metadata = meta
    if "spec" in meta:
        backend.spec = meta["spec"]
    backend.num_classes = meta.get("num_classes", backend.num_classes)
    return meta


# --- embedded self-test --------------------------------------------------------------------
def selftest_input(spec: PreprocessSpec, seed: int = 0) -> np.ndarray:
    """A fixed 1xCxHxW input: an ultrasound-like dark ellipse on seeded speckle, preprocessed."""
    rng = np.random.default_rng(seed)
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((yy - 0.55 * h) / (0.22 * h)) ** 2 + ((xx - 0.45 * w) / (0.3 * w)) ** 2 < 1.0
    base = np.where(inside, 40.0, 140.0) + 30.0 * np.sin(yy / 9.0)
    gray = np.clip(base + rng.normal(0.0, 25.0, (h, w)), 0, 255).astype(np.uint8)
    bgr = np.repeat(gray[..., None], 3, axis=2)
    return spec.preprocess(bgr)[None]


# The self-test input is gray and already at network size, so channel order and the resize do not
# change it. A fixed colour probe, rows upscaled ~4x and columns downscaled ~2.5x, makes them show:
# per channel, its mean and its squared row/column gradients, each relative to the channel's variance
# (scale-free). An edit of channel order or interpolation moves a statistic by >= 0.08; OpenCV's
# resize on emulated ARM (Cortex-A72, Neoverse-N1) by 0.0022 (benchmarks/devices/contract_probe.py).
PROBE_TOLERANCE = 0.01


def contract_probe_image(spec: PreprocessSpec) -> np.ndarray:
    """The probe: HxWx3 uint8 BGR, integer patterns (no RNG, no float), different in each channel."""
    h, w = spec.height // 4 + 3, spec.width * 5 // 2 + 7
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(xx * 7 + yy * 29) % 256, ((xx // 3) * 37 + yy * 11) % 256, ((xx * yy) // 5 + 60) % 256]
    return np.stack(planes, axis=-1).astype(np.uint8)


def contract_probe(spec: PreprocessSpec) -> list[float]:
    """Per input channel: mean / std, mean squared column step / variance, mean squared row step / variance,
    of the probe preprocessed by `spec`."""
    stats = []
    for plane in spec.preprocess(contract_probe_image(spec)).astype(np.float64):
        var = max(float(plane.var()), 1e-30)
        stats += [float(plane.mean()) / var ** 0.5, float(np.mean(np.diff(plane, axis=1) ** 2)) / var,
                  float(np.mean(np.diff(plane, axis=0) ** 2)) / var]
    return stats


def _probe_difference(recorded, spec: PreprocessSpec) -> float:
    now = contract_probe(spec)
    if not isinstance(recorded, list) or len(recorded) != len(now) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in recorded):
        raise ValueError(f"contract_probe must be a list of {len(now)} numbers")
    return max(abs(a - float(b)) for a, b in zip(now, recorded))


def _threshold_logit(spec: PreprocessSpec) -> float:
    """The logit at which the sigmoid probability crosses the spec's threshold."""
    t = float(spec.threshold)
    return float(np.log(t / (1.0 - t)))


def _pool(logits: np.ndarray) -> np.ndarray:
    c, h, w = logits.shape[1:]
    return logits[0].reshape(c, POOL, h // POOL, POOL, w // POOL).mean(axis=(2, 4))


def make_selftest(spec: PreprocessSpec, logits: np.ndarray, precision: str, seed: int = 0,
                  reference: str = "artifact on the export host") -> dict:
    """Digest of `logits` (the output for selftest_input(spec, seed)) to embed in the artifact."""
    x = selftest_input(spec, seed)
    mask = np.asarray(logits[0] > _threshold_logit(spec))
    return {"seed": seed, "preprocess": spec.to_json(), "shape": list(x.shape), "input_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
            "pooled_logits": np.round(_pool(logits), 4).tolist(), "precision": precision,
            "mask_bits": base64.b64encode(zlib.compress(np.packbits(mask).tobytes(), 9)).decode(),
            "mask_sha256": hashlib.sha256(np.packbits(mask).tobytes()).hexdigest(),
            "min_agreement": AGREEMENT_THRESHOLDS.get(precision, 0.97), "reference": reference,
            "contract_probe": [round(v, 6) for v in contract_probe(spec)]}


@dataclass
class SelfTestResult:
    status: str                       # "pass", "fail" or "unavailable"
    message: str
    mask_dice: float | None = None    # mean over classes, against the embedded expected mask
    max_pooled_logit_delta: float | None = None
    exact_mask_match: bool | None = None
    min_agreement: float | None = None
    device: str | None = None
    precision: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        where = f" on {self.device} ({self.precision})" if self.device else ""
        return self.message + where

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def contract_differences(recorded: str | dict, spec: PreprocessSpec) -> list[str]:
    """Fields of the preprocessing contract (threshold included) that differ from `recorded`."""
    was = loads_json(recorded) if isinstance(recorded, str) else dict(recorded)
    now = json.loads(spec.to_json())
    return [f"{k} {now.get(k)!r} (exported with {was.get(k)!r})"
            for k in sorted(set(was) | set(now)) if k != "name" and now.get(k) != was.get(k)]


def _expected_mask(selftest: dict, shape) -> np.ndarray:
    bits = np.frombuffer(zlib.decompress(base64.b64decode(selftest["mask_bits"], validate=True)), np.uint8)
    expected = np.unpackbits(bits)
    if expected.size < int(np.prod(shape)):
        raise ValueError(f"mask_bits hold {expected.size} bits, the output has {int(np.prod(shape))}")
    return expected[:int(np.prod(shape))].reshape(shape).astype(bool)


def check_selftest(selftest: dict | None, spec: PreprocessSpec, run, precision: str | None = None) -> SelfTestResult:
    """Run `run(x) -> logits` on the embedded input and compare with the embedded digest.

    The recorded preprocessing contract (mean, std, scale, size, threshold, ...) must equal
    `spec`; the mask is compared at the spec's threshold. A damaged digest is a failure.
    `precision`: what actually runs; when it is lower than the artifact's (e.g. an FP32 IR that
    the device runs in bf16), the agreement needed is that precision's (AGREEMENT_THRESHOLDS)."""
    if not selftest:
        return SelfTestResult("unavailable", "artifact has no embedded self-test "
                              "(only exported artifacts carry one; re-export with cmunext-export)")
    try:
        return _check_selftest(selftest, spec, run, precision)
    except (KeyError, TypeError, ValueError, OverflowError, zlib.error, binascii.Error) as exc:   # OverflowError: int(inf)
        return SelfTestResult("fail", f"self-test FAILED: the embedded self-test data is damaged "
                              f"({type(exc).__name__}: {exc})")


def _check_selftest(selftest: dict, spec: PreprocessSpec, run, precision: str | None) -> SelfTestResult:
    if "preprocess" in selftest:
        differs = contract_differences(selftest["preprocess"], spec)
        if differs:
            return SelfTestResult("fail", "self-test FAILED: the artifact's preprocessing contract was "
                                  "changed after export: " + ", ".join(differs))
    if "contract_probe" in selftest:          # artifacts exported before 2026-12-06 have none
        moved = _probe_difference(selftest["contract_probe"], spec)
        if not moved <= PROBE_TOLERANCE:
            return SelfTestResult("fail", f"self-test FAILED: the preprocessing does not resize or order "
                                  f"channels as at export (a statistic of the contract probe moved by {moved:.3g}, "
                                  f"tolerance {PROBE_TOLERANCE}): the contract was changed after export")
    x = selftest_input(spec, int(selftest["seed"]))
    if hashlib.sha256(x.tobytes()).hexdigest() != selftest["input_sha256"]:
        return SelfTestResult("fail", "self-test input could not be regenerated identically on this "
                              "machine (numpy/OpenCV differ); the comparison would be meaningless")
    logits = np.asarray(run(x), dtype=np.float32)
    cut = _threshold_logit(spec) if "preprocess" in selftest else 0.0
    mask = logits[0] > cut
    expected = _expected_mask(selftest, mask.shape)
    dice = mean_dice(mask, expected)
    # recorded values read as float64 (the difference follows): a value beyond float32's range (a corrupted
    # digest) is a large delta, not an overflow
    delta = float(np.max(np.abs(_pool(logits) - np.asarray(selftest["pooled_logits"], np.float64))))
    exact = hashlib.sha256(np.packbits(mask).tobytes()).hexdigest() == selftest["mask_sha256"]
    # the recorded floor, never below its precision's (an edited min_agreement cannot lower it)
    floor = AGREEMENT_THRESHOLDS.get(selftest.get("precision"), min(AGREEMENT_THRESHOLDS.values()))
    need = float(selftest.get("min_agreement", floor))
    need = need if need >= floor else floor              # NaN too
    if precision in AGREEMENT_THRESHOLDS and precision != selftest.get("precision"):
        need = min(need, AGREEMENT_THRESHOLDS[precision])
    ok = bool(exact or dice >= need) and np.isfinite(logits).all()
    # what it compares with: the artifact's own output at export time (not PyTorch)
    msg = (f"self-test {'passed' if ok else 'FAILED'} (same as at export: compared with this "
           f"artifact's own output on the export host, not with PyTorch): mask Dice agreement {dice:.4f} "
           f"({'>=' if ok else '<'} {need}), max pooled logit delta {delta:.4g}"
           f"{', masks identical' if exact else ''}"
           f"{'' if np.isfinite(logits).all() else ', output has NaN/inf'}")
    return SelfTestResult("pass" if ok else "fail", msg, dice, delta, exact, need)
