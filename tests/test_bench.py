"""cmunext-bench: engine, report writers and CLI (few iterations; no timing assertions)."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from cmunext_edge import bench  # noqa: E402
from cmunext_edge.bench import (
    BenchConfig, RowSpec, allowed_batches, artifact_bytes, latency_stats, run_bench, time_calls)
from cmunext_edge.bench.report import format_table, to_markdown, write_plot  # noqa: E402
from cmunext_edge.cli.bench import expand_rows, main, parse_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--warmup", "1", "--iters", "3", "--batch-sizes", "1,2", "--streams", "1",
        "--throughput-time", "0.05", "--matmul-time", "0.05", "--quiet"]


@pytest.fixture
def onnx_s(onnx_random):
    """The session's FP32 dynamic-batch ONNX of the S checkpoint (conftest: exported once, with
    metadata, self-test and manifest, so it passes the verified load every bench backend does)."""
    return onnx_random.artifact


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Keeps the suite quick on a small, busy machine (PyTorch's thread team suffers most)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- pure helpers ------------------------------------------------------------------------
def test_latency_stats_percentiles():
    s = latency_stats(np.arange(1, 101, dtype=float))
    assert s["n"] == 100 and s["min"] == 1.0 and s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01) and s["std"] > 0


def test_time_calls_runs_warmup_then_iters():
    calls = []
    ms = time_calls(calls.append, [1, 2, 3], warmup=2, iters=5)
    assert len(ms) == 5 and calls == [1, 2] + [1, 2, 3, 1, 2]


def test_alternating_rounds_time_every_function_once_per_round():
    order = []
    res = bench.alternating_rounds({"a": lambda x: order.append("a"), "b": lambda x: order.append("b")},
                                   [0], rounds=2, iters=2, warmup=1)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert [len(r) for r in res["a"]] == [2, 2] and len(res["b"]) == 2


def test_latency_images_default_to_the_bundled_samples(tmp_path):
    from cmunext_edge.bench.inputs import load_images
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.resources import SAMPLES_DIR
    imgs = load_images(None, 2)
    assert len(imgs) == min(2, len(discover(SAMPLES_DIR))) and imgs[0].dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="no images for latency input"):
        load_images(tmp_path, 2)                     # an empty folder is an error, not a silent fallback


def test_bench_package_has_no_import_circle_and_no_shared_path():
    """bench/__init__.py's rules: no circle inside the package, no module imports `engine`
    (circles and layers of the whole package: test_architecture.py)."""
    import ast
    pkg = ROOT / "cmunext_edge" / "bench"
    graph = {}
    for path in pkg.glob("*.py"):
        deps = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level == 1:
                deps |= {n.module} if n.module else {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and (n.module or "").startswith("cmunext_edge.bench."):
                deps.add(n.module.split(".")[2])
        graph[path.stem] = deps - {"__init__"}

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d))) for d in graph.get(start, ()))
    assert graph["engine"] and not [m for m in graph if m != "__init__" and reaches(m, m)]
    assert not [m for m, deps in graph.items() if m != "__init__" and "engine" in deps]
    for path in [*pkg.glob("*.py"), ROOT / "cmunext_edge" / "cli" / "bench.py"]:
        assert "../shared" not in path.read_text() and '"shared"' not in path.read_text(), path


def test_allowed_batches_static_and_dynamic():
    assert allowed_batches(SimpleNamespace(input_shape=(4, 3, 256, 256)), (1, 2, 8)) == [4]
    assert allowed_batches(SimpleNamespace(input_shape=(None, 3, 256, 256)), (8, 1, 2)) == [1, 2, 8]


def test_artifact_bytes_counts_openvino_bin(tmp_path):
    (tmp_path / "m.xml").write_bytes(b"x" * 10)
    (tmp_path / "m.bin").write_bytes(b"x" * 90)
    assert artifact_bytes(tmp_path / "m.xml") == 100


def test_row_expansion_and_options():
    assert parse_options("threads=2,hint=latency,scale=0.5") == {"threads": 2, "hint": "latency", "scale": 0.5}
    rows = expand_rows(["a.pth", "b.onnx@threads=1", "c.pth@precision=bf16"], ("cpu",), ("fp32", "bf16"), {})
    assert [(r.artifact.name, r.opts) for r in rows] == [
        ("a.pth", {"precision": "fp32"}), ("a.pth", {"precision": "bf16"}),
        ("b.onnx", {"threads": 1}), ("c.pth", {"precision": "bf16"})]
    with pytest.raises(ValueError, match="backend option 'threads' is not key=value"):
        parse_options("threads")


# --- the engine --------------------------------------------------------------------------
def test_run_bench_checkpoint_rows_with_fallback(ckpt_s, busi):
    rows = [RowSpec(ckpt_s, "cpu", (("precision", "fp32"),)), RowSpec(ckpt_s, "npu", (("precision", "fp32"),))]
    cfg = BenchConfig(rows, warmup=1, iters=3, batch_sizes=(1, 2), streams=(1, 2), throughput_time_s=0.05,
                      max_latency_images=2, data=busi, max_images=2, matmul_seconds=0.05, progress=False)
    report = run_bench(cfg)
    base, npu = report.rows
    assert base.error is None and npu.error is None
    from cmunext_edge.core.complexity import count_macs
    from cmunext_edge.core.model import build_model
    model = build_model("cmunext-s").eval()          # counted on the built network, by forward hooks
    assert base.params == sum(p.numel() for p in model.parameters()) and round(base.params / 1e6, 3) == 0.418
    assert base.macs == count_macs(model, (256, 256)) and base.variant == "cmunext-s"
    assert set(base.latency_ms) >= {"p50", "p90", "p99", "mean", "std"} and base.fps_batch1 > 0
    assert {(c["batch"], c["streams"]) for c in base.throughput} == {(1, 1), (2, 1), (1, 2), (2, 2)}
    assert base.best_throughput in base.throughput
    assert base.preprocess_ms > 0 and base.postprocess_ms > 0 and base.artifact_mb > 0
    assert base.memory["peak_rss_mb"] > 0 and base.memory["added_rss_mb"] is not None
    assert base.n_dice_images == 2 and 0.0 <= base.dice <= 1.0
    assert base.agreement_dice == 1.0 and base.max_abs_logit_delta == 0.0
    assert base.vs_torch_fp32 == 1.0 and base.floor_fraction > 0
    assert npu.device == "cpu" and npu.requested_device == "npu" and "npu" in npu.fallback
    text = format_table(report)
    assert "FALLBACK" in text and "cpu (fallback)" in text and "p50 ms" in text
    assert report.to_dict()["machine"]["matmul_gflops"] > 0


def test_broken_artifact_is_a_row_error_and_exit_1(ckpt_s, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "r.json"
    assert main([str(bad), str(ckpt_s), *FAST, "--json", str(out)]) == 1     # one row measured, one failed
    rows = json.loads(out.read_text())["rows"]
    assert "not a PyTorch checkpoint" in rows[0]["error"] and not rows[1]["error"]
    again = tmp_path / "again.json"
    assert main([str(bad), *FAST, "--json", str(again)]) == 2               # the only row: nothing measured,
    assert not again.exists()                                               # so no report either


# --- CLI ---------------------------------------------------------------------------------
def test_cli_end_to_end_writes_json_markdown_plot(ckpt_s, onnx_s, busi, tmp_path, capsys):
    j, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    rc = main([str(ckpt_s), str(onnx_s), *FAST, "--data", str(busi), "--max-images", "2",
               "--json", str(j), "--markdown", str(md), "--plot", str(png)])
    assert rc == 0
    data = json.loads(j.read_text())
    torch_row, ort_row = data["rows"]
    assert ort_row["backend"] == "onnxruntime" and ort_row["error"] is None
    assert ort_row["reference"] == str(ckpt_s) and ort_row["n_agreement_images"] == 2
    assert ort_row["agreement_dice"] > 0.99 and ort_row["max_abs_logit_delta"] < 1e-2
    assert ort_row["params"] == torch_row["params"] and ort_row["vs_torch_fp32"] > 0
    assert md.read_text().startswith("# cmunext-bench results") and "| configuration |" in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{onnx_s.name} onnxruntime/cpu/fp32" in capsys.readouterr().out
    assert onnx_s.name in to_markdown(data)
    write_plot(data, tmp_path / "again.png")        # also from a JSON round-trip
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_list_devices(capsys):
    assert main(["--list-devices"]) == 0
    out = capsys.readouterr().out
    assert "pytorch" in out and "cpu" in out


def test_cli_strict_device_missing_fails_clearly(ckpt_s, capsys):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has CUDA")
    rc = main([str(ckpt_s), "--device", "cuda", "--strict-device", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "cuda" in err and "not available" in err and "strict" in err


def test_cli_needs_an_artifact(capsys):
    assert main([]) == 2
    assert "ARTIFACT" in capsys.readouterr().err


def test_check_ort_overhead_records_both_timings(onnx_s):
    res = bench.check_ort_overhead(onnx_s, iters=4, warmup=1, rounds=2)
    assert res["bench_ms"]["n"] == 4 and res["plain_ort_ms"]["n"] == 4
    # no timing assertion: the record must only be consistent with its own figures (overhead.py)
    assert res["ratio_p50"] == pytest.approx(res["bench_ms"]["p50"] / res["plain_ort_ms"]["p50"])
    assert res["within_tolerance"] is (abs(res["ratio_p50"] - 1) <= res["tolerance"]) and res["tolerance"] == 0.15


def test_threads_option_sets_torch_threads_for_the_row_only(ckpt_s):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with bench.torch_threads(bench.torch_row_threads(RowSpec(ckpt_s, options=(("threads", 3),)))):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    assert bench.torch_row_threads(RowSpec(Path("m.onnx"), options=(("threads", 3),))) is None
    with bench.torch_threads(None):
        assert torch.get_num_threads() == before       # other backends read the option themselves


def test_cli_check_ort_overhead_writes_json(onnx_s, tmp_path, capsys):
    out = tmp_path / "ort.json"
    assert main([str(onnx_s), "--check-ort-overhead", "--warmup", "1", "--iters", "4", "--json", str(out)]) == 0
    check = json.loads(out.read_text())["checks"][0]
    assert check["artifact"] == str(onnx_s) and "ratio_p50" in check
    assert "plain onnxruntime" in capsys.readouterr().out


def test_agreement_reference_is_matched_by_source_sha256(ckpt_s, onnx_s, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(onnx_s))
    foreign = tmp_path / "foreign.onnx"
    for prop in model.metadata_props:
        if prop.key == "cmunext_edge.source_sha256":
            prop.value = "0" * 64                   # made from some other checkpoint
    onnx.save(model, str(foreign))
    bare = tmp_path / "bare.onnx"
    del model.metadata_props[:]                     # no metadata at all: no source recorded
    onnx.save(model, str(bare))
    rows = [RowSpec(ckpt_s, options=(("precision", "fp32"),)), RowSpec(foreign), RowSpec(bare)]
    cfg = BenchConfig(rows, warmup=0, iters=1, throughput_time_s=0, max_latency_images=2,
                      matmul_seconds=0, progress=False, verify=False)   # edited artifacts: opt out
    torch_row, foreign_row, bare_row = run_bench(cfg).rows
    assert torch_row.agreement_dice == 1.0 and torch_row.n_agreement_images == 2
    assert foreign_row.error is None and foreign_row.agreement_dice is None
    assert bare_row.agreement_dice > 0.99 and bare_row.reference == str(ckpt_s)
    assert bare_row.params is None                   # no variant metadata: complexity unknown


def test_bench_runs_on_an_edge_box_without_torch(onnx_s, ckpt_s, tmp_path):
    """Only the artifact's runtime installed: no complexity or agreement, everything else works."""
    import subprocess
    import sys
    out = tmp_path / "nt.json"
    code = ("import sys; sys.modules['torch'] = None\n"      # makes `import torch` fail
            "from cmunext_edge.cli.bench import main\n"
            f"sys.exit(main([{str(onnx_s)!r}, {str(ckpt_s)!r}, '--json', {str(out)!r}, "
            + ", ".join(repr(a) for a in FAST) + "]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr                  # the .pth row cannot run without torch ...
    onnx_row, pth_row = json.loads(out.read_text())["rows"]
    assert onnx_row["error"] is None and onnx_row["latency_ms"]["n"] == 3 and onnx_row["params"] is None
    assert "cmunext-edge[torch]" in pth_row["error"]        # ... and says which extra brings it


def test_benchmark_scripts_record_repo_relative_commands(tmp_path, monkeypatch):
    """The scripts pass (and so record) paths relative to the repository root."""
    import sys
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common
    import run_cpu_suite
    assert common.rel(ROOT / "models" / "x.pth") == "models/x.pth"
    assert common.rel(ROOT.parent / "shared" / "data") == "../shared/data"
    tool = common.tool("cmunext-bench")
    assert not common.python().startswith(str(ROOT)) and not tool[0].startswith(str(ROOT))
    if Path(sys.executable).absolute().is_relative_to(ROOT):      # the checkout's own .venv
        assert not common.python().startswith("/") and not tool[0].startswith("/")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a"], "val": ["b", "c"]}))
    args = run_cpu_suite.parse_args(["--split", str(split), "--data", str(ROOT.parent / "shared" / "data"),
                                     "--out", str(ROOT / "benchmarks" / "results"), "--quick"])
    monkeypatch.setattr(args, "out", tmp_path)
    cmd = run_cpu_suite.bench_command(args, ROOT / "models" / "m.safetensors", ["exports/cpu_suite/m_onnx_fp32.onnx"],
                                      ROOT / "benchmarks" / "results" / "cpu_x", "x")
    assert "models/m.safetensors@precision=fp32" in cmd
    # the PyTorch bf16 row only where this CPU (as PyTorch sees it) runs bf16 natively
    assert ("models/m.safetensors@precision=bf16" in cmd) == run_cpu_suite.bf16_rows_fit()[1]
    assert "exports/cpu_suite/m_onnx_fp32.onnx@threads=1" in cmd
    assert cmd[cmd.index("--json") + 1] == "benchmarks/results/cpu_x.json"
    assert cmd[cmd.index("--data") + 1] == "../shared/data"
    assert (tmp_path / "cpu_x_split.txt").read_text() == "b\nc\n"      # the split's 'val' list
    assert cmd[:len(tool)] == tool          # the interpreter/tool: absolute only where the venv is elsewhere
    assert not [a for a in cmd[len(tool):] if a.startswith("/") and "cpu_x_split" not in a]
    sys.modules.pop("common", None)
    sys.modules.pop("run_cpu_suite", None)


def test_reference_is_a_checkpoint_or_a_shipped_models_name(capsys, tmp_path):
    """--reference accepts a shipped model's name like the positional ARTIFACT does; anything that
    is not a PyTorch checkpoint is refused (exit 2, one line) before any row runs."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    for ref, says in (("no-such-model", "neither a file nor a shipped model"),
                      (str(readme), "not a PyTorch checkpoint file")):
        rc = main(["cmunext-s-busi", "--reference", ref, "--iters", "1", "--throughput-time", "0",
                   "--matmul-time", "0", "--quiet", "--json", str(tmp_path / "r.json")])
        err = capsys.readouterr().err
        assert rc == 2 and says in err and "Traceback" not in err
        assert not (tmp_path / "r.json").exists()
    from cmunext_edge.cli.bench import _reference_checkpoint
    assert _reference_checkpoint("cmunext-s-busi").name == "cmunext-s-busi.safetensors"


def test_rows_of_two_files_with_one_name_are_told_apart_and_an_unwritable_report_is_named(onnx_trained, tmp_path,
                                                                                            capsys, monkeypatch):
    import shutil
    from cmunext_edge.bench import report
    from cmunext_edge.cli import bench as bench_cli
    copy = tmp_path / "dup" / onnx_trained.artifact.name
    copy.parent.mkdir()
    for f in (onnx_trained.artifact, onnx_trained.artifact.parent / "manifest.json"):
        shutil.copy(f, copy.parent / f.name)

    def disk_full(*_):             # the folder passed the pre-flight; the disk fills while the bench runs
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(report, "write_markdown", disk_full)
    rc = bench_cli.main([str(onnx_trained.artifact), str(copy), "--iters", "2", "--warmup", "0",
                         "--throughput-time", "0", "--matmul-time", "0", "--quiet", "--wide",
                         "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    out, err = capsys.readouterr()
    labels = [r["label"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]]
    assert len(set(labels)) == 2 and any(lbl.startswith(f"dup/{copy.name}") for lbl in labels), labels
    assert rc == 1 and f"cannot write {tmp_path / 'r.md'}: No space left on device" in err, err


def test_a_model_with_more_classes_than_the_data_says_why_it_has_no_dice(tmp_path, capsys):
    """A 2-class model on 1-class ground truth: no Dice (predict and export refuse it), said as a note."""
    from cmunext_edge.checkpoints.weights import save_safetensors
    from cmunext_edge.core.model import build_model
    from cmunext_edge.resources import SAMPLES_DIR
    ckpt = save_safetensors(build_model("cmunext-s", num_classes=2), tmp_path / "two.safetensors")
    assert main([str(ckpt), "--data", str(SAMPLES_DIR), "--iters", "1", "--warmup", "0", "--throughput-time", "0",
                 "--json", str(tmp_path / "b.json")]) == 0
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert row["dice"] is None and "ground truth has 1 class(es), the model 2" in row["no_dice"]
    # "(agreement only)" only where an agreement figure stands in the row (was said beside "-")
    assert ("(agreement only)" in row["no_dice"]) == (row["agreement_dice"] is not None), row
    assert f"NO DICE {row['label']}: the data's ground truth has 1 class(es)" in capsys.readouterr().out


def test_an_interrupt_during_parallel_throughput_waits_until_no_stream_is_inside_the_runtime():
    """Ctrl-C/SIGTERM while measure_throughput waits for its streams must not leave a stream inside
    the runtime: at interpreter exit such a (daemon) thread aborted the process (`terminate called
    without an active exception`, exit 134, not 130/143). A real SIGINT, as Ctrl-C sends, in a
    process of its own (conftest.run_with_sigint)."""
    from conftest import run_with_sigint
    rc, out = run_with_sigint("""
        import os, threading, time
        import numpy as np
        from cmunext_edge.bench.timing import measure_throughput
        inside, lock = {"n": 0}, threading.Lock()

        class SlowBackend:
            def infer(self, batch):
                with lock:
                    inside["n"] += 1
                time.sleep(0.2)
                with lock:
                    inside["n"] -= 1
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.perf_counter()
        try:
            measure_throughput([SlowBackend(), SlowBackend()], np.zeros((1, 3, 16, 16), np.float32), 30.0)
            raise SystemExit("no KeyboardInterrupt")
        except KeyboardInterrupt:
            pass
        assert inside["n"] == 0, "the interrupt returned while a stream was still inside infer()"
        assert time.perf_counter() - started < 5, "the streams did not stop at the interrupt"
        print("ok")
    """)
    assert rc == 0 and out.strip().endswith("ok"), out


@pytest.mark.parametrize("fails_at", [1, 3])       # 1: its warm-up call; 3: while measuring
def test_a_stream_that_fails_during_parallel_throughput_raises_its_error_and_stops_the_others(fails_at):
    """Before: a stream whose warm-up failed never reached the start barrier, so the caller and the
    other streams waited for ever; one that failed later was dropped silently and the rate was
    computed over the streams that ran on. Now its error is raised, once every stream has stopped."""
    import threading
    import time
    from cmunext_edge.bench.timing import measure_throughput

    class Backend:
        def __init__(self, fail):
            self.calls, self.fail = 0, fail

        def infer(self, batch):
            self.calls += 1
            time.sleep(0.01)
            if self.fail and self.calls >= fails_at:
                raise RuntimeError("device lost")

    good, bad = Backend(False), Backend(True)
    result = {}

    def run():
        try:
            result["value"] = measure_throughput([good, bad], np.zeros((1, 3, 16, 16), np.float32), 30.0)
        except Exception as exc:       # noqa: BLE001 - the one under test
            result["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    started = time.perf_counter()
    t.start()
    t.join(20)
    assert not t.is_alive(), "measure_throughput hung after a stream failed"
    assert isinstance(result.get("error"), RuntimeError) and "device lost" in str(result["error"]), result
    assert time.perf_counter() - started < 10, "the other stream ran on to its 30 s deadline"
