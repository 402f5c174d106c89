"""Faithful OpenVINO INT8 (issue 21, item 3): which layers make INT8 masks flip, and the fewest
kept in float for the held-out gate; plus the evidence of benchmarks/int8_notes.md.

Data: the model's split (split.json): calibration on TRAINING images only (`--calib-size` of
them, the product's seeded sampler); the validation images (never trained on, but used for
epoch selection) sorted by name and cut into two fixed halves, A = even positions, B = odd.
The float layers are chosen on half A only; half B and all of them are reported.

Agreement = per-image Dice between the artifact's thresholded mask and PyTorch FP32's at the
network size, per class, by the product's Comparator (cmunext_edge/core/agreement.py; an image's
agreement is its classes' mean, as export/verify.py's `mask_dice_agreement`). Gate: the product's
INT8 gate (core/agreement.py `gate`): mean >= 0.97 AND at most 3% of the images below 0.90, and
with several classes each class's mean >= 0.97 - CLASS_MARGIN; each figure comes with n, mean,
p5, worst, the count below 0.90 and the exact one-sided 95% (Clopper-Pearson) upper bound on the
bad-image rate, overall and (several classes) per class. Several-class models: `--weights` of
the checkpoint, `--data` of its dataset (masks/0..N-1), the same split; the greedy search then
also minimises the classes' shortfall below their floor (`search_key`) and stops at
`--max-float` convolutions, reporting the best set when the gate is not reached.

Stages (all by default; cached in --work, so a rerun only redoes what is missing):
  recipes      export FP32 ONNX / IR and the current INT8 recipe per graph (the toolkit's own
               export(), calibrated on the training folder), agreement on A / B / all
  search       per-layer sensitivity on half A: the current INT8 IR with one convolution's
               quantizers removed (its input FakeQuantize and int8 weights replaced by the FP32
               ones: what NNCF's ignored_scope does, checked equal below), single-layer scan,
               greedy forward selection (fewest images < 0.90, then the classes' shortfall,
               then highest mean) until the gate holds on A (at most --max-float), then
               backward pruning; confirmed by a real export with those layers in NNCF's ignored
               scope (`--float-layers` adds named candidates to confirm)
  evidence     where the flips are (mask boundary band vs whole components that appear / vanish),
               how far FP32 logits are from the threshold, and FP32's own agreement with itself
               under +-1 grey level of input noise, next to each INT8 figure
  timing       OpenVINO FP32 (f32), the current INT8 and the found recipe(s), alternating rounds
               in this process (the bench's `alternating_rounds`), p50 of round medians
  ort          ONNX Runtime INT8 (export/ort_quant.py) with and without the float layers
  demo         (not in the default) the README main job's INT8 export, calibrated on the bundled
               samples, with the previous and the current default recipe

    .venv/bin/python benchmarks/int8_faithful.py --data ../shared/data/busi-train \\
        --split models/cmunext-s-busi.split.json --tag 2026-12-04
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, python, rel, train_calibration_folder  # noqa: E402

sys.path.insert(0, str(ROOT))
from cmunext_edge.core.agreement import (BAD_IMAGE, CLASS_MARGIN, GATES, Comparator, distribution,  # noqa: E402
                                         gate)

PRECISION = "int8"                        # the product's INT8 gate (core/agreement.py GATES)
GATE_BAD = BAD_IMAGE
ALL_INT8 = {"float_layers": "none"}       # the INT8 recipe before issue 21: every convolution INT8
GRAPHS = {"plain": None, "dense": {"fold_bn": True, "dense_groups": True}}
CONV_TYPES = ("Convolution", "GroupConvolution")


# ---------------------------------------------------------------- statistics (the product's, core/agreement.py)
def agreement(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-image, per-class agreement (N x C): the product's Comparator with its default compare
    function (Dice of the thresholded masks per class; an image with non-finite logits agrees 0)."""
    comp = Comparator()
    comp.add(out, ref)
    return np.stack(comp.per_class)


def _matrix(agree) -> np.ndarray:
    a = np.asarray(agree, np.float64)
    return a[:, None] if a.ndim == 1 else a


def per_image(agree) -> np.ndarray:
    """Each image's agreement (its classes averaged), as the gate counts images."""
    return _matrix(agree).mean(axis=1)


def per_image_record(names, agree) -> dict:
    """{"per_image": {name: agreement}} and, for several classes, {"per_image_class": {name: [...]}}."""
    m = _matrix(agree)
    out = {"per_image": dict(zip(names, map(float, m.mean(axis=1))))}
    if m.shape[1] > 1:
        out["per_image_class"] = {n: [float(v) for v in row] for n, row in zip(names, m)}
    return out


def _fields(d: dict) -> dict:
    return {"n": d["n"], "mean": d["mean"], "p5": d["p5"], "worst": d["worst"], "n_below_0.90": d["n_bad"],
            "frac_below_0.90": d["bad_share"], "upper95_bad_rate": d["bad_share_upper95"],
            "mean_lower95": d["mean_lower95"]}


def stats(agree, names=None) -> dict:
    """n, mean, p5, worst, images below 0.90 and the 95% Clopper-Pearson bound (core distribution)
    and the product's INT8 gate decision (mean and tail floors, and for several classes each
    class's mean >= the floor - CLASS_MARGIN), with each class's figures when there are several."""
    m = _matrix(agree)
    a = m.mean(axis=1)
    names = list(names) if names is not None else None
    dist = distribution(a, names)
    summary = {"distribution": dist}
    if m.shape[1] > 1:
        summary["per_class_agreement"] = [float(v) for v in m.mean(axis=0)]
    decision = gate(summary, PRECISION)
    out = {**_fields(dist), "passes_gate": decision["passed"], "gate_failure": decision["failure"]}
    if names is not None:
        out["worst_image"] = dist["worst_image"]
        out["images_below_0.90"] = [names[i] for i in np.flatnonzero(a < GATE_BAD)]
    if m.shape[1] > 1:
        out["per_class"] = []
        for k in range(m.shape[1]):
            d = distribution(m[:, k], names)
            out["per_class"].append({**_fields(d), **({"worst_image": d["worst_image"]} if names else {})})
    return out


def line(s: dict) -> str:
    text = (f"n {s['n']}, mean {s['mean']:.4f}, p5 {s['p5']:.4f}, worst {s['worst']:.4f}, "
            f"{s['n_below_0.90']} below 0.90 (95% upper bound {100 * s['upper95_bad_rate']:.1f}%)")
    text += "" if s["passes_gate"] else " FAIL"
    if "per_class" not in s:
        return text
    classes = "; ".join(f"class {k} {c['mean']:.4f} / p5 {c['p5']:.4f} / worst {c['worst']:.4f} / "
                        f"{c['n_below_0.90']} < 0.90 ({100 * c['upper95_bad_rate']:.1f}%)"
                        for k, c in enumerate(s["per_class"]))
    return text + f"\n        per class: {classes}"


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


# ---------------------------------------------------------------- data
class Data:
    """Validation inputs, halves, PyTorch FP32 reference logits and the training calibration folder."""

    def __init__(self, args, work: Path):
        from cmunext_edge.checkpoints.weights import load_checkpoint
        split = json.loads(Path(args.split).read_text())
        self.names = sorted(split["val"])
        overlap = set(self.names) & set(split["train"])
        if overlap:
            raise SystemExit(f"split has {len(overlap)} images in both train and val")
        self.half = {"A": list(range(0, len(self.names), 2)), "B": list(range(1, len(self.names), 2)),
                     "all": list(range(len(self.names)))}
        self.ckpt = load_checkpoint(args.weights)
        self.spec, self.data, self.work = self.ckpt.spec, Path(args.data), work
        self.calib = work / "calib_train"
        if not self.calib.exists():
            train_calibration_folder(self.data, Path(args.split), self.calib)
        self.X = self.inputs()
        self.ref = self.cached("ref_fp32", lambda: self.reference(self.X))

    def bgr(self, name: str) -> np.ndarray:
        from cmunext_edge.core.preprocess import load_image, to_bgr_uint8
        return to_bgr_uint8(load_image(self.data / "images" / f"{name}.png"))

    def inputs(self, noise_seed: int | None = None) -> np.ndarray:
        """Preprocessed validation inputs; with `noise_seed`, +-1 grey level (uniform on {-1, 0, +1},
        the same on the three channels of a grey image) added to the original uint8 pixels."""
        rng = None if noise_seed is None else np.random.default_rng(noise_seed)
        xs = []
        for n in self.names:
            img = self.bgr(n)
            if rng is not None:
                step = rng.integers(-1, 2, size=img.shape[:2] + (1,))
                img = np.clip(img.astype(np.int16) + step, 0, 255).astype(np.uint8)
            xs.append(self.spec.preprocess(img))
        return np.stack(xs).astype(np.float32)

    def reference(self, X: np.ndarray) -> np.ndarray:
        from cmunext_edge.export.verify import reference_logits
        return reference_logits(self.model, X)

    @property
    def model(self):
        if not hasattr(self, "_model"):
            self._model = self.ckpt.build()
        return self._model

    def cached(self, key: str, make):
        path = self.work / f"{key}.npy"
        if path.exists():
            return np.load(path)
        value = make()
        np.save(path, value)
        return value

    def report(self, agree) -> dict:
        return {h: stats(agree[idx], [self.names[i] for i in idx]) for h, idx in self.half.items()}


# ---------------------------------------------------------------- artifacts (the toolkit's export)
def export_artifact(args, work: Path, name: str, target: str, precision: str, graph=None, nncf=None,
                    ort_quant=None, calib=None) -> Path:
    """One artifact through the toolkit's export() (no verification: measured here), cached."""
    from cmunext_edge.export.pipeline import export
    out = work / "artifacts" / name
    suffix = {"openvino": ".xml", "onnx": ".onnx", "onnxruntime": ".onnx"}[target]
    path = out / (name + suffix)
    if not path.exists():
        t0 = time.perf_counter()
        export(args.weights, target=target, precision=precision, out=out, name=name, graph=graph,
               nncf=nncf, ort_quant=ort_quant, calib=calib, calib_size=args.calib_size, seed=args.seed,
               verify=False, log=lambda msg: None)
        print(f"  exported {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def run_ir(path, X: np.ndarray, model=None) -> np.ndarray:
    """Logits of an IR (path, or an in-memory ov.Model), batch 1, CPU, latency hint."""
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(model if model is not None else core.read_model(str(path)), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY"})
    return np.concatenate([compiled(X[i:i + 1])[0] for i in range(len(X))])


def run_artifact(path: Path, X: np.ndarray) -> tuple[np.ndarray, str]:
    """Logits through the toolkit's runtime backend (as cmunext-predict runs it), and what ran."""
    from cmunext_edge.runtime.registry import open_backend
    with open_backend(path, device="cpu", verify=False) as be:
        out = np.concatenate([be.infer(X[i:i + 1]) for i in range(len(X))])
        return out, f"{be.name} {be.precision} (inference precision {getattr(be, 'inference_precision', None)})"


def float_conv_layers(xml: Path) -> list[str]:
    """Convolutions of a quantized IR whose weights are not int8 (kept in float), read back."""
    import openvino as ov
    model = ov.Core().read_model(str(xml))
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in CONV_TYPES:
            node = op.input_value(1).get_node()
            while node.get_input_size() and node.get_type_name() != "Constant":
                node = node.input_value(0).get_node()
            if str(node.get_output_element_type(0)) not in ("<Type: 'int8_t'>", "<Type: 'uint8_t'>"):
                out.append(op.get_friendly_name())
    return out


def module_pattern(conv_name: str) -> str:
    """An NNCF ignored-scope pattern for the module of an OpenVINO convolution node name
    ('/encoder1/up/conv/conv.0/Conv/WithoutBiases' -> '.*/encoder1/up/conv/conv.0/.*')."""
    module = re.sub(r"/Conv(/WithoutBiases)?$", "", conv_name)
    return ".*" + module + "/.*"


# ---------------------------------------------------------------- sensitivity (quantizers removed in the IR)
class Bypass:
    """Variants of a quantized IR with some convolutions back in float: their input FakeQuantize
    removed (through a Concat, and a propagated one behind an Interpolate) and their int8 weights
    replaced by the FP32 IR's. Equal to re-quantizing with those layers in NNCF's ignored scope up
    to bias correction of the layers around them (checked by `confirm`)."""

    def __init__(self, int8_xml: Path, fp32_onnx: Path):
        import openvino as ov
        self.ov, self.core, self.path = ov, ov.Core(), str(int8_xml)
        fp32 = ov.convert_model(str(fp32_onnx))
        self.weights = {op.get_friendly_name(): op.input_value(1).get_node().get_data().copy()
                        for op in fp32.get_ordered_ops() if op.get_type_name() in CONV_TYPES}
        self.units = [op.get_friendly_name() for op in self.core.read_model(self.path).get_ordered_ops()
                      if op.get_type_name() in CONV_TYPES]

    @staticmethod
    def _fqs(output) -> list:
        node = output.get_node()
        if node.get_type_name() == "FakeQuantize":
            return [node]
        if node.get_type_name() == "Concat":
            return [fq for i in range(node.get_input_size()) for fq in Bypass._fqs(node.input_value(i))]
        return []

    def model(self, float_units):
        from openvino import opset13 as ops
        m = self.core.read_model(self.path)
        by_name = {op.get_friendly_name(): op for op in m.get_ordered_ops()}
        for unit in float_units:
            op = by_name[unit]
            for fq in self._fqs(op.input_value(0)):
                src = fq.input_value(0)
                for target in list(fq.output(0).get_target_inputs()):
                    target.replace_source_output(src)
                node = src.get_node()
                if node.get_type_name() == "Interpolate" and node.input_value(0).get_node().get_type_name() == "FakeQuantize":
                    node.input(0).replace_source_output(node.input_value(0).get_node().input_value(0))
            op.input(1).replace_source_output(ops.constant(self.weights[unit]).output(0))
        m.validate_nodes_and_infer_types()
        return m


def gate_ok(a) -> bool:
    """The product's INT8 gate (core/agreement.py) on per-image (per-class) agreement."""
    return stats(a)["passes_gate"]


def gate_ok_margin(a, margin: float = 0.0) -> bool:
    """The product's gate and, with `margin`, its mean floor (and each class's floor) raised by it:
    a search target with headroom for images the search did not see."""
    if not gate_ok(a):
        return False
    m, floor = _matrix(a), GATES[PRECISION].mean + margin
    return bool(m.mean() >= floor and (m.shape[1] == 1 or (m.mean(axis=0) >= floor - CLASS_MARGIN).all()))


def search_key(a) -> tuple:
    """What the greedy minimises: images below 0.90 first, then (several classes) how far the
    class means fall short of the gate's per-class floor, then the higher mean. With one class the
    middle term is 0: the 1-class search is unchanged."""
    m = _matrix(a)
    floor = GATES[PRECISION].mean - CLASS_MARGIN
    short = float(np.clip(floor - m.mean(axis=0), 0, None).sum()) if m.shape[1] > 1 else 0.0
    return (int((per_image(m) < GATE_BAD).sum()), short, -float(m.mean()))


def search(bypass: Bypass, X, ref, log, max_float: int | None = None, pool: int | None = None,
           margin: float = 0.0) -> dict:
    """Single-layer scan, greedy forward selection until the gate holds (at most `max_float`
    convolutions; with `pool`, each step tries only the `pool` convolutions best on their own in
    the scan), backward pruning. When the gate is not reached, the best set found is kept and said so."""
    def score(units):
        return agreement(run_ir(None, X, bypass.model(units)), ref)

    cap = len(bypass.units) if not max_float else min(max_float, len(bypass.units))
    t0 = time.perf_counter()
    base = score([])
    single = {u: score([u]) for u in bypass.units}
    log(f"    current recipe on A: {line(stats(base))}")
    every = score(bypass.units)
    log(f"    every convolution float on A: {line(stats(every))}")
    log(f"    ({len(bypass.units)} convolutions; single-layer scan {time.perf_counter() - t0:.0f} s; "
        f"at most {cap} kept float)")
    ranked = sorted(bypass.units, key=lambda u: search_key(single[u]))
    candidates = ranked[:pool] if pool else bypass.units
    if pool:
        log(f"    greedy pool: the {len(candidates)} convolutions best on their own")
    chosen, cur, steps = [], base, []
    best_seen = (search_key(base), [], base)
    def target(a):
        return gate_ok_margin(a, margin)
    if margin:
        log(f"    search target: the gate with its mean floors raised by {margin}")
    while not target(cur) and len(chosen) < min(cap, len(candidates)):
        trials = {u: (single[u] if not chosen else score(chosen + [u])) for u in candidates if u not in chosen}
        best = min(trials, key=lambda u: search_key(trials[u]))
        chosen.append(best)
        cur = trials[best]
        if search_key(cur) < best_seen[0]:
            best_seen = (search_key(cur), list(chosen), cur)
        steps.append({"add": best, **stats(cur)})
        log(f"    + {best}: {line(stats(cur))} ({time.perf_counter() - t0:.0f} s)")
    reached = target(cur)
    if not reached:                     # keep the best prefix of the greedy path, not its last step
        chosen, cur = best_seen[1], best_seen[2]
        log(f"    {'gate' if not margin else 'target'} NOT reached on A with up to {cap} float convolutions; "
            f"best: {len(chosen)} float, "
            f"{line(stats(cur))}")
    for unit in list(chosen):           # backward pruning: drop what the gate does not need
        rest = [u for u in chosen if u != unit]
        if reached and rest and target(a := score(rest)):
            chosen, cur = rest, a
            steps.append({"drop": unit, **stats(cur)})
            log(f"    - {unit}: {line(stats(cur))}")
    return {"units": bypass.units, "base_A": stats(base), "every_float_A": stats(every), "max_float": cap,
            "pool": candidates if pool else None,
            "single_A": {u: stats(a) for u, a in single.items()}, "steps": steps,
            "chosen": chosen, "chosen_A": stats(cur), "gate_holds_on_A": gate_ok(cur), "margin": margin,
            "target_holds_on_A": target(cur),
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- evidence
def flip_location(out: np.ndarray, ref: np.ndarray, band_px: int = 2) -> dict:
    """Where one image's flipped pixels lie (summed over its classes): within `band_px` of the FP32
    mask boundary, in whole connected components that appear (artifact only) or vanish (FP32
    only), or elsewhere."""
    per = [_flip_location_class(o, r, band_px) for o, r in zip(out, ref)]
    return {k: int(sum(p[k] for p in per)) for k in per[0]}


def _flip_location_class(out: np.ndarray, ref: np.ndarray, band_px: int) -> dict:
    import cv2
    a, r = out > 0, ref > 0
    flip = a ^ r
    k = np.ones((2 * band_px + 1, 2 * band_px + 1), np.uint8)
    r8 = r.astype(np.uint8)
    band = (cv2.dilate(r8, k) - cv2.erode(r8, k)).astype(bool)

    def whole(mask, other):
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        keep = np.zeros_like(mask)
        for c in range(1, n):
            comp = lab == c
            if not (comp & other).any():
                keep |= comp
        return keep
    appear, vanish = whole(a, r), whole(r, a)
    n = int(flip.sum())
    boundary = flip & band & ~appear & ~vanish
    k5 = np.ones((11, 11), np.uint8)          # a wider band: the boundary moved by 3-5 px
    band5 = (cv2.dilate(r8, k5) - cv2.erode(r8, k5)).astype(bool)
    return {"flipped": n, "appear": int(appear.sum()), "vanish": int(vanish.sum()),
            "boundary": int(boundary.sum()), "other": int((flip & ~band & ~appear & ~vanish).sum()),
            "other_within_5px": int((flip & band5 & ~band & ~appear & ~vanish).sum()),
            "fp32_mask_px": int(r.sum()), "artifact_mask_px": int(a.sum())}


def margins(out: np.ndarray, ref: np.ndarray) -> dict:
    """How far FP32 logits are from the threshold (logit 0), overall and on flipped pixels (all
    classes' pixels together)."""
    r = ref
    flip = (out > 0) ^ (r > 0)
    absr = np.abs(r)
    d = {f"frac_abs_logit_lt_{m}": float((absr < m).mean()) for m in (0.5, 1.0, 2.0)}
    d["median_abs_logit_flipped"] = float(np.median(absr[flip])) if flip.any() else None
    d["frac_flipped_within_1"] = float((absr[flip] < 1.0).mean()) if flip.any() else None
    d["mean_abs_delta"] = float(np.abs(out - r).mean())
    d["mean_abs_delta_flipped"] = float(np.abs(out - r)[flip].mean()) if flip.any() else None
    return d


def evidence(data: Data, outputs: dict, noise_draws: int, log) -> dict:
    """Flip location, logit margins and FP32 self-agreement under +-1 grey level noise."""
    ref = data.ref
    noise = []
    for k in range(noise_draws):
        t0 = time.perf_counter()
        noisy = data.cached(f"ref_fp32_noise{k}", lambda k=k: data.reference(data.inputs(noise_seed=k)))
        noise.append(agreement(noisy, ref))
        log(f"  FP32 vs itself, +-1 grey level noise draw {k}: {line(stats(noise[-1]))} "
            f"({time.perf_counter() - t0:.0f} s)")
    noise = np.stack(noise)                   # draws x images (x classes)
    worst_draw = np.stack([per_image(x) for x in noise]).argmin(0)
    noise_worst = noise[worst_draw, np.arange(noise.shape[1])]    # each image's worst draw
    res = {"noise": {"draws": noise_draws, "per_draw": [data.report(a) for a in noise],
                     "worst_over_draws": data.report(noise_worst),
                     "per_image_worst": per_image_record(data.names, noise_worst)["per_image"]},
           "recipes": {}}
    near1 = np.array([(np.abs(r) < 1.0).mean() for r in ref])
    noise_worst = per_image(noise_worst)
    for label, out in outputs.items():
        a = per_image(agreement(out, ref))
        loc = [flip_location(o, r) for o, r in zip(out, ref)]
        mar = [margins(o, r) for o, r in zip(out, ref)]
        tot = {k: int(sum(x[k] for x in loc)) for k in ("flipped", "boundary", "appear", "vanish", "other",
                                                        "other_within_5px")}
        bad = np.flatnonzero(a < GATE_BAD)
        res["recipes"][label] = {
            "flips_total": tot,
            "flips_on_images_below_0.90": {k: int(sum(loc[i][k] for i in bad))
                                           for k in ("flipped", "boundary", "appear", "vanish", "other")},
            "spearman_disagreement_vs_frac_abs_logit_lt_1": spearman(1 - a, near1),
            "spearman_disagreement_vs_noise_disagreement": spearman(1 - a, 1 - noise_worst),
            "spearman_disagreement_vs_inverse_mask_size": spearman(
                1 - a, [-x["fp32_mask_px"] for x in loc]),
            "per_image": [{"image": data.names[i], "half": "A" if i % 2 == 0 else "B",
                           "agreement": float(a[i]), "fp32_noise_agreement_worst": float(noise_worst[i]),
                           **loc[i], **mar[i]} for i in range(len(a))],
        }
        flipped = tot["flipped"] or 1
        log(f"  {label}: {tot['flipped']} flipped pixels on {len(a)} images: boundary band "
            f"{100 * tot['boundary'] / flipped:.0f}%, whole components appear {100 * tot['appear'] / flipped:.0f}% "
            f"/ vanish {100 * tot['vanish'] / flipped:.0f}%, other {100 * tot['other'] / flipped:.0f}% "
            f"({100 * tot['other_within_5px'] / flipped:.0f}% within 3-5 px of the FP32 boundary)")
        r = res["recipes"][label]
        log(f"    per-image Spearman correlation of INT8 disagreement (1 - agreement) with: the share of "
            f"pixels with |FP32 logit| < 1 {r['spearman_disagreement_vs_frac_abs_logit_lt_1']:.2f}; FP32's own "
            f"disagreement under noise {r['spearman_disagreement_vs_noise_disagreement']:.2f}; smaller FP32 "
            f"mask {r['spearman_disagreement_vs_inverse_mask_size']:.2f}")
        for i in np.argsort(a)[:6]:
            log(f"    {data.names[i]:18s} agreement {a[i]:.4f}  FP32-vs-noisy-FP32 worst {noise_worst[i]:.4f}  "
                f"FP32 mask {loc[i]['fp32_mask_px']} px, artifact {loc[i]['artifact_mask_px']} px, flips "
                f"boundary {loc[i]['boundary']} appear {loc[i]['appear']} vanish {loc[i]['vanish']} "
                f"other {loc[i]['other']}; |FP32 logit|<1 on {100 * mar[i]['frac_abs_logit_lt_1.0']:.2f}% "
                f"of pixels, median |FP32 logit| on flips {mar[i]['median_abs_logit_flipped']}")
    return res


# ---------------------------------------------------------------- timing
def timing(paths: dict, X: np.ndarray, rounds: int, iters: int, threads: int | None) -> dict:
    from cmunext_edge.bench.timing import alternating_rounds
    from cmunext_edge.runtime.registry import open_backend
    opts = {"threads": threads} if threads else {}
    backends = {k: open_backend(p, device="cpu", verify=False, **opts) for k, p in paths.items()}
    try:
        ran = {k: f"{be.name} {be.precision} ({getattr(be, 'inference_precision', None)})"
               for k, be in backends.items()}
        rounds_ms = alternating_rounds({k: be.infer for k, be in backends.items()}, [X[:1]], rounds, iters,
                                       warmup=5)
    finally:
        for be in backends.values():
            be.close()
    out = {}
    for k, per_round in rounds_ms.items():
        med = [float(np.median(r)) for r in per_round]
        out[k] = {"p50_of_round_medians_ms": float(np.median(med)), "best_round_ms": min(med),
                  "worst_round_ms": max(med), "ran": ran[k]}
    return out


# ---------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="models/cmunext-s-busi.safetensors")
    p.add_argument("--data", default="../shared/data/busi-train")
    p.add_argument("--split", default="models/cmunext-s-busi.split.json")
    p.add_argument("--calib-size", type=int, default=64, help="training images NNCF calibrates on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--graphs", default="plain,dense", help=f"graph variants: {', '.join(GRAPHS)}")
    p.add_argument("--float-layers", action="append", default=[], metavar="LABEL=PATTERN,PATTERN",
                   help="an extra named float-layer list (NNCF ignored-scope patterns) to confirm on "
                        "every graph, e.g. product=.*/encoder1/up/conv/conv.0/.*")
    p.add_argument("--max-float", type=int, default=12,
                   help="the greedy search keeps at most this many convolutions float (0: no cap); when "
                        "the gate is not reached on A, the best set found is confirmed and reported")
    p.add_argument("--search-pool", type=int, default=0,
                   help="greedy steps try only the N convolutions best on their own in the single-layer scan "
                        "(0: all, the default; a cheaper search, not the full greedy)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="search until the gate holds on A with its mean floors raised by this much "
                        "(0: the gate itself, the default)")
    p.add_argument("--stages", default="recipes,search,evidence,timing,ort")
    p.add_argument("--product-default", action=argparse.BooleanOptionalAction, default=True,
                   help="also export with the product's default INT8 options (no nncf overrides)")
    p.add_argument("--noise-draws", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--iters", type=int, default=25)
    p.add_argument("--threads", type=int, default=None, help="timing threads (default: all cores)")
    p.add_argument("--ort-calib-size", type=int, default=16,
                   help="ORT percentile calibration keeps every activation in memory (16: ~3 GB)")
    p.add_argument("--work", default="out/int8_faithful", help="cache of inputs, artifacts and logits")
    p.add_argument("--tag", default=time.strftime("%Y-%m-%d"))
    p.add_argument("--results", default="benchmarks/results")
    args = p.parse_args(argv)
    stages = set(args.stages.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    from cmunext_edge.capabilities import detect
    cpu = detect()
    command = shlex.join([python(), rel(__file__), *(argv if argv is not None else sys.argv[1:])])
    log(f"command: {command}")
    log(f"CPU: {platform.processor() or platform.machine()} / {_cpu_name()}; {cpu.summary()}")
    data = Data(args, work)
    calib = data.calib
    n_a, n_b = len(data.half["A"]), len(data.half["B"])
    log(f"data: {len(data.names)} validation images of {rel(args.split)} (A {n_a} even / B {n_b} odd by "
        f"sorted name); calibration: {args.calib_size} of {len(list((calib / 'images').iterdir()))} training images")
    g = GATES[PRECISION]
    log(f"model: {rel(args.weights)}, {data.ckpt.info.num_classes} class(es); gate (core/agreement.py, {PRECISION}): "
        f"mean >= {g.mean}, at most {100 * g.tail:g}% of images below {BAD_IMAGE}"
        + (f", each class's mean >= {g.mean} - {CLASS_MARGIN}" if data.ckpt.info.num_classes > 1 else ""))
    record = {"command": command, "cpu": _cpu_name(), "capabilities": cpu.as_dict(), "halves": {
        "A": [data.names[i] for i in data.half["A"]], "B": [data.names[i] for i in data.half["B"]]},
        "calib_size": args.calib_size, "seed": args.seed, "graphs": {}}
    extra = {}
    for spec in args.float_layers:
        label, _, pats = spec.partition("=")
        extra[label] = [x for x in pats.split(",") if x]
    outputs, timed = {}, {}
    for gname in args.graphs.split(","):
        graph = GRAPHS[gname]
        log(f"\n== graph {gname} ({graph or 'no rewrites'})")
        g = record["graphs"][gname] = {"recipes": {}}
        fp32_onnx = export_artifact(args, work, f"{gname}_fp32", "onnx", "fp32", graph)
        ov_fp32 = export_artifact(args, work, f"{gname}_ov_fp32", "openvino", "fp32", graph)
        # the recipe before issue 21 (every convolution INT8), pinned: the product default changed
        current = export_artifact(args, work, f"{gname}_int8_current", "openvino", "int8", graph,
                                  nncf=ALL_INT8, calib=calib)
        recipes = {"ov_fp32": ov_fp32, "int8_current": current}
        if args.product_default:       # what `cmunext-export --target openvino --int8` does now
            recipes["int8_product_default"] = export_artifact(args, work, f"{gname}_int8_product_default",
                                                              "openvino", "int8", graph, calib=calib)
        if "search" in stages:
            log("  search on half A (quantizers of one convolution removed at a time):")
            found = search(Bypass(current, fp32_onnx), data.X[data.half["A"]], data.ref[data.half["A"]], log,
                           args.max_float, args.search_pool, args.margin)
            g["search"] = found
            pats = [module_pattern(u) for u in found["chosen"]]
            g["found_patterns"] = pats
            log(f"  found{'' if found['target_holds_on_A'] else ' (target NOT reached on A: the best set)'}: {pats}")
            recipes["int8_found"] = export_artifact(args, work, f"{gname}_int8_found_{_digest(pats)}", "openvino",
                                                    "int8", graph, nncf={"float_layers": pats}, calib=calib)
        for label, pats in extra.items():
            recipes[f"int8_{label}"] = export_artifact(args, work, f"{gname}_int8_{label}_{_digest(pats)}",
                                                       "openvino", "int8", graph,
                                                       nncf={"float_layers": pats}, calib=calib)
        for label, path in recipes.items():
            out, ran = run_artifact(path, data.X)
            agree = agreement(out, data.ref)
            rep = data.report(agree)
            fl = float_conv_layers(path) if "int8" in label else None
            g["recipes"][label] = {"artifact": rel(path), "ran": ran, "float_convolutions": fl, **rep,
                                   **per_image_record(data.names, agree)}
            log(f"  {label} [{ran}]" + (f", float convolutions {fl}" if fl is not None else ""))
            for h in ("A", "B", "all"):
                log(f"    {h:3s} {line(rep[h])}")
            if "int8" in label:
                outputs[f"{gname}/{label}"] = out
            timed[f"{gname}/{label}"] = path
        if "search" in stages and "int8_found" in g["recipes"]:
            bypass_a = g["search"]["chosen_A"]["mean"]
            real_a = g["recipes"]["int8_found"]["A"]["mean"]
            log(f"  check: found layers removed in the IR (A mean {bypass_a:.4f}) vs re-quantized with "
                f"them in NNCF's ignored scope (A mean {real_a:.4f})")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"int8_faithful_{args.tag}"

    def save() -> None:                 # after every stage: a late failure keeps what was measured
        stem.with_suffix(".json").write_text(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    save()
    if "evidence" in stages:
        log("\n== evidence (all validation images)")
        record["evidence"] = evidence(data, outputs, args.noise_draws, log)
        save()
    if "timing" in stages:
        log(f"\n== timing: batch 1, {args.rounds} alternating rounds x {args.iters} calls, one process")
        keep = {k: v for k, v in timed.items() if not k.endswith("ov_fp32") or k.startswith("plain")}
        record["timing"] = timing(keep, data.X, args.rounds, args.iters, args.threads)
        base = record["timing"].get("plain/int8_current", {}).get("p50_of_round_medians_ms")
        fp32 = record["timing"].get("plain/ov_fp32", {}).get("p50_of_round_medians_ms")
        for k, t in record["timing"].items():
            rel_txt = "".join(f", {t['p50_of_round_medians_ms'] / b:.2f}x {n}" for n, b in
                              (("plain INT8 current", base), ("OpenVINO FP32", fp32)) if b)
            log(f"  {k:32s} {t['p50_of_round_medians_ms']:6.2f} ms (rounds {t['best_round_ms']:.2f}-"
                f"{t['worst_round_ms']:.2f}){rel_txt}  [{t['ran']}]")
        save()
    if "demo" in stages:
        log("\n== the README main job's INT8 export (cmunext-demo: calibrated on the 16 bundled samples, "
            "which are validation images of this split), before and after issue 21")
        record["demo"] = demo_stage(args, work, data, log)
        save()
    if "ort" in stages:
        log("\n== ONNX Runtime INT8 (export/ort_quant.py, QDQ per-channel percentile, "
            f"{args.ort_calib_size} training images)")
        record["ort"] = ort_stage(args, work, data, record, extra, log)
        save()
    print(f"\nwrote {rel(stem.with_suffix('.json'))} and {rel(stem.with_suffix('.txt'))}")


def demo_stage(args, work: Path, data: Data, log) -> dict:
    """`export(weights, target="openvino", precision="int8")` as cmunext-demo calls it (no --calib:
    the bundled samples), with the previous recipe and the product's default; agreement on all
    validation images and on those that were not calibration images."""
    from cmunext_edge.resources import SAMPLES_DIR
    bundled = {p.stem for p in (SAMPLES_DIR / "images").iterdir()}
    unseen = [i for i, n in enumerate(data.names) if n not in bundled]
    out = {"bundled_samples": sorted(bundled), "n_not_calibration": len(unseen)}
    for label, nncf in (("previous", ALL_INT8), ("product_default", None)):
        path = export_artifact(args, work, f"demo_int8_{label}", "openvino", "int8", None, nncf=nncf, calib=None)
        logits, ran = run_artifact(path, data.X)
        agree = agreement(logits, data.ref)
        names = [data.names[i] for i in unseen]
        out[label] = {"artifact": rel(path), "ran": ran, "float_convolutions": float_conv_layers(path),
                      **data.report(agree), "not_calibration": stats(agree[unseen], names),
                      **per_image_record(data.names, agree)}
        log(f"  {label} [{ran}], float convolutions {out[label]['float_convolutions']}")
        for h in ("A", "B", "all"):
            log(f"    {h:3s} {line(out[label][h])}")
        log(f"    {len(unseen)} not calibrated on: {line(out[label]['not_calibration'])}")
    return out


def ort_stage(args, work: Path, data: Data, record: dict, extra: dict, log) -> dict:
    """ORT INT8 QDQ of the plain graph (export/ort_quant.py defaults): every node ORT quantizes,
    and with the float layers found for OpenVINO (and the --float-layers lists) left in float
    (ort_quant's `float_layers`, matched against the ONNX node names)."""
    lists = {"current": "none"}
    found = record["graphs"].get("plain", {}).get("found_patterns")
    if found:
        lists["found"] = found
    for label, pats in extra.items():
        lists[label] = pats
    out = {}
    for label, nodes in lists.items():
        quant = {"max_images": args.ort_calib_size, "float_layers": nodes}
        try:
            path = export_artifact(args, work, f"ort_int8_{label}_{_digest([nodes] if isinstance(nodes, str) else nodes)}", "onnxruntime",
                                   "int8", None, ort_quant=quant, calib=data.calib)
        except Exception as exc:                       # e.g. out of memory in percentile calibration
            log(f"  {label}: not built ({type(exc).__name__}: {exc})")
            continue
        logits, ran = run_artifact(path, data.X)
        agree = agreement(logits, data.ref)
        kept = json.loads(_onnx_meta(path).get("cmunext_edge.int8_float_layers", "null"))
        out[label] = {"artifact": rel(path), "ran": ran, "float_layers": nodes, "float_convolutions": kept,
                      **data.report(agree), **per_image_record(data.names, agree)}
        log(f"  {label} [{ran}], float convolutions {kept}")
        for h in ("A", "B", "all"):
            log(f"    {h:3s} {line(out[label][h])}")
    return out


def _onnx_meta(path: Path) -> dict:
    import onnx
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _digest(items) -> str:
    import hashlib
    return hashlib.sha256("|".join(items).encode()).hexdigest()[:8]


def _cpu_name() -> str:
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
