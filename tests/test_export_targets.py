"""Fast checks of the export front end: the target table, option errors, calibration sampling,
the TensorRT not-installed path and the sidecar compatibility check (no artifacts built)."""
import dataclasses
import json

import pytest

from cmunext_edge._deps import MissingDependencyError, available
from cmunext_edge.cli.export import main as export_main
from cmunext_edge.export.calibration import CalibrationError, make_calibration_set
from cmunext_edge.export.options import ExportOptions
from cmunext_edge.export.targets import (
    OPTIONS, TARGETS, ExportUsageError, check_request, get_target, help_table)
from cmunext_edge.core.precision import Int8Mode, Precision
from cmunext_edge.core.preprocess import get_preset
from cmunext_edge.runtime.base import BackendError


def test_aliases_resolve_to_one_table_row():
    assert get_target("trt").name == "tensorrt"
    assert get_target("OV").name == "openvino"
    assert get_target("ort").name == "onnxruntime"
    table = help_table()
    assert all(t.name in table for t in TARGETS)


def test_unknown_target_lists_known_ones():
    with pytest.raises(ExportUsageError, match="known targets: onnx, openvino \\(ov\\)"):
        get_target("coreml")


def _check(target, precision=None, **used):
    return check_request(get_target(target), ExportOptions(target=target, precision=precision, **used))


@pytest.mark.parametrize("target, precision, used, match", [
    ("onnx", "int8", {}, "does not support int8"),
    ("onnxruntime", "fp16", {}, "supports int8"),
    ("onnx", None, {"calib": "x"}, "does not take --calib"),
    ("openvino", "fp32", {"calib": "x"}, "only applies to INT8"),
    ("openvino", "int8", {"workspace": 2}, "does not take --workspace"),
    ("tensorrt", "fp16", {"dynamic": True, "batch": 4}, "exclude each other"),
    ("tensorrt", "fp16", {"int8_mode": "calibrator"}, "--int8-mode only applies to INT8"),
    ("tensorrt", "fp32", {"calibrator": "minmax"}, "--calibrator only applies to INT8"),
    ("onnx", "fp32", {"ort_quant": {"per_channel": False}}, "does not take --ort-quant"),
])
def test_unsupported_options_are_refused(target, precision, used, match):
    with pytest.raises(ExportUsageError, match=match):
        _check(target, precision, **used)


def test_default_precisions():
    assert _check("onnx") == "fp32"
    assert _check("ort") == "int8"
    assert _check("trt", dla_core=0, workspace=2) is Precision.FP16
    assert _check("trt", "int8", int8_mode="calibrator", calibrator="minmax", batch=4) is Precision.INT8


def test_options_normalise_enums_and_refuse_unknown_values():
    o = ExportOptions(target="trt", precision="INT8", int8_mode="qdq")
    assert o.precision is Precision.INT8 and o.int8_mode is Int8Mode.QDQ
    with pytest.raises(ExportUsageError, match="unknown precision 'fp8'; known: fp32, fp16, bf16, int8"):
        ExportOptions(precision="fp8")
    with pytest.raises(ExportUsageError, match="unknown INT8 mode"):
        ExportOptions(int8_mode="implicit")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.batch = 2
    assert o.given(("batch", "int8_mode", "calib")) == {"int8_mode": Int8Mode.QDQ}


def test_enums_behave_as_their_strings():
    assert Precision.INT8 == "int8" and {"int8": 1}[Precision.INT8] == 1
    assert f"{Precision.FP16}_x" == "fp16_x" and str(Int8Mode.CALIBRATOR) == "calibrator"
    assert json.dumps({Precision.BF16: Int8Mode.QDQ}) == '{"bf16": "qdq"}'
    assert Precision.names() == ("fp32", "fp16", "bf16", "int8")


def test_every_row_is_complete():
    """What the pipeline needs of a target comes from its row: builder, embed, default device,
    precisions, INT8-only options and dependencies (with the install hint)."""
    for t in TARGETS:
        assert t.from_artifact or (callable(t.load_embed()) and t.builder.rsplit(":", 1)[1] == "build")
        assert callable(t.load_builder())
        assert t.int8_options <= t.options and set(t.options) <= set(OPTIONS)
        assert all(isinstance(p, Precision) for p in t.precisions)
        assert t.default_device in ("cpu", "cuda")
        assert t.suffix.startswith(".")
    ov, trt = get_target("ov"), get_target("trt")
    assert ov.required_modules(Precision.INT8) == ("openvino", "nncf")
    assert ov.required_modules(Precision.FP16) == ("openvino",)
    assert 'pip install "cmunext-edge[openvino-export]"' in ov.missing_hint("nncf")
    assert "JetPack" in trt.missing_hint("tensorrt") and trt.default_device == "cuda"


def test_export_takes_an_options_object_not_positional_strings(ckpt_s, tmp_path):
    from cmunext_edge.export.pipeline import export
    with pytest.raises(TypeError, match="must be an ExportOptions"):
        export(ckpt_s, "onnx", out=tmp_path)
    with pytest.raises(ExportUsageError, match="does not take --calib"):   # keywords reach the checks
        export(ckpt_s, ExportOptions(target="onnx"), calib="x", out=tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_usage_errors_exit_2(ckpt_s, tmp_path, capsys):
    assert export_main(["--weights", str(ckpt_s), "--target", "coreml", "--out", str(tmp_path)]) == 2
    assert "unknown export target" in capsys.readouterr().err
    assert export_main(["--weights", str(ckpt_s), "--target", "onnx", "--int8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "cmunext-export: error: target onnx does not support int8; it supports fp32, fp16\n", err
    assert not list(tmp_path.iterdir())


def test_cli_help_has_example_and_table(capsys):
    with pytest.raises(SystemExit) as exc:
        export_main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "tensorrt (trt)" in out


@pytest.mark.skipif(available("tensorrt"), reason="TensorRT is installed here")
def test_tensorrt_not_installed_names_the_install_route(ckpt_s, tmp_path, capsys):
    from cmunext_edge.export.pipeline import export
    with pytest.raises(MissingDependencyError, match=r'pip install "cmunext-edge\[tensorrt\]".*JetPack'):
        export(ckpt_s, target="trt", out=tmp_path)
    assert export_main(["--weights", str(ckpt_s), "--target", "trt", "--int8", "--out", str(tmp_path)]) == 2
    assert "JetPack" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    from cmunext_edge.runtime.registry import open_backend
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(MissingDependencyError, match=r"cmunext-edge\[tensorrt\]"):
        open_backend(engine, device="cuda")


def test_tensorrt_sidecar_mismatch_is_refused_clearly():
    from cmunext_edge.runtime.tensorrt_backend import check_compatible
    side = {"tensorrt_version": "8.5.2", "gpu_name": "Orin", "compute_capability": "8.7"}
    check_compatible(side, "8.5.2", {"gpu_name": "Orin", "compute_capability": "8.7"}, "m.engine")
    with pytest.raises(BackendError, match="built with TensorRT 8.5.2, this machine has 10.3.*compute capability 8.7"):
        check_compatible(side, "10.3.0", {"gpu_name": "H100", "compute_capability": "9.0"}, "m.engine")


def test_calibration_sampling_is_seeded_and_uses_the_runtime_spec():
    spec = get_preset("official")
    a = make_calibration_set(None, spec, size=5, seed=1)
    b = make_calibration_set(None, spec, size=5, seed=1)
    c = make_calibration_set(None, spec, size=5, seed=2)
    assert a.manifest() == b.manifest() and a.sha256 != c.sha256
    assert a.inputs.shape == (5, 3, 256, 256) and abs(a.inputs).max() < 0.011   # real official inputs
    assert all(m is not None for m in a.masks)
    assert (a.inputs[0] == spec(a.samples[0].image)).all()


def test_a_capped_calibration_set_is_a_seeded_draw_across_classes_not_the_first_by_name():
    """ONNX Runtime / TensorRT Q/DQ calibrate on at most 16 images. Before: the first 16 by name of the
    drawn set, which in the default set (official-layout names: "benign (1)" ... "malignant (99)")
    were 16 benign images; in a folder of video frames they would be one sequence's first frames."""
    spec = get_preset("official")
    drawn = make_calibration_set(None, spec, size=64, seed=0)
    kept = drawn.subset(16)
    names = [s.name for s in kept.samples]
    assert len(kept) == 16 and kept.drawn == 64 and names == sorted(names)
    assert {n.split(" (")[0] for n in names} == {"benign", "malignant"}, names     # both classes drawn
    assert names != [s.name for s in drawn.samples][:16]
    rows = [[s.name for s in drawn.samples].index(n) for n in names]
    assert (kept.inputs == drawn.inputs[rows]).all() and (kept.inputs[3] == spec(kept.samples[3].image)).all()
    assert all((a == drawn.masks[i]).all() for a, i in zip(kept.masks, rows))
    assert kept.sha256 != drawn.sha256 and kept.manifest()["files"] == [s.image.name for s in kept.samples]
    assert drawn.subset(16).sha256 == kept.sha256                                  # deterministic
    assert make_calibration_set(None, spec, size=64, seed=1).subset(16).sha256 != kept.sha256


def test_corrupted_calibration_folder_fails_before_anything(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(CalibrationError, match="a.png"):
        make_calibration_set(tmp_path, get_preset("official"), size=4)
    with pytest.raises(CalibrationError, match="no images"):
        make_calibration_set(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None,
                             get_preset("official"))
