"""What a training run starts from and keeps: its number of classes, the `--init` weights, a
resumed run's state (last.pt) with the notes the training log prints about them, history.csv.

Classes: `--num-classes` 0 (the default) trains every class the dataset's ground truth holds
(masks/0/ ... masks/<N-1>/, or the largest value in labels/); a smaller N trains the first N
classes; a larger one is an error. `--init` from a checkpoint with another class count loads
every tensor but the output head (Conv_1x1), which starts fresh.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.core.variants import canonical_variant
from cmunext_edge.fileio import atomic_path, loads_json
from cmunext_edge.data.discovery import Sample, truth_notes
from cmunext_edge.data.groundtruth import dataset_classes, load_truth, truth_description
from cmunext_edge.resources import resolve_weights
from cmunext_edge.checkpoints.weights import load_checkpoint

HEAD = ("Conv_1x1.weight", "Conv_1x1.bias")   # the output head: one channel per class


def resolve_classes(requested: int, samples: list[Sample], log, data: str = "dataset") -> tuple[int, int]:
    """(classes to train, classes the dataset holds) for `--num-classes requested` (0 = all)."""
    held = dataset_classes(samples)
    if held is None:
        raise ValueError(f"{data}: no image/mask pairs found (expected images/ and masks/0/, "
                         f"masks/0/ ... masks/<N-1>/ or labels/)" + "".join(f"; {n}" for n in truth_notes(data, samples)))
    layout = truth_description(next(s for s in samples if s.mask is not None))
    if requested < 0:
        raise ValueError(f"--num-classes must be 1 or more (0 = from the dataset), got {requested}")
    if requested > held:
        raise ValueError(f"--num-classes {requested}, but the dataset's ground truth holds "
                         f"{held} class(es) ({layout})")
    classes = requested or held
    if classes < held:
        log(f"note: --num-classes {classes}: training the first {classes} of the dataset's {held} "
            f"classes ({layout}); the others are left out")
    return classes, held


def class_truth(sample: Sample, classes: int, held: int, size: tuple[int, int], image_hw=None) -> np.ndarray:
    """(classes, H, W) 0/1 uint8 ground truth: the first `classes` of the sample's classes (a label
    image is read with all `held` classes, then cut, so that higher label values are left out);
    ground truth of another size than `image_hw` (the image's) is an ImageReadError."""
    read = held if sample.label_image else classes
    return load_truth(sample, read, size, image_hw=image_hw)[:classes].astype(np.uint8)


def _classes(n: int) -> str:
    return f"{n} class" if n == 1 else f"{n} classes"


def load_init(model, path: str, variant: str, classes: int, log) -> None:
    """Load `--init` (a checkpoint or a shipped model's name) into `model`; another class count
    keeps the model's fresh output head."""
    ckpt = load_checkpoint(resolve_weights(path))
    if ckpt.info.variant != variant:
        raise ValueError(f"--init {path} is a {ckpt.info.variant} checkpoint but this run trains "
                         f"{variant}: choose --variant {ckpt.info.variant}")
    if ckpt.info.in_channels != model.in_channels:
        raise ValueError(f"--init {path} takes {ckpt.info.in_channels} input channel(s); training "
                         f"uses {model.in_channels} (RGB)")
    if ckpt.info.num_classes == classes:
        model.load_state_dict(ckpt.state_dict)
        return
    body = {k: v for k, v in ckpt.state_dict.items() if k not in HEAD}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if sorted(missing) != sorted(HEAD) or unexpected:
        raise ValueError(f"--init {path}: weights do not fit the model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    log(f"--init: {_classes(ckpt.info.num_classes)} -> {_classes(classes)}: the output head is "
        f"initialised fresh, all other weights loaded")


def resume(cfg, model, opt, classes: int, n_train: int, last: Path, log, ckpt: dict | None = None) -> dict:
    """The state of a run resumed from `last` (model and optimizer loaded; `ckpt`: last.pt as
    check_resume_settings read it), or a fresh state."""
    state = {"epoch": 0, "best_iou": -1.0, "best_epoch": 0, "history": [], "elapsed_s": 0.0}
    if not last.exists():
        return state
    ckpt = ckpt or _read_resume_state(last)
    saved = int(ckpt["model"][HEAD[0]].shape[0])
    if saved != classes:
        asked = f"--num-classes {cfg.num_classes}" if cfg.num_classes else "the dataset's classes"
        raise ValueError(f"{last}: this run trains {saved} class(es), not {classes} ({asked}); "
                         f"resume with --num-classes {saved}, or start a new run with another --out")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    state = loads_json(ckpt["state"])
    log(f"resuming from {last}: {state['epoch']} of {cfg.epochs} epochs done, "
        f"best val IoU {state['best_iou']:.4f} at epoch {state['best_epoch']}")
    saved_cfg = loads_json(ckpt.get("config") or "{}")
    note = schedule_change(saved_cfg, cfg, state["epoch"], n_train)
    if note:
        log(note)
    if cfg.init and cfg.init != saved_cfg.get("init"):
        log(f"note: --init {cfg.init} is not used: the run resumes with the weights of {last}")
    return state


# What a run is: a resumed run keeps them (its split.json, weights and optimizer were made with them).
RUN_SETTINGS = ("variant", "img_size", "seed", "val_fraction", "val_list")   # not --init: a resumed run
# takes its weights from last.pt, so --init may be left out when resuming


BEST_FILES = ("best.pth", "best.safetensors")      # a run's kept checkpoints (recipe._save_best)


def check_resume_settings(cfg, out: Path) -> dict | None:
    """ValueError naming every setting of `cfg` that differs from the run already in `out` (its
    split.json, its last.pt's configuration): a changed --seed or --val-fraction was silently
    ignored (the saved split was reused), a changed --img-size silently trained on at another
    size, another --variant failed with "unexpected". A best checkpoint without the last.pt to resume
    its run is refused too (a fresh run replaced it after its first epoch). Nothing is written before
    this check.
    -> last.pt as read (for resume), or None when there is none."""
    orphaned = sorted(n for n in BEST_FILES if (out / n).is_file()) if not (out / "last.pt").exists() else []
    if orphaned:
        raise ValueError(f"--out {out} holds {', '.join(orphaned)} of an earlier run but no last.pt to resume it "
                         f"from: a new run there would replace them; use another --out (or move them away)")
    saved, ckpt = {}, None
    if (out / "split.json").exists():
        saved.update({k: v for k, v in read_split(out / "split.json").items() if k in RUN_SETTINGS})
    if (out / "last.pt").exists():
        ckpt = _read_resume_state(out / "last.pt")
        config = loads_json(ckpt.get("config") or "{}")
        saved.update({k: config[k] for k in RUN_SETTINGS if k in config})
    if not saved:
        return ckpt
    asked = {k: getattr(cfg, k) for k in RUN_SETTINGS}
    if saved.get("val_list") or asked["val_list"]:        # a list decides the split, not the fraction
        saved.pop("val_fraction", None)
    asked["variant"] = canonical_variant(asked["variant"])
    saved["variant"] = canonical_variant(saved.get("variant") or asked["variant"])
    changed = [k for k in RUN_SETTINGS if k in saved and saved[k] != asked[k]]
    if changed:
        raise ValueError(f"--out {out} holds a run started with {_settings(saved, changed)}, not "
                         f"{_settings(asked, changed)}: resume with the same settings (they decide the "
                         f"split and the model), or start a new run with another --out")
    return ckpt


def _settings(values: dict, keys: list[str]) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {values.get(k)}" if values.get(k) is not None
                     else f"no --{k.replace('_', '-')}" for k in keys)


def read_split(path: Path) -> dict:
    """A cmunext-train split.json (ValueError naming the file if it is not one)."""
    try:
        split = loads_json(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable split file ({exc}); move it away to start afresh") from None
    if not (isinstance(split, dict) and isinstance(split.get("train"), list) and isinstance(split.get("val"), list)):
        raise ValueError(f"{path}: not a cmunext-train split (no train and val lists); move it away to start afresh")
    return split


def _read_resume_state(last: Path) -> dict:
    """last.pt through torch's weights-only unpickler (no code runs); anything it refuses or cannot
    read is one line naming the file, never torch's advice to turn that protection off."""
    torch = require("torch")
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) and HEAD[0] in ckpt["model"]
                and "optimizer" in ckpt and "state" in ckpt):
            raise ValueError("not a cmunext-train resume state")
        return ckpt
    except Exception as exc:      # UnpicklingError (refused code), EOFError, RuntimeError (damaged zip), ...
        why = ("refused to unpickle: it holds code or objects beyond tensors" if isinstance(exc, pickle.UnpicklingError)
               else f"{type(exc).__name__}: {(str(exc).strip().splitlines() or ['damaged or truncated'])[0][:160]}")
        raise ValueError(f"{last}: cannot resume from it ({why}); it was not loaded "
                         f"(nothing in it ran); move it away to start this run afresh, or use another --out") from None


def _poly_lr(lr: float, epochs: int, batch_size: int, n_train: int, epoch: int, power: float) -> float:
    steps = int(np.ceil(n_train / batch_size))
    return lr * max(0.0, 1 - epoch * steps / (steps * epochs)) ** power if epochs else 0.0


def schedule_change(saved: dict, cfg, epoch: int, n_train: int) -> str | None:
    """What resuming after `epoch` epochs with a changed --epochs / --lr / --batch-size does to the
    poly learning-rate schedule (None when nothing changed)."""
    changed = {k: (saved[k], getattr(cfg, k)) for k in ("epochs", "lr", "batch_size")
               if k in saved and saved[k] != getattr(cfg, k)}
    if not changed:
        return None
    what = ", ".join(f"--{k.replace('_', '-')} {a} -> {b}" for k, (a, b) in changed.items())
    if epoch >= cfg.epochs:
        return f"note: resumed with {what}: {epoch} epochs are already done, nothing left to train"
    old = _poly_lr(saved.get("lr", cfg.lr), saved.get("epochs", cfg.epochs), saved.get("batch_size", cfg.batch_size),
                   n_train, epoch, cfg.poly_power)
    new = _poly_lr(cfg.lr, cfg.epochs, cfg.batch_size, n_train, epoch, cfg.poly_power)
    return (f"note: resumed with {what}: the poly learning-rate schedule is recomputed over the new "
            f"settings, so at epoch {epoch + 1} the learning rate is {new:.3g} instead of {old:.3g} "
            f"(the old schedule's); it then decays to 0 at epoch {cfg.epochs}")


def write_history(path: Path, rows: list[dict]) -> None:
    """history.csv: one row per epoch, the columns of the first row."""
    keys = list(rows[0])
    with atomic_path(path) as tmp:
        tmp.write_text(",".join(keys) + "\n" + "".join(
            ",".join(str(r[k]) for k in keys) + "\n" for r in rows))
