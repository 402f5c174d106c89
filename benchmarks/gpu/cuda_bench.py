"""The CUDA path of CMUNeXt measured (issue 26): latency, throughput, agreement, bandwidth floor.

For each checkpoint and each precision (fp32, fp16, bf16; channels-last, BatchNorms folded
into the next 1x1 conv where exact), on the first CUDA device:
- batch-1 latency on the device, eager and as a replayed CUDA graph (CUDA events around each
  call, input already on the GPU: the network's own time);
- images/s of graph replays at growing batch sizes (input on the GPU), up to --max-batch;
- the end-to-end batch-1 latency through the product's PyTorch backend (numpy in, logits back
  on the host: what `EdgeSegmenter` and `cmunext-bench` see), eager and with `cuda_graphs`;
- agreement with PyTorch FP32 on the CPU (the reference every export is verified against) on
  the shipped model's 90 held-out images, with the held-out gate's statistics (core/agreement),
  and Dice against their ground truth;
- the memory-bandwidth floor: the bytes each layer must move (count_bytes below) over the
  device's measured copy bandwidth.

    PYTHONPATH=. python benchmarks/gpu/cuda_bench.py models/cmunext-s-busi.safetensors ... \
        --json out/cuda_bench.json
Runs on the CPU too (tiny settings, for testing the script; no figures are meaningful there).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cmunext_edge.checkpoints.weights import load_checkpoint
from cmunext_edge.core.agreement import Comparator, gate
from cmunext_edge.core.complexity import count_macs
from cmunext_edge.core.metrics import iou_dice
from cmunext_edge.core.preprocess import load_image
from cmunext_edge.resources import HELDOUT_DIR
from cmunext_edge.runtime.registry import open_backend

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# aten ops that read their inputs and write their output in any implementation; the
# elementwise rest (BatchNorm in eval, GELU, the residual add's own output) can be fused into
# the producing convolution, so only the residual add's second operand costs extra reads
MOVERS = ("conv2d", "convolution", "max_pool2d", "upsample")


def count_bytes(model, x) -> dict:
    """Bytes one forward pass must move: the floor (every convolution/pool/upsample reads its
    inputs and weights and writes its output once; concatenation is free, written in place;
    elementwise ops are fused, a residual add reads its second operand) and the eager figure
    (every aten op reads all its inputs and writes its output)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    def size(t):
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    class Count(TorchDispatchMode):
        floor = eager = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            flat_in = [a for a in args if isinstance(a, torch.Tensor)]
            flat_in += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            outs = out if isinstance(out, (list, tuple)) else [out]
            moved = sum(size(t) for t in flat_in) + sum(size(t) for t in outs)
            name = func.__name__
            Count.eager += moved
            if any(m in name for m in MOVERS):
                Count.floor += moved
            elif name.startswith("add") and len(flat_in) == 2:
                Count.floor += size(flat_in[1])
            return out

    with torch.inference_mode(), Count():
        model(x)
    weights = sum(size(p) for p in model.parameters())
    return {"floor_bytes": Count.floor, "eager_bytes": Count.eager, "weight_bytes": weights}


def copy_bandwidth(device) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) of a 2 GiB tensor."""
    a = torch.empty(2**31, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    bw = 2 * a.numel() * 10 / (start.elapsed_time(end) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return bw


def build(path, precision: str, device: str):
    """The network the product's PyTorch backend runs with channels_last and fold_bn (as the
    cmunext-bench rows below): BatchNorms folded, cast to `precision`, channels-last."""
    return open_backend(path, backend="pytorch", device=device, precision=precision,
                        channels_last=True, fold_bn=True).load().model


def event_times(fn, n: int) -> list[float]:
    """Milliseconds of each of n calls of fn, by CUDA events (after a warm-up)."""
    for _ in range(5):
        fn()
    out = []
    for _ in range(n):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        out.append(s.elapsed_time(e))
    return out


def graphed(model, x):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        model(x)
    return g


def device_rows(path, precision, max_batch: int, budget_s: float) -> dict:
    """Batch-1 eager and graph latency, and images/s of graph replays per batch size (x4 from 1
    to max_batch, no larger batch started after budget_s seconds)."""
    deadline = time.time() + budget_s
    dev = torch.device("cuda")
    model = build(path, precision, "cuda")
    row = {}
    with torch.inference_mode():
        x1 = torch.randn(1, 3, 256, 256, device=dev, dtype=DTYPES[precision]).contiguous(
            memory_format=torch.channels_last)
        eager = event_times(lambda: model(x1), 200)
        g = graphed(model, x1)
        replay = event_times(g.replay, 500)
        row["batch1_eager_ms"] = float(np.median(eager))
        row["batch1_graph_ms"] = float(np.median(replay))
        row["batch1_graph_p99_ms"] = float(np.percentile(replay, 99))
        del g
        throughput, b = {}, 1
        while b <= max_batch and (b == 1 or time.time() < deadline):
            xb = torch.randn(b, 3, 256, 256, device=dev, dtype=DTYPES[precision]).contiguous(
                memory_format=torch.channels_last)
            try:
                gb = graphed(model, xb)
                reps = max(3, int(200 / b))
                ms = event_times(gb.replay, reps)
                throughput[b] = b / (np.median(ms) / 1e3)
                del gb
            except torch.cuda.OutOfMemoryError:
                break
            finally:
                del xb
                torch.cuda.empty_cache()
            b *= 4
        row["images_per_s"] = {str(k): round(v, 1) for k, v in throughput.items()}
        best = max(throughput, key=throughput.get)
        row["best_batch"], row["best_images_per_s"] = best, throughput[best]
    return row


def heldout(n: int):
    names = sorted(p.name for p in (HELDOUT_DIR / "images").iterdir())[:n]
    images = [load_image(HELDOUT_DIR / "images" / m) for m in names]
    masks = [cv2.imread(str(HELDOUT_DIR / "masks" / "0" / m), cv2.IMREAD_GRAYSCALE) for m in names]
    return names, images, masks


def agreement_rows(path, precisions, n_images: int) -> dict:
    """The product's PyTorch backend on CUDA (cuda_graphs, channels-last, folded) against the
    PyTorch FP32 CPU reference on the held-out images: the gate's statistics, Dice vs truth,
    and the end-to-end batch-1 latency (host numpy in, logits out)."""
    names, images, masks = heldout(n_images)
    ref = open_backend(path, backend="pytorch").load()
    x = np.stack([ref.spec(im) for im in images])
    ref_logits = np.concatenate([ref.infer(x[i:i + 8]) for i in range(0, len(x), 8)])
    truth = [m > 127 for m in masks]
    out = {"n_images": len(names), "reference": "pytorch fp32 cpu",
           "dice_vs_truth_reference": float(np.mean([iou_dice(r[0] > 0, t)[1] for r, t in zip(ref_logits, truth)]))}
    for prec in precisions:
        rows = {}
        for mode, opts in (("eager", {}), ("graphs", {"cuda_graphs": True})):
            be = open_backend(path, backend="pytorch", device="cuda", precision=prec, channels_last=True,
                              fold_bn=True, **opts).load()
            logits = np.concatenate([be.infer(x[i:i + 1]) for i in range(len(x))])
            comp = Comparator()
            comp.add(logits, ref_logits, names)
            summ = comp.summary()
            lat = []
            for i in range(200):
                t0 = time.perf_counter()
                be.infer(x[i % len(x)][None])
                lat.append((time.perf_counter() - t0) * 1e3)
            dist = summ["distribution"]
            rows[mode] = {"host_batch1_ms_p50": float(np.median(lat)), "agreement": dist,
                          "gate": gate(summ, prec),
                          "dice_vs_truth": float(np.mean([iou_dice(lg[0] > 0, t)[1] for lg, t in zip(logits, truth)])),
                          "max_abs_logit_delta": summ["max_abs_logit_delta"], "device": be.device,
                          "fallback": be.fallback_reason}
            be.close()
        out[prec] = rows
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--precisions", default="fp32,fp16,bf16")
    p.add_argument("--max-batch", type=int, default=1024)
    p.add_argument("--images", type=int, default=90, help="held-out images for agreement")
    p.add_argument("--budget-s", type=float, default=15,
                   help="per checkpoint and precision: start no larger batch after this many seconds "
                        "(the recorded run of 2026-12-04 had one 90 s budget for everything, which the "
                        "first checkpoint used up: that crashed before the base rows)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    precisions = args.precisions.split(",")
    cuda = torch.cuda.is_available()
    report = {"torch": torch.__version__, "python": platform.python_version(),
              "gpu": torch.cuda.get_device_name(0) if cuda else None,
              "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None}
    if cuda:
        torch.backends.cudnn.benchmark = True
        report["copy_bandwidth_bytes_per_s"] = copy_bandwidth(torch.device("cuda"))
    report["models"] = {}
    for path in args.checkpoints:
        ck = load_checkpoint(path)
        entry = {"variant": ck.info.variant, "sha256": ck.sha256,
                 "gmacs": count_macs(ck.build()) / 1e9, "bytes": {}}
        fp32_bytes = count_bytes(build(path, "fp32", "cpu"),
                                 torch.zeros(1, 3, 256, 256).contiguous(memory_format=torch.channels_last))
        for prec in precisions:     # the same tensors at the precision's element size
            size = torch.tensor([], dtype=DTYPES[prec]).element_size()
            counted = {k: v * size // 4 for k, v in fp32_bytes.items()}
            entry["bytes"][prec] = counted
            if cuda:
                bw = report["copy_bandwidth_bytes_per_s"]
                row = device_rows(path, prec, args.max_batch, args.budget_s)
                act = counted["floor_bytes"] - counted["weight_bytes"]
                row["floor_images_per_s"] = bw / act
                row["floor_batch1_ms"] = counted["floor_bytes"] / bw * 1e3
                row["fraction_of_floor"] = row["best_images_per_s"] / row["floor_images_per_s"]
                entry[prec] = row
                print(f"{path.name} {prec}: batch-1 eager {row['batch1_eager_ms']:.3f} ms, graph "
                      f"{row['batch1_graph_ms']:.3f} ms; best {row['best_images_per_s']:.0f} img/s at batch "
                      f"{row['best_batch']} ({100 * row['fraction_of_floor']:.0f}% of the bandwidth floor "
                      f"{row['floor_images_per_s']:.0f})", flush=True)
        if cuda:
            entry["agreement"] = agreement_rows(path, precisions, args.images)
            for prec in precisions:
                for mode, r in entry["agreement"][prec].items():
                    d = r["agreement"]
                    print(f"{path.name} {prec} {mode}: host batch-1 {r['host_batch1_ms_p50']:.3f} ms; agreement "
                          f"mean {d['mean']:.4f} worst {d['worst']:.4f} below 0.90 {d['n_bad']}/{d['n']}; "
                          f"Dice vs truth {r['dice_vs_truth']:.4f} (fp32 cpu {entry['agreement']['dice_vs_truth_reference']:.4f})",
                          flush=True)
        report["models"][path.name] = entry
        args.json.write_text(json.dumps(report, indent=1))
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
