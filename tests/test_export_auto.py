"""`cmunext-export --target auto`: the Dice budget decides (a zero budget rejects every lossy
candidate), the chosen artifact runs with no extra options at its stored settings, the exact graph
rewrites are exact. Small: CMUNeXt-S, a few bundled images, a small candidate set; no timing asserts."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cmunext_edge.capabilities import detect
from cmunext_edge.export.auto import (AutoOptions, CandidateStatus, Measured, candidates_for, run_auto, select)
from cmunext_edge.export.onnx_export import prepare_model
from cmunext_edge.runtime.segmenter import EdgeSegmenter

pytest.importorskip("openvino")
pytest.importorskip("nncf")
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "cmunext_edge" / "samples" / "busi"
# A bf16 request runs bf16 only where the (effective) ISA has native BF16; elsewhere OpenVINO runs f32.
BF16_OR_FP32 = "bf16" if detect().bf16_native else "fp32"
FAST = dict(data=SAMPLES, eval_size=6, calib=SAMPLES, calib_size=6, rounds=1, iters=2, throughput_s=0,
            time_pytorch=False, threads=1)


@pytest.fixture(scope="module")
def weights(trained):
    return trained


def _row(name, precision, drop, p50, agreement=1.0):
    return Measured(name, "x", precision, "", {}, artifact="a", p50_ms=p50, dice=0.7 - drop / 100,
                    dice_drop_points=drop, agreement=agreement, device="cpu")


def test_select_respects_the_dice_budget():
    rows = [_row("fp32", "fp32", 0.0, 20.0), _row("int8-lossy", "int8", 0.3, 5.0),
            _row("int8-bad", "int8", 2.0, 4.0), _row("bf16", "bf16", -0.1, 10.0),
            Measured("broken", "x", "int8", "", {}, reason="export failed")]
    assert select(rows, 0.5).name == "int8-lossy"
    assert {r.name: r.status for r in rows} == {"fp32": "within budget", "int8-lossy": "kept",
                                                 "int8-bad": "rejected", "bf16": "within budget",
                                                 "broken": "error"}
    assert select(rows, 0.0).name == "bf16"               # a zero budget: nothing that loses Dice
    assert all(r.status == "rejected" for r in rows if (r.dice_drop_points or 0) > 0)
    assert select([_row("lossy", "int8", 0.01, 1.0)], 0.0) is None


def test_status_is_an_enum_that_reads_as_its_value():
    rows = [_row("a", "fp32", 0.0, 1.0)]
    select(rows, 0.5)
    assert rows[0].status is CandidateStatus.KEPT and f"{rows[0].status}" == "kept"
    assert json.loads(json.dumps({"s": rows[0].status})) == {"s": "kept"}


def test_eval_images_are_drawn_by_the_calibration_sampler():
    from cmunext_edge.export.auto import load_eval_set
    from cmunext_edge.export.calibration import make_calibration_set
    from cmunext_edge.core.preprocess import get_preset
    spec = get_preset("official")
    for seed in (0, 1):
        evals = load_eval_set(SAMPLES, None, spec, limit=3, seed=seed)
        calib = make_calibration_set(SAMPLES, spec, 3, seed)
        assert [s.name for s in evals.samples] == [s.name for s in calib.samples]
    assert np.array_equal(evals.inputs, calib.inputs)


def test_select_requires_the_precisions_agreement_floor():
    rows = [_row("fp32", "fp32", 0.0, 20.0), _row("int8-disagrees", "int8", -0.2, 4.0, agreement=0.95),
            _row("int8-agrees", "int8", 0.1, 5.0, agreement=0.98)]
    assert select(rows, 0.5).name == "int8-agrees"
    assert rows[1].status == "rejected" and "0.97 required for int8" in rows[1].reason
    assert select(rows, 0.5, agreement_floor=False).name == "int8-disagrees"


def test_candidate_table_per_device():
    cpu = {c.name for c in candidates_for("CPU")}
    assert {"ort-fp32", "ov-int8-transformer-dense", "ort-int8-qdq"} <= cpu
    assert ("ov-bf16" in cpu) is detect().bf16_native          # BF16 only where it is native
    assert "ov-fp16" in {c.name for c in candidates_for("NPU")} and "ov-fp16" not in cpu
    with pytest.raises(ValueError, match=r"unknown candidate\(s\) \['no-such-candidate'\]; known: ort-fp32"):
        candidates_for("CPU", ["no-such-candidate"])
    with pytest.raises(ValueError, match="--device 'TPU': auto selection knows CPU, GPU, NPU"):
        candidates_for("TPU")


@pytest.mark.parametrize("graph", [{"fold_bn": True}, {"fold_bn": True, "dense_groups": True},
                                   {"fold_bn": True, "split_groups": True}])
def test_graph_rewrites_are_exact(weights, graph):
    torch = pytest.importorskip("torch")
    from cmunext_edge.checkpoints.weights import load_checkpoint
    model = load_checkpoint(weights).build()
    x = torch.randn(2, 3, 64, 64) * 0.01
    with torch.inference_mode():
        ref, got = model(x), prepare_model(model, graph)(x)
    assert torch.allclose(ref, got, atol=1e-4 * max(1.0, float(ref.abs().max())))


def test_zero_budget_rejects_every_lossy_candidate(weights, tmp_path):
    rep = run_auto(weights, AutoOptions(max_dice_drop=0.0, out=tmp_path, candidates=["ort-fp32", "ov-int8-transformer-dense"],
                                        **FAST))
    rows = {r["name"]: r for r in rep["candidates"]}
    for r in rows.values():
        assert r["dice_drop_points"] is not None
        if r["dice_drop_points"] > 0:
            assert r["status"] == "rejected" and "budget" in r["reason"]
    if rep["winner"]:
        assert rows[rep["winner"]]["dice_drop_points"] <= 0
    assert json.loads((tmp_path / "auto_report.json").read_text())["max_dice_drop_points"] == 0.0
    assert (tmp_path / "auto_report.md").is_file()


def test_chosen_artifact_runs_with_no_extra_options(weights, tmp_path):
    rep = run_auto(weights, device="CPU", max_dice_drop=100.0, out=tmp_path,
                   candidates=["ov-bf16", "ov-int8-transformer-dense"], **FAST)
    assert rep["winner"] in ("ov-bf16", "ov-int8-transformer-dense")
    kept = [r for r in rep["candidates"] if r["status"] == "kept"]
    assert len(kept) == 1 and kept[0]["name"] == rep["winner"]
    artifact = Path(rep["artifact"])
    assert artifact.parent == tmp_path and artifact.is_file()
    assert artifact.name in json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    with EdgeSegmenter.from_artifact(artifact) as seg:          # no options: the stored settings apply
        backend = seg.backend
        assert backend.runtime["hint"] == "latency" and backend.runtime["threads"] == 1
        if rep["winner"] == "ov-bf16":      # the precision that ran is the one this CPU supports
            assert backend.inference_precision == BF16_OR_FP32
        assert seg.self_test().passed
        image = np.full((300, 200, 3), 90, np.uint8)
        assert seg.segment(image).mask.shape == (300, 200)


def test_stored_runtime_settings_apply_and_explicit_options_win(weights, tmp_path):
    from cmunext_edge.export.pipeline import export
    from cmunext_edge.runtime.registry import open_backend
    res = export(weights, target="openvino", precision="bf16", out=tmp_path, calib_size=2, verify_size=8,
                 runtime={"inference_precision": "f32", "threads": 1, "hint": "latency"})
    with open_backend(res.artifact) as be:
        assert be.inference_precision == "fp32" and be.runtime["threads"] == 1
    with open_backend(res.artifact, inference_precision="bf16") as be:
        assert be.inference_precision == BF16_OR_FP32
    onnx = export(weights, target="onnx", precision="fp32", out=tmp_path, calib_size=2, verify_size=8,
                  runtime={"threads": 1}, graph={"fold_bn": True})
    with open_backend(onnx.artifact) as be:
        assert be.runtime["threads"] == 1 and be.metadata["graph"] == '["fold_bn"]'


def test_cli_target_auto(weights, tmp_path):
    from cmunext_edge.cli.export import main
    code = main(["--weights", str(weights), "--target", "auto", "--device", "CPU", "--max-dice-drop", "0.5",
                 "--candidates", "ort-fp32", "--calib", str(SAMPLES), "--calib-size", "4",
                 "--verify-data", str(SAMPLES), "--verify-size", "4", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0
    assert {"auto_report.md", "auto_report.json", "manifest.json"} <= set(os.listdir(tmp_path))


def _gated(name, precision, p50, n_bad, n=60, faithful=None):
    from cmunext_edge.core.agreement import clopper_pearson_upper
    r = _row(name, precision, 0.0, p50)
    r.n_bad, r.bad_upper95, r.worst, r.worst_image = n_bad, clopper_pearson_upper(n_bad, n), 0.5 if n_bad else 1.0, "x"
    r.faithful = n_bad <= 0.03 * n if faithful is None else faithful
    r.gate_failure = None if r.faithful else f"{n_bad} of {n} images below 0.9 > tail floor 3%"
    r.verified = r.faithful
    r.verification = {"n_images": n, "claim": "c"}
    return r


def test_select_rejects_an_unfaithful_tail_and_says_why_no_int8_is_kept():
    from cmunext_edge.export.auto import selection_note
    rows = [_gated("fp32", "fp32", 20.0, 0), _gated("int8-flips", "int8", 4.0, 6)]
    winner = select(rows, 0.5)
    assert winner.name == "fp32" and rows[1].status == "rejected" and "tail floor" in rows[1].reason
    note = selection_note(rows, winner)
    assert "no INT8 candidate is faithful" in note and "int8-flips, 6 below 0.9" in note
    # a timing tie (within 5%) goes to the lower bound on the bad-image share
    tie = [_gated("a", "int8", 5.0, 1), _gated("b", "int8", 5.2, 0)]
    assert select(tie, 0.5).name == "b"
    assert select([_gated("a", "int8", 5.0, 1), _gated("b", "int8", 5.5, 0)], 0.5).name == "a"


def test_select_prefers_a_verified_candidate_to_a_faster_one_that_only_passed():
    fast = _gated("int8-1bad-of-60", "int8", 4.0, 1)       # passes (1.7% <= 3%), bound 8.9%: not verified
    fast.verified = False
    slow = _gated("bf16", "bf16", 6.0, 0)                  # 0 of 60: bound 4.9%, verified
    rows = [fast, slow]
    assert select(rows, 0.5).name == "bf16"
    assert "not verified" in fast.reason and fast.status == "within budget"
    assert "fastest verified candidate" in slow.reason
    # when nothing is verified (too few held-out images), the fastest faithful one still wins
    none_verified = [_gated("a", "int8", 4.0, 0, n=20), _gated("b", "fp32", 9.0, 0, n=20)]
    for r in none_verified:
        r.verified = False
    assert select(none_verified, 0.5).name == "a"


def test_auto_evaluates_on_held_out_images_and_records_the_winners_verification(weights, tmp_path):
    from cmunext_edge.artifacts.info import describe_artifact, verification_line
    rep = run_auto(weights, device="CPU", out=tmp_path, candidates=["ort-fp32"], rounds=1, iters=2,
                   throughput_s=0, time_pytorch=False, threads=1)
    ev = rep["eval_set"]
    assert ev["origin"] == "held-out validation images" and ev["held_out"]
    # the default calibration images are training images: none of the 64 held-out ones is left out
    assert ev["n_images"] == 64 and ev["calibration_excluded"] == 0
    row = rep["candidates"][0]
    assert row["worst_image"] and row["n_bad"] == 0 and row["faithful"] and row["verified"]
    assert "worst" in (tmp_path / "auto_report.md").read_text()
    info = describe_artifact(Path(rep["artifact"]))
    v = info["verification"]
    assert v["distribution"]["n"] == ev["n_images"] and v["verified"]
    assert verification_line(v, info["in_manifest"], info["auto"]).startswith("verified")
    # the candidate's own artifact carries the same record (cmunext-bench / cmunext-info judge it by it)
    cand = describe_artifact(tmp_path / "candidates" / "ort-fp32" / "ort-fp32.onnx")
    assert cand["verification"]["distribution"]["n"] == 64 and cand["verification"]["verified"]
    assert cand["auto"]["candidate"] == "ort-fp32" and cand["auto"]["status"] == "kept"


def test_auto_does_not_call_an_int8_candidate_verified_on_its_calibration_images(weights, tmp_path):
    """--verify-data overlapping --calib: auto warned, then recorded the INT8 winner as verified,
    held out, with an empty overlap. Now, as an export's verification does, auto evaluates on the
    other images when there are others (the calibration images left out, and said); when none other
    remains, each candidate's record names the images that calibrated it (INT8 only) and is not held
    out; a float candidate is not affected."""
    said = []
    rep = run_auto(weights, AutoOptions(out=tmp_path / "others", max_dice_drop=100.0,
                                        candidates=["ort-fp32", "ov-int8-transformer-dense"], log=said.append, **FAST))
    note = next((s for s in said if s.startswith("note: ") and "left out, evaluating on the others" in s), None)
    assert note, said
    calibrated = {Path(f).stem for f in next(iter(json.loads((tmp_path / "others" / "candidates" / "ov-int8-transformer-dense"
                                                               / "manifest.json").read_text())["artifacts"].values()))["calibration"]["files"]}
    entry = next(iter(json.loads((tmp_path / "others" / "candidates" / "ov-int8-transformer-dense" / "manifest.json")
                      .read_text())["artifacts"].values()))
    assert len(calibrated) == 6 and entry["verification"]["data"]["overlap"]["calibration"] == [], entry["verification"]["data"]
    assert entry["verification"]["data"]["held_out"] is True and rep["eval_set"]["n_images"] == 6, rep["eval_set"]
    assert any(repr(name) in note for name in calibrated), note          # it names one it left out

    said = []                       # every image calibrated the INT8 candidate: no other remains
    every = dict(FAST, eval_size=None, calib_size=None)
    rep = run_auto(weights, AutoOptions(out=tmp_path / "none", max_dice_drop=100.0,
                                        candidates=["ort-fp32", "ov-int8-transformer-dense"], log=said.append, **every))
    assert any("also calibrated the INT8 model" in s for s in said), said
    rows = {r["name"]: r for r in rep["candidates"]}
    int8 = json.loads((tmp_path / "none" / "candidates" / "ov-int8-transformer-dense" / "manifest.json").read_text())
    record = next(iter(int8["artifacts"].values()))["verification"]
    assert record["data"]["held_out"] is False and len(record["data"]["overlap"]["calibration"]) == 16, record["data"]
    assert record["verified"] is False and record["unverified"] == "not held out" and "calibrated" in record["claim"]
    assert rows["ov-int8-transformer-dense"]["verified"] is False
    fp32 = json.loads((tmp_path / "none" / "candidates" / "ort-fp32" / "manifest.json").read_text())
    assert next(iter(fp32["artifacts"].values()))["verification"]["data"]["overlap"]["calibration"] == []


def test_auto_without_int8_candidates_does_not_warn_about_calibration(weights, tmp_path):
    """Float candidates only (--candidates ort-fp32): auto still warned that evaluation images 'also
    calibrated the INT8 model ... keep --verify-data and --calib disjoint (INT8 candidates)' when they
    held copies of the default calibration images, though no INT8 candidate was built."""
    said = []
    rep = run_auto(weights, AutoOptions(out=tmp_path, max_dice_drop=100.0, candidates=["ort-fp32"],
                                        log=said.append, **FAST))
    assert not any("calibrated the INT8 model" in s for s in said), said
    assert rep["candidates"][0]["name"] == "ort-fp32"
