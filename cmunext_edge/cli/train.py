"""cmunext-train: train or fine-tune CMUNeXt with the official recipe."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from cmunext_edge._deps import MissingDependencyError
from cmunext_edge.core.metrics import format_class_dice
from cmunext_edge.cli.common import (Parser, add_debug, batch_size, cli_main, fail, fraction, network_side, output_path,
                                      nonnegative_int, learning_rate, positive_int, seed, threads_or_default)

PROG = "cmunext-train"

EXAMPLE = """examples:
  cmunext-train cmunext_edge/samples/busi --epochs 1 --out runs/try     (the 16 bundled samples: a smoke run)
  cmunext-train your_dataset/ --variant cmunext-s --epochs 90 --out runs/mine
  cmunext-train your_dataset/ --init cmunext-s-busi --epochs 5 --lr 0.001 --out runs/finetune
  cmunext-train your_3class_dataset/ --init cmunext-s-busi --epochs 30 --out runs/three
  (your_dataset/ holds images/<name>.<ext> and masks/0/<name>.<ext>, PNG or JPEG, matched by name
   (keep masks lossless: PNG); the shipped model trained 90
   epochs; run again with the same --out to resume after an interruption, with the same --variant,
   --img-size, --seed and split options (others are refused): the learning-rate schedule is kept
   as it was unless --epochs, --lr or --batch-size change, which it says; an unreadable image is
   skipped, named, listed in split.json, and the run exits 1)
  (several classes, one output channel each, in either of two layouts: per-class mask folders
   masks/0/, masks/1/, ... masks/<N-1>/ (the official layout), or label images labels/<name>.png
   whose pixel value is the class (0 background, k = class k-1); --num-classes defaults to the
   dataset's; --init from a checkpoint with another class count starts the output head fresh)"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, every valued option's default shown (not that of a required option
    or an on/off flag, whose "default" is the setting it turns off)."""

    def _get_help_string(self, action):
        if action.required or action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="cmunext-train", description=__doc__, epilog=EXAMPLE,
                                formatter_class=_Formatter)
    p.add_argument("data", help="official-layout dataset folder: images/ and masks/0/ (several classes: "
                                "masks/0/ ... masks/<N-1>/, or labels/ label images); JPEG or PNG")
    p.add_argument("--out", required=True, type=output_path, help="output folder (required); an existing one is resumed")
    p.add_argument("--variant", default="cmunext-s", help="cmunext-s, cmunext (base) or cmunext-l")
    p.add_argument("--epochs", type=positive_int, default=300, help="epochs (official recipe 300; the shipped model 90)")
    p.add_argument("--batch-size", type=batch_size, default=8, help="images per step")
    p.add_argument("--lr", type=learning_rate, default=0.01, help="initial learning rate (SGD, poly decay)")
    p.add_argument("--img-size", type=network_side, default=256, help="square input size, multiple of 16")
    p.add_argument("--val-fraction", type=fraction, default=0.2, help="seeded random hold-out")
    p.add_argument("--val-list", help="file of validation names (instead of a random split)")
    p.add_argument("--seed", type=seed, default=42,
                   help="seed of the split, the augmentation and the fresh weights (the same seed repeats a "
                        "run on the same machine)")
    p.add_argument("--init", help="checkpoint (.pth/.safetensors) or shipped model name to fine-tune from; another class count "
                                  "loads all but the output head, which starts fresh")
    p.add_argument("--num-classes", type=nonnegative_int, default=0,
                   help="output classes (0 = all the dataset holds: the number of masks/<k>/ folders, "
                        "or the largest labels/ value); fewer trains the first N classes")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast dtype for training forward passes (validation is fp32); auto: bf16 "
                        "where the CPU runs it natively (AVX-512 BF16, AMX) or on CUDA, else fp32")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the NCHW memory format (channels-last is usually faster on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=threads_or_default, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--max-train-images", type=nonnegative_int, default=0, help=argparse.SUPPRESS)
    return add_debug(p)


def _preflight(args) -> str | None:
    """What stops the run before any image is read (the reason, one line), else None: --out
    not a writable folder, --init not a readable checkpoint (its header only)."""
    from cmunext_edge.fileio import writable_folder_problem
    problem = writable_folder_problem(args.out, "--out")
    if problem or not args.init:
        return problem
    from cmunext_edge.checkpoints.inspect import CheckpointError
    from cmunext_edge.checkpoints.weights import inspect_checkpoint
    from cmunext_edge.resources import resolve_weights
    try:
        inspect_checkpoint(resolve_weights(args.init))
    except (CheckpointError, ValueError, OSError) as exc:
        return f"--init: {exc}"
    return None


def _write_failed(out, exc: OSError) -> int:
    """Training stopped on a write error: one line naming it and what --out holds (each file written
    whole or not at all); exit 1 when a checkpoint is kept, else 2."""
    out = Path(out)
    kept = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")) if out.is_dir() else []
    checkpoint = any(n in kept for n in ("best.safetensors", "best.pth", "last.pt"))
    again = (f"run again with --out {out} once there is room to resume after the last finished epoch"
             if "last.pt" in kept else "run again once there is room (no resume state was written)")
    held = (f"{out} keeps {', '.join(kept)} (each file whole); {again}" if checkpoint
            else "no checkpoint was written" + (f" ({out} holds {', '.join(kept)})" if kept else ""))
    what = f"{exc.strerror}{f': {exc.filename}' if exc.filename else ''}" if exc.strerror else str(exc)
    return fail(PROG, f"{what}; training stopped: {held}", 1 if checkpoint else 2)


@cli_main(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problem = _preflight(args)
    if problem:
        return fail(PROG, problem)
    try:
        from cmunext_edge.train.recipe import TrainConfig, train      # needs torch: not imported for --help
    except MissingDependencyError as exc:
        return fail(PROG, str(exc))
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        state = train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        return fail(PROG, str(exc))
    except OSError as exc:               # e.g. the disk filled up: say what the folder still holds
        return _write_failed(args.out, exc)
    per_class = format_class_dice(state.get("best_per_class_dice"))
    print(f"best val Dice {state['best_dice']:.4f}{per_class} IoU {state['best_iou']:.4f} "
          f"at epoch {state['best_epoch']} (the epoch of the highest val IoU, the official selection)")
    if state.get("skipped"):         # trained, but not on every image: exit 1, each named above
        print(f"{PROG}: {len(state['skipped'])} image(s) could not be used (unreadable, or ground truth not usable) "
              f"and were left out "
              f"(listed in {cfg.out}/split.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
