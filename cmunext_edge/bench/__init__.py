"""`cmunext-bench`'s engine and its parts, one concern per module (no module imports `engine`):

- `engine`: rows (RowSpec, BenchConfig, RowResult, BenchReport) and `run_bench`;
- `inputs`: latency images (user folder or the bundled samples), artifact size on disk;
- `timing`: timing loops (batch-1 latency, alternating rounds, throughput) and `torch_threads`;
- `overhead`: the check that the bench's timing adds nothing over bare ONNX Runtime;
- `accuracy`: official Dice against masks, agreement with PyTorch FP32;
- `system`: memory, CPU, versions, matmul FLOP/s;
- `report`: terminal table, Markdown, JSON, PNG plot.
"""
from cmunext_edge.bench.engine import (
    BenchConfig, BenchReport, RowResult, RowSpec, add_comparisons, bench_row, row_label, run_bench, torch_row_threads)
from cmunext_edge.bench.inputs import artifact_bytes, load_images
from cmunext_edge.bench.overhead import check_ort_overhead
from cmunext_edge.bench.timing import (
    allowed_batches, alternating_rounds, latency_stats, measure_throughput, median_ms, time_calls, torch_threads)

__all__ = ["BenchConfig", "BenchReport", "RowResult", "RowSpec", "add_comparisons", "allowed_batches",
           "alternating_rounds", "artifact_bytes", "bench_row", "check_ort_overhead", "latency_stats",
           "load_images", "measure_throughput", "median_ms", "row_label", "run_bench", "time_calls",
           "torch_row_threads", "torch_threads"]
