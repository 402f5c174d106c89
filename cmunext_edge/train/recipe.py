"""Light training / fine-tuning with the official CMUNeXt recipe.

Defaults reproduce the authors' main.py: SGD (lr 0.01, momentum 0.9, weight decay 1e-4),
poly learning-rate decay (power 0.9, per iteration), loss 0.5*BCE + Dice, RandomRotate90
and flips, 256x256 input with the `official` preprocessing, batch 8. Validation runs every
epoch with the official Dice/IoU; the best epoch by validation IoU is kept.

One deliberate difference, for CPU speed: images are decoded and resized to the network
size once, and the rotations/flips are applied to the resized image (the official code
flips first, then resizes; for 90-degree rotations and flips the two orders agree up to
interpolation rounding). Precision: `auto` (the default) trains in bf16 autocast only where the
hardware runs bf16 natively (capabilities.py), else fp32. The first epoch logs its measured step
time and an estimate for the whole run. On an accelerator (`device="cuda"`) the cached training set
is normalised once, kept on the device and augmented there (the same random draws and values as
on the host: tests/test_train.py), so a step copies nothing from the host.

Several classes (train_state.py): ground truth in per-class mask folders (masks/0/ ... masks/<N-1>/)
or label images (labels/) trains one output channel per class (default: every class the dataset
holds; `num_classes` picks the first N). Masks are cached as C x H x W, the loss is the official
BCEDiceLoss over all channels, and validation adds the per-class Dice (metrics.class_scores) to
the official IoU, which still picks the best epoch.

Output folder: `best.pth` (official format), `best.safetensors` (metadata: val_dice, val_iou, epoch,
and per_class_dice for 2+ classes), `last.pt` (resume state: model, optimizer, epoch, history;
loaded with weights_only=True), `split.json`, `history.csv` (columns val_dice_class0, ... for 2+
classes). Starting again with the same folder resumes after the last finished epoch.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.capabilities import detect
from cmunext_edge.fileio import atomic_path, sha256_file, loads_json
from cmunext_edge.resources import SPLIT_CHECKPOINTS_KEY
from cmunext_edge.data.discovery import Sample, discover, read_name_list, source_split, truth_notes
from cmunext_edge.data.fingerprint import FINGERPRINTS_KEY, LOOKALIKES_KEY, Seen, image_fingerprint
from cmunext_edge.core.metrics import (class_scores_from_logits, format_class_dice, summarize_scores)
from cmunext_edge.core.model import build_model, canonical_variant
from cmunext_edge.core.preprocess import ImageReadError, PreprocessSpec, get_preset, load_image, naming, to_bgr_uint8
from cmunext_edge.progress import Progress
from cmunext_edge.train.state import (BEST_FILES, check_resume_settings, class_truth, load_init, read_split,
                                      resolve_classes, resume, write_history)
from cmunext_edge.train.state import schedule_change  # noqa: F401 (API: the resume note)
from cmunext_edge.checkpoints.weights import checkpoint_write, save_official_pth, save_safetensors


@dataclass
class TrainConfig:
    data: str
    out: str
    variant: str = "cmunext-s"
    epochs: int = 300
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    img_size: int = 256
    val_fraction: float = 0.2
    seed: int = 42
    val_list: str | None = None
    init: str | None = None          # fine-tune from this checkpoint
    num_classes: int = 0             # 0 = every class of the dataset's ground truth
    precision: str = "auto"          # autocast dtype: auto (bf16 where native, else fp32), fp32, bf16, fp16 (CUDA)
    channels_last: bool = True
    device: str = "cpu"
    threads: int = 0                  # 0 = torch default
    max_train_images: int = 0         # 0 = all (small values for smoke tests)


def _cache(samples: list[Sample], spec: PreprocessSpec, classes: int, held: int, skipped: dict):
    """Images as network-size BGR uint8 (N, H, W, 3) and masks as 0/1 uint8 (N, C, H, W), decoded
    once, the names kept and their pixel fingerprints (data/fingerprint.py). An image or mask that
    cannot be read is left out and recorded in `skipped` (name -> reason): one bad file never stops
    a run."""
    images, masks, kept, prints = [], [], [], []
    for s in samples:
        try:
            bgr = to_bgr_uint8(load_image(s.image, frame=s.frame))
            truth = class_truth(s, classes, held, spec.size, image_hw=bgr.shape[:2])
        except (ImageReadError, ValueError, OSError) as exc:
            skipped[s.name] = naming(s.image, exc)
            continue
        images.append(cv2.resize(bgr, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR))
        masks.append(truth)
        kept.append(s.name)
        prints.append(image_fingerprint(bgr))
    empty = (np.zeros((0, spec.height, spec.width, 3), np.uint8), np.zeros((0, classes, *spec.size), np.uint8))
    return (np.stack(images), np.stack(masks)) if images else empty, kept, prints


def _normalise(spec: PreprocessSpec, batch_bgr: np.ndarray) -> np.ndarray:
    """Already-resized BGR images (N,H,W,3) -> (N,3,H,W) network input, as spec.preprocess."""
    return np.ascontiguousarray(spec.normalize(batch_bgr).transpose(0, 3, 1, 2))


def _to_device(torch, spec: PreprocessSpec, train_set: tuple, device) -> tuple:
    """The cached training set as device tensors, normalised once here (spec.normalize): quarter
    turns and flips only move pixels, so normalising before augmenting gives the values the host
    path gets by normalising after, and a step does no arithmetic on the images."""
    images, masks = train_set
    return (torch.from_numpy(np.ascontiguousarray(spec.normalize(images))).to(device),
            torch.from_numpy(np.ascontiguousarray(masks)).to(device))


def _augment_plan(rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
    """albumentations RandomRotate90 then Flip (horizontal, vertical or both), p=0.5 each: the
    quarter turns k and the flipped axes (of an H x W image) of one sample, drawn from `rng`."""
    k, axes = 0, ()
    if rng.random() < 0.5:
        k = int(rng.integers(0, 4))
    if rng.random() < 0.5:
        code = int(rng.integers(-1, 2))  # -1 both, 0 vertical, 1 horizontal
        axes = {-1: (0, 1), 0: (0,), 1: (1,)}[code]
    return k, axes


def _apply_plan(lib, plan: tuple[int, tuple[int, ...]], img, mask):
    """An _augment_plan applied to an H x W x 3 image and its C x H x W masks alike (the masks' H
    and W are axes 1 and 2), with `lib` numpy (arrays) or torch (tensors on any device): both
    spell rot90(a, k, axes) and flip(a, axes) the same way, so both paths give the same pixels."""
    k, axes = plan
    if k:
        img, mask = lib.rot90(img, k, (0, 1)), lib.rot90(mask, k, (1, 2))
    if axes:
        img, mask = lib.flip(img, axes), lib.flip(mask, tuple(a + 1 for a in axes))
    return img, mask


def _augment(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray):
    """One sample's augmentation, drawn from `rng` and applied on the host."""
    return _apply_plan(np, _augment_plan(rng), img, mask)


def bce_dice_loss(logits, target):
    """The official BCEDiceLoss: 0.5 * BCE-with-logits + (1 - soft Dice per image, averaged); the
    soft Dice of an image runs over all its class channels together, as in the official code."""
    torch = require("torch")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.flatten(1)
    dice = (2.0 * (prob * tgt).sum(1) + 1e-5) / (prob.sum(1) + tgt.sum(1) + 1e-5)
    return 0.5 * bce + (1 - dice.mean())


def _warn_split_sources(samples: list[Sample], val: set, val_list, log) -> None:
    """A --val-list that puts some frames of a multi-frame object in validation and others in training."""
    sides: dict[Path, set] = {}
    for s in samples:
        if s.frame is not None:
            sides.setdefault(s.image, set()).add(s.name in val)
    split = sorted(str(p) for p, both in sides.items() if len(both) == 2)
    if split:
        log(f"warning: {val_list} splits the frames of {len(split)} multi-frame object(s) between training and "
            f"validation (e.g. {split[0]}): neighbouring frames are near copies, so the validation Dice is optimistic")


def make_split(cfg: TrainConfig, log=print, found=None) -> dict:
    """The train/validation split of `found` (default: the samples of cfg.data)."""
    found = discover(cfg.data) if found is None else found
    samples = [s for s in found if s.mask is not None]
    notes = truth_notes(cfg.data, found)
    if not samples:
        raise ValueError(f"{cfg.data}: no image/mask pairs found (expected images/ and masks/0/, "
                         f"masks/0/ ... masks/<N-1>/ or labels/)" + "".join(f"; {n}" for n in notes))
    for note in notes:
        log(f"note: {note}")
    unpaired = [s.name for s in found if s.mask is None]
    if unpaired:
        log(f"warning: {len(unpaired)} image(s) of {cfg.data} have no mask and are not used (e.g. {unpaired[0]!r})")
    names = [s.name for s in samples]
    if cfg.val_list:
        val = read_name_list(cfg.val_list)
        missing = sorted(set(val) - set(names))
        if missing:
            raise ValueError(f"{cfg.val_list}: names without an image/mask pair: {missing[:3]}")
        train = sorted(set(names) - set(val))
        _warn_split_sources(samples, set(val), cfg.val_list, log)
    else:
        train, val = source_split(samples, cfg.val_fraction, cfg.seed)
    if cfg.max_train_images:
        train = train[: cfg.max_train_images]
    if not train:
        raise ValueError(f"{cfg.data}: the validation split takes all {len(names)} image/mask pairs; none is left "
                         f"to train on (lower --val-fraction or shorten --val-list)")
    return {"seed": cfg.seed, "val_fraction": None if cfg.val_list else cfg.val_fraction,
            **({"val_list": str(cfg.val_list)} if cfg.val_list else {}), "variant": canonical_variant(cfg.variant),
            "img_size": cfg.img_size, "train": train, "val": sorted(val)}


def evaluate(model, images, masks, spec, device, batch_size: int = 16) -> dict:
    """Official mean IoU/Dice over the images (all class channels together) and the mean per-class
    IoU/Dice (metrics.summarize_scores) of (N, C, H, W) masks."""
    torch = require("torch")
    rows = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(_normalise(spec, images[i:i + batch_size])).to(device)
            logits = model(x).float().cpu().numpy()
            rows += [class_scores_from_logits(lg, m) for lg, m in zip(logits, masks[i:i + batch_size])]
    return summarize_scores(rows)


def resolve_precision(precision: str, device: str = "cpu", caps=None) -> tuple[str, str]:
    """(autocast precision, reason). "auto": bf16 where the hardware runs it natively (CPU: AVX-512
    BF16 or AMX, as PyTorch sees it under ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY; CUDA: always),
    else fp32: emulated bf16 is slower than fp32 by orders of magnitude (issue 11: 0.83 against
    94.5 GFLOP/s matmul on a Zen 3)."""
    if precision != "auto":
        return precision, "as requested"
    if not device.startswith("cpu"):
        return "bf16", f"default on {device}"
    caps = caps or detect()
    if caps.torch_bf16_native:
        return "bf16", f"native BF16 on this CPU ({caps.isa})"
    return "fp32", f"no native BF16 on this CPU ({caps.isa}): bf16 would be emulated"


@dataclass
class _Run:
    """What one training run works with (built once by _setup)."""
    model: object
    opt: object
    spec: PreprocessSpec
    device: object
    memory_format: object
    amp_dtype: object
    train: tuple
    val: tuple
    steps_per_epoch: int
    total_steps: int
    num_classes: int
    device_train: tuple | None = None   # the training set as device tensors (off the CPU)
    skipped: dict | None = None         # unreadable images left out (name -> reason)


def _inherited(cfg: TrainConfig, split: dict, val_prints: list, log) -> Seen:
    """The training-image fingerprints of the --init model (its split.json, or a shipped model's):
    its weights saw those images too, so an export must not take them for held-out ones. Recorded
    in split["init"]; the validation images among them are named (they overstate validation Dice)."""
    if not cfg.init:
        return Seen()
    from cmunext_edge.data.model_split import model_split, split_lists
    from cmunext_edge.fileio import sha256_file
    from cmunext_edge.resources import resolve_weights
    weights = Path(resolve_weights(cfg.init))
    sha = sha256_file(weights)
    found = model_split(weights, sha)
    inherited = split_lists(found)[2]
    split["init"] = {"weights": str(cfg.init), "sha256": sha, "split": str(found.resolve()) if found else None,
                     "inherited_train_fingerprints": len(inherited.exact)}
    if found is None:
        log(f"warning: --init {cfg.init}: its training images are not known (no split.json beside it): an "
            f"export cannot tell them from held-out images")
    seen = [name for name, f in zip(split["val"], val_prints) if inherited.holds(f)]
    if seen:
        split["init"]["validation_images_it_trained_on"] = seen
        log(f"warning: {len(seen)} of the {len(val_prints)} validation images trained the --init model ({found}): "
            f"{', '.join(repr(n) for n in seen[:5])}{', ...' if len(seen) > 5 else ''} (all in split.json, "
            f"init.validation_images_it_trained_on): validation Dice overstates how the model does on new "
            f"images, and exports leave them out of verification")
    return inherited


def _same_training_images(split: dict, prints: list, split_path: Path, data) -> None:
    """A resumed run trains on the images it started with: each training image's pixels must be
    among the fingerprints its split.json recorded (a file replaced under the same name is not the
    same image). A split.json without fingerprints (older runs) is matched by name only."""
    recorded = set(split.get(FINGERPRINTS_KEY) or [])
    if not recorded:
        return
    changed = [n for n, f in zip(split["train"], prints) if f.partition("~")[0] not in recorded]
    if changed:
        raise ValueError(f"{split_path}: {len(changed)} of its training images in {data} are not the images this run "
                         f"started with (e.g. {changed[0]!r}: other pixels under the same name); resume with the "
                         f"dataset it was made from, or start a new run with another --out")


def _load_data(cfg: TrainConfig, out: Path, spec: PreprocessSpec, log) -> tuple[tuple, tuple, int, dict]:
    """(train set, validation set, classes, split): images and C x H x W masks of the split's samples
    (the split is written by _setup once everything before training has worked). Unreadable images
    are left out of both sets, each reported, and listed in the split's "skipped"."""
    samples = discover(cfg.data)
    classes, held = resolve_classes(cfg.num_classes, samples, log, cfg.data)
    split_path = out / "split.json"
    split = read_split(split_path) if split_path.exists() else make_split(cfg, log, samples)
    by_name = {s.name: s for s in samples}
    lost = [n for n in split["train"] + split["val"] if n not in by_name]
    if lost:
        raise ValueError(f"{split_path}: {len(lost)} of its images are no longer in {cfg.data} (e.g. {lost[0]!r}); "
                         f"resume with the dataset it was made from, or start a new run with another --out")
    t0 = time.perf_counter()
    skipped = dict(split.get("skipped", {}))
    train_set, split["train"], prints = _cache([by_name[n] for n in split["train"]], spec, classes, held, skipped)
    val_set, split["val"], val_prints = _cache([by_name[n] for n in split["val"]], spec, classes, held, skipped)
    _same_training_images(split, prints, split_path, cfg.data)
    seen = Seen.of(prints) | _inherited(cfg, split, val_prints, log)
    split[FINGERPRINTS_KEY], split[LOOKALIKES_KEY] = seen.lists()
    for name in sorted(set(skipped) - set(split.get("skipped", {}))):
        log(f"skipped: {skipped[name]}")
    earlier = len(split.get("skipped", {}))
    if skipped:
        split["skipped"] = skipped
        log(f"warning: {len(skipped)} image(s) could not be read and are left out of training and validation "
            f"(listed in {split_path} under \"skipped\")" + (
                f"; the {earlier} left out when this run started stay out, not read again (a resumed run "
                f"keeps its split; a new --out trains on a file fixed since)" if earlier else ""))
    for part, got in (("training", train_set), ("validation", val_set)):
        if not len(got[0]):
            raise ValueError(f"{cfg.data}: no readable image is left in the {part} split "
                             f"({len(skipped)} could not be read; each is named above)")
    log(f"data: {len(train_set[0])} train / {len(val_set[0])} val images cached in "
        f"{time.perf_counter() - t0:.1f}s" + (f"; {classes} classes" if classes > 1 else ""))
    for note in empty_truth_warnings(train_set[1], val_set[1]):
        log(f"warning: {note}")
    return train_set, val_set, classes, split


def empty_truth_warnings(train_masks: np.ndarray, val_masks: np.ndarray) -> list[str]:
    """Classes (N x C x H x W 0/1 masks) that no training mask, or no validation mask, holds: a model
    cannot learn such a class, and validation Dice over empty masks only is 1.0 for predicting nothing."""
    notes = []
    for part, masks, why in (("training", train_masks, "the model can only learn to predict nothing for it"),
                             ("validation", val_masks, "its validation Dice is 1.0 for a model that predicts "
                                                       "nothing, so it cannot select an epoch")):
        empty = [k for k in range(masks.shape[1]) if len(masks) and not masks[:, k].any()]
        if empty:
            which = "the class" if masks.shape[1] == 1 else f"class(es) {', '.join(map(str, empty))}"
            notes.append(f"every {part} mask of {which} is empty: {why}")
    return notes


def _train_device(torch, name: str):
    """--device as a torch.device: cpu, or cuda[:N] where PyTorch sees that GPU (ValueError otherwise)."""
    kind, _, index = str(name).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"--device must be cpu or cuda (cuda:N for a GPU), got {name!r}")
    if kind == "cuda" and (not torch.cuda.is_available() or int(index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: PyTorch sees no such CUDA device here (torch {torch.__version__}, "
                         f"{torch.cuda.device_count()} GPU(s)); train with --device cpu")
    return torch.device(name)


def _setup(cfg: TrainConfig, out: Path, log) -> _Run:
    torch = require("torch")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _train_device(torch, cfg.device)
    spec = get_preset("official").with_size(cfg.img_size)
    train_set, val_set, classes, split = _load_data(cfg, out, spec, log)
    variant = canonical_variant(cfg.variant)
    with torch.random.fork_rng(devices=[]):     # the caller's generator is left as it was
        torch.manual_seed(cfg.seed)     # the fresh weights (all, or the new head with --init): --seed repeats a run
        model = build_model(variant, num_classes=classes)
    if cfg.init:
        load_init(model, cfg.init, variant, classes, log)
    out.mkdir(parents=True, exist_ok=True)      # a run refused before this point leaves nothing behind
    (out / "split.json").write_text(json.dumps(split, indent=1))
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    precision, why = resolve_precision(cfg.precision, device.type)
    log(f"precision {precision} ({why}); threads {torch.get_num_threads()}")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    steps = int(np.ceil(len(train_set[0]) / cfg.batch_size))
    device_train = None
    if device.type != "cpu":      # keep the training set on the accelerator: no per-step copies
        torch.backends.cudnn.benchmark = device.type == "cuda"
        device_train = _to_device(torch, spec, train_set, device)
        mib = sum(t.numel() * t.element_size() for t in device_train) / 2**20
        log(f"training set on {device}, normalised ({mib:.0f} MiB)")
    return _Run(model, opt, spec, device, memory_format, amp_dtype, train_set, val_set, steps,
                steps * cfg.epochs, classes, device_train, split.get("skipped", {}))


def _host_batch(run: _Run, rng, idx):
    """(x, y) of the images `idx`: augmented and normalised on the host, then moved to the device."""
    torch = require("torch")
    images, masks = run.train
    pairs = [_augment(rng, images[i], masks[i]) for i in idx]
    x = torch.from_numpy(_normalise(run.spec, np.stack([p[0] for p in pairs]))).to(run.device)
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.float32)).to(run.device)
    return x, y


def _device_batch(run: _Run, rng, idx):
    """_host_batch's (x, y) built from the device-resident, normalised training set (_to_device;
    no host work or transfer per step): the same augmentation draws and the same values."""
    torch = require("torch")
    images, masks = run.device_train
    pairs = [_apply_plan(torch, _augment_plan(rng), images[int(i)], masks[int(i)]) for i in idx]
    return torch.stack([p[0] for p in pairs]).permute(0, 3, 1, 2), torch.stack([p[1] for p in pairs]).float()


def _step(cfg: TrainConfig, run: _Run, rng, idx, it: int) -> float:
    """One SGD step on the images `idx` at global iteration `it` (poly learning rate)."""
    torch = require("torch")
    x, y = (_device_batch if run.device_train is not None else _host_batch)(run, rng, idx)
    x = x.contiguous(memory_format=run.memory_format)
    for group in run.opt.param_groups:
        group["lr"] = cfg.lr * (1 - it / run.total_steps) ** cfg.poly_power
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        logits = run.model(x)
    loss = bce_dice_loss(logits.float(), y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return float(loss.detach())


def _estimate(cfg: TrainConfig, run: _Run, step_times: list[float], epochs_left: int) -> str:
    """Measured step time (median after the first, warm-up step) and what it means for the run."""
    step = float(np.median(step_times[1:] or step_times))
    epoch = step * run.steps_per_epoch
    return (f"measured step time {step:.2f}s (batch {cfg.batch_size}): ~{_duration(epoch)} per epoch, "
            f"~{_duration(epoch * epochs_left)} for the {epochs_left} epoch(s) left, plus validation")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else (
        f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h")


ESTIMATE_AFTER = 4     # steps of the first epoch before the estimate is printed


def _train_epoch(cfg: TrainConfig, run: _Run, epoch: int, first: bool, log) -> list[float]:
    run.model.train()
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(run.train[0]))
    losses, times = [], []
    bar = Progress(run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
    for step in range(run.steps_per_epoch):
        t = time.perf_counter()
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        losses.append(_step(cfg, run, rng, idx, epoch * run.steps_per_epoch + step))
        times.append(time.perf_counter() - t)
        if first and len(times) == min(ESTIMATE_AFTER, run.steps_per_epoch):
            log(_estimate(cfg, run, times, cfg.epochs - epoch))
        bar.update(postfix=f"loss {np.mean(losses):.4f}")
    bar.close()
    return losses


def _save_best(run: _Run, out: Path, scores: dict, epoch: int) -> None:
    plain = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
             for k, v in run.model.state_dict().items()}
    save_official_pth(plain, out / "best.pth")
    extra = {"val_dice": scores["mean_dice"], "val_iou": scores["mean_iou"], "epoch": epoch}
    if run.num_classes > 1:
        extra["per_class_dice"] = scores["per_class_dice"]
    save_safetensors(plain, out / "best.safetensors", run.spec, extra=extra)
    _record_checkpoints(out, BEST_FILES)


def _record_checkpoints(out: Path, names) -> None:
    """split.json lists the checkpoints its run wrote (sha256), so that a checkpoint copied beside
    another run's split.json is not read with that run's size and lists (resources.run_split)."""
    split = loads_json((out / "split.json").read_text())
    split[SPLIT_CHECKPOINTS_KEY] = {**split.get(SPLIT_CHECKPOINTS_KEY, {}),
                                    **{name: sha256_file(out / name) for name in names}}
    with atomic_path(out / "split.json") as tmp:
        tmp.write_text(json.dumps(split, indent=1))


def _end_epoch(cfg: TrainConfig, run: _Run, out: Path, state: dict, epoch: int, losses, t_epoch: float) -> dict:
    """Validate, keep the best checkpoint, write last.pt and history.csv; returns the history row."""
    scores = evaluate(run.model, *run.val, run.spec, run.device)
    state["elapsed_s"] += time.perf_counter() - t_epoch
    row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_iou": scores["mean_iou"],
           "val_dice": scores["mean_dice"], "lr": run.opt.param_groups[0]["lr"],
           "epoch_s": round(time.perf_counter() - t_epoch, 2)}
    if run.num_classes > 1:
        row.update({f"val_dice_class{k}": d for k, d in enumerate(scores["per_class_dice"])})
    state["history"].append(row)
    if scores["mean_iou"] > state["best_iou"]:
        state.update(best_iou=scores["mean_iou"], best_dice=scores["mean_dice"], best_epoch=epoch + 1,
                     best_per_class_dice=scores["per_class_dice"])
        _save_best(run, out, scores, epoch + 1)
    state["epoch"] = epoch + 1
    with checkpoint_write(out / "last.pt") as tmp:
        require("torch").save({"model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
                               "state": json.dumps(state), "config": json.dumps(asdict(cfg))}, tmp)
    _record_checkpoints(out, ("last.pt",))      # last.pt is this run's too: read with its split.json
    write_history(out / "history.csv", state["history"])
    return dict(row, per_class_dice=scores["per_class_dice"])     # for the log line


def train(cfg: TrainConfig, log=print) -> dict:
    out = Path(cfg.out)
    data = Path(cfg.data).resolve()
    inside = [d for d in (data / "images", data / "masks", data / "labels") if out.resolve().is_relative_to(d)]
    if inside:
        raise ValueError(f"--out {out} lies inside the dataset's {inside[0].name}/ folder: checkpoints would mix "
                         f"with its images; give a folder outside {data}")
    saved = check_resume_settings(cfg, out)          # last.pt, read once
    run = _setup(cfg, out, log)
    state = resume(cfg, run.model, run.opt, run.num_classes, len(run.train[0]), out / "last.pt", log, saved)
    first = state["epoch"]
    for epoch in range(first, cfg.epochs):
        t_epoch = time.perf_counter()
        losses = _train_epoch(cfg, run, epoch, epoch == first, log)
        row = _end_epoch(cfg, run, out, state, epoch, losses, t_epoch)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.4f} val IoU {row['val_iou']:.4f} "
            f"Dice {row['val_dice']:.4f}{format_class_dice(row['per_class_dice'])} "
            f"({row['epoch_s']:.1f}s; best Dice "
            f"{state['best_dice']:.4f} @ {state['best_epoch']})")
    return {**state, "skipped": run.skipped}

