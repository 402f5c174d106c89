"""How close an artifact came to drawing a mask where PyTorch FP32 draws none: for every image whose
FP32 mask is empty (1 class), the largest FP32 logit and the largest artifact logit (threshold 0),
and the artifact's foreground pixels. A mask that "agrees" with an artifact max logit just under 0
is a near miss: another runtime's arithmetic (another CPU) can tip it over.

    .venv/bin/cmunext-export --weights cmunext-s-busi --target openvino --int8 --out exports/default-int8 --name cmunext-s-busi_int8
    .venv/bin/python benchmarks/near_threshold.py --artifact exports/default-int8/cmunext-s-busi_int8.xml \
        --images cmunext_edge/samples/busi-heldout/images --out benchmarks/results/near_threshold_2026-12-05_zen4.txt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, required=True, help="an exported artifact (any kind the runtime reads)")
    p.add_argument("--weights", default="models/cmunext-s-busi.safetensors", help="its PyTorch checkpoint")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from cmunext_edge.checkpoints.weights import load_checkpoint
    from cmunext_edge.export.verify import reference_logits
    from cmunext_edge.runtime.registry import open_backend
    ckpt = load_checkpoint(args.weights)
    model, rows = ckpt.build(), []
    with open_backend(args.artifact, device="cpu", verify=False) as backend:
        ran = f"{backend.name} {backend.precision} (inference precision {getattr(backend, 'inference_precision', None)})"
        for f in sorted(q for q in args.images.iterdir() if q.is_file()):
            x = ckpt.spec(f)[None].astype(np.float32)
            ref, out = reference_logits(model, x)[0, 0], backend.infer(x)[0, 0]
            rows.append((f.stem, float(ref.max()), float(out.max()), int((ref > 0).sum()), int((out > 0).sum())))
    empty = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[2])
    lines = [f"command: {' '.join(sys.argv)}", f"artifact ran as {ran}",
             f"{len(rows)} images of {args.images}; {len(empty)} with an empty FP32 mask "
             "(largest logit below the threshold 0):"]
    lines += [f"  {r[0]:<16} FP32 max logit {r[1]:+.3f}   artifact max logit {r[2]:+.3f}   artifact px {r[4]}"
              for r in empty]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
