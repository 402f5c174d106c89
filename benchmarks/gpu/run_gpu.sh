#!/usr/bin/env bash
# Issue 26 on a lent GPU machine, in one call: CMUNeXt base and S trained with the full official
# recipe (cmunext-train --device cuda, 300 epochs, the shipped model's validation split), then
# the CUDA path measured (benchmarks/gpu/cuda_bench.py and cmunext-bench rows).
#
# Here, first:   python benchmarks/gpu/pack_busi.py ../shared/data/busi-train runs/gpu/busi256.tar
# On the GPU:    OUT=<results dir> bash benchmarks/gpu/run_gpu.sh        (carry runs/gpu)
# CPU smoke test: OUT=/tmp/g EPOCHS=1 DEVICE=cpu BENCH_DEVICE=cpu bash benchmarks/gpu/run_gpu.sh
set -u
PY=${PY:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
EPOCHS=${EPOCHS:-300}
DEVICE=${DEVICE:-cuda}
BENCH_DEVICE=${BENCH_DEVICE:-cuda}
TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-280}
WORK=${WORK:-/tmp/cmunext-gpu}
mkdir -p "$OUT" "$WORK"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
{ nvidia-smi || true; $PY -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"; git log -1 --format='commit %H' || true; } > "$OUT/machine.txt" 2>&1
tar -xf runs/gpu/busi256.tar -C "$WORK"
stamp "data unpacked: $(ls "$WORK/busi256/images" | wc -l) images"

train() {   # variant out-name
  timeout "$TRAIN_LIMIT_S" $PY -m cmunext_edge.cli.train "$WORK/busi256" --variant "$1" --epochs "$EPOCHS" \
    --val-list models/cmunext-s-busi.val.txt --device "$DEVICE" --out "$WORK/runs/$2" ${TRAIN_ARGS:-} > "$OUT/train_$2.log" 2>&1
  echo "exit $?" >> "$OUT/train_$2.log"
}
train cmunext base & train cmunext-s s & wait
stamp "training done"; tail -n 3 "$OUT"/train_*.log

ckpts=()
for r in s base; do [ -f "$WORK/runs/$r/best.safetensors" ] && { cp "$WORK/runs/$r/best.safetensors" "$WORK/cmunext-$r-gpu.safetensors"; ckpts+=("$WORK/cmunext-$r-gpu.safetensors"); }; done
[ -f "$WORK/cmunext-base-gpu.safetensors" ] && cp "$WORK/cmunext-base-gpu.safetensors" "$OUT/base_best.safetensors"
tar -czf "$OUT/runs.tgz" -C "$WORK" --exclude=last.pt --exclude=best.pth --exclude=runs/base/best.safetensors runs
stamp "weights saved"

timeout 140 $PY benchmarks/gpu/cuda_bench.py "${ckpts[@]}" --json "$OUT/cuda_bench.json" ${CUDA_BENCH_ARGS:-}
stamp "cuda_bench done"

mkdir -p "$WORK/bench"
for c in "${ckpts[@]}"; do
  n=$(basename "$c" .safetensors)
  best=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['models'][sys.argv[2]]['fp16']['best_batch'])" "$OUT/cuda_bench.json" "$n.safetensors" 2>/dev/null || echo 64)
  timeout 45 $PY -m cmunext_edge.cli.bench "$c" --device "$BENCH_DEVICE" --precision fp32,fp16,bf16 \
    --option channels_last=1 --option cuda_graphs=1 --option fold_bn=1 --batch-sizes ${BENCH_BATCHES:-1,$(( best < 256 ? best : 256 ))} \
    --streams 1 --iters 200 --throughput-time 1 --matmul-time 0 --quiet --wide \
    --json "$WORK/bench/$n.json" --markdown "$WORK/bench/$n.md" > "$WORK/bench/$n.txt" 2>&1
  echo "exit $?" >> "$WORK/bench/$n.txt"; cat "$WORK/bench/$n.txt"
done
tar -czf "$OUT/bench.tgz" -C "$WORK" bench
stamp "all done"
