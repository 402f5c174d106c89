"""cmunext-train: train or fine-tune CMUNeXt with the official recipe."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from .._deps import MissingDependencyError
from .common import add_debug, cli_main

EXAMPLE = """example:
  cmunext-train ../shared/data/busi-train --variant cmunext-s --epochs 60 --out runs/s
  (run it again with the same --out to resume after an interruption)"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmunext-train", description=__doc__, epilog=EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="official-layout dataset folder (images/, masks/0/)")
    p.add_argument("--out", required=True, help="output folder; an existing one is resumed")
    p.add_argument("--variant", default="cmunext-s", help="cmunext-s, cmunext (base) or cmunext-l")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--img-size", type=int, default=256, help="square input size, multiple of 16")
    p.add_argument("--val-fraction", type=float, default=0.2, help="seeded random hold-out")
    p.add_argument("--val-list", help="file of validation names (instead of a random split)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--init", help="checkpoint to fine-tune from")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16",
                   help="autocast dtype for training forward passes (validation is fp32)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--max-train-images", type=int, default=0, help=argparse.SUPPRESS)
    return add_debug(p)


@cli_main("cmunext-train")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from ..train import TrainConfig, train      # needs torch: not imported for --help
    except MissingDependencyError as exc:
        print(f"cmunext-train: error: {exc}", file=sys.stderr)
        return 2
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        state = train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cmunext-train: error: {exc}", file=sys.stderr)
        return 2
    print(f"best val Dice {state['best_dice']:.4f} IoU {state['best_iou']:.4f} at epoch {state['best_epoch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
