"""Export choices that follow the CPU (export/cpu_fit.py), on fake CPUs (no test assumes this one),
the capability record in manifests / bench / --list-devices, and the demo's rejection reporting."""
import json
from pathlib import Path

import pytest
from test_capabilities import GRAVITON3, RPI4, SPR, ZEN3, ZEN4

from cmunext_edge.capabilities import detect, from_cpuinfo
from cmunext_edge.export import cpu_fit, int8_recipe
from cmunext_edge.export.auto.candidates import candidates_for
from cmunext_edge.export.options import ExportOptions
from cmunext_edge.export.verify import VerificationError

CPUS = {name: from_cpuinfo(text, environ={}) for name, text in
        (("zen3", ZEN3), ("zen4", ZEN4), ("spr", SPR), ("graviton3", GRAVITON3), ("rpi4", RPI4))}
ZEN4_AS_AVX2 = from_cpuinfo(ZEN4, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})


@pytest.mark.parametrize("cpu, overflow_fix, reduce_range", [
    ("zen3", "enable", True), ("zen4", "enable", False), ("spr", "enable", False),
    ("graviton3", None, False), ("rpi4", None, False)])
def test_int8_recipe_per_cpu(cpu, overflow_fix, reduce_range):
    caps = CPUS[cpu]
    assert cpu_fit.nncf_overflow_fix(caps) == overflow_fix
    assert cpu_fit.ort_reduce_range(caps) is reduce_range


def test_lowered_isa_gets_the_avx2_recipe():
    assert cpu_fit.ort_reduce_range(ZEN4_AS_AVX2) and cpu_fit.nncf_overflow_fix(ZEN4_AS_AVX2) == "enable"


def test_overflow_fix_values():
    assert cpu_fit.resolve_overflow_fix("auto", CPUS["zen3"]) == "enable"
    assert cpu_fit.resolve_overflow_fix("auto", CPUS["graviton3"]) is None
    assert cpu_fit.resolve_overflow_fix("FIRST_LAYER") == "first_layer"
    assert cpu_fit.resolve_overflow_fix(None) is None
    with pytest.raises(ValueError, match="overflow_fix"):
        cpu_fit.resolve_overflow_fix("sometimes")


@pytest.mark.parametrize("value, member", [("enable", "ENABLE"), ("first_layer", "FIRST_LAYER"),
                                           ("disable", "DISABLE")])
def test_nncf_call_gets_the_overflow_fix(value, member):
    nncf = pytest.importorskip("nncf")
    from nncf.quantization.advanced_parameters import OverflowFix
    from cmunext_edge.export.openvino_export import _kwargs, resolved_nncf_options
    kwargs = _kwargs(nncf, resolved_nncf_options({"overflow_fix": value, "smooth_quant_alpha": 0.5}))
    adv = kwargs["advanced_parameters"]
    assert adv.overflow_fix == getattr(OverflowFix, member) and adv.smooth_quant_alpha == 0.5
    assert kwargs["model_type"] == nncf.ModelType.TRANSFORMER


@pytest.mark.parametrize("cpu, overflow_fix", [("zen3", "enable"), ("zen4", "enable"), ("graviton3", None)])
def test_default_nncf_options_follow_the_cpu(cpu, overflow_fix, monkeypatch):
    from cmunext_edge.export.openvino_export import resolved_nncf_options
    monkeypatch.setattr(cpu_fit, "detect", lambda: CPUS[cpu])
    opts = resolved_nncf_options({})
    assert opts["model_type"] == "transformer" and opts["preset"] == "performance"
    assert opts["overflow_fix"] == overflow_fix
    with pytest.raises(ValueError, match="unknown NNCF option"):
        resolved_nncf_options({"overflowfix": "enable"})


@pytest.mark.parametrize("cpu, reduce_range", [("zen3", True), ("zen4", False), ("rpi4", False)])
def test_ort_reduce_range_by_capability_never_for_tensorrt(cpu, reduce_range, monkeypatch):
    from cmunext_edge.export.ort_quant import resolved_ort_options
    monkeypatch.setattr(cpu_fit, "detect", lambda: CPUS[cpu])
    assert resolved_ort_options({})["reduce_range"] is reduce_range
    assert resolved_ort_options({"reduce_range": True})["reduce_range"] is True
    assert resolved_ort_options({"reduce_range": False})["reduce_range"] is False
    assert resolved_ort_options({}, for_tensorrt=True)["reduce_range"] is False
    # float layers: the OpenVINO default for ONNX Runtime, none for TensorRT Q/DQ (not measured there)
    assert resolved_ort_options({})["float_layers"] == "faithful-wide"
    assert resolved_ort_options({}, for_tensorrt=True)["float_layers"] is None
    assert resolved_ort_options({"float_layers": "none"})["float_layers"] == "none"


def test_gate_failure_hint_names_the_cause_and_what_to_try():
    hint = int8_recipe.gate_failure_hint("openvino", "int8", "cpu", ExportOptions(), caps=CPUS["zen3"])
    assert "no VNNI" in hint and "u8 x s8 saturation" in hint
    assert "--target onnxruntime" in hint and "fp32" in hint and "--int8-float-layers" in hint
    assert "overflow_fix ENABLE" not in hint                      # already the x86 default
    assert "than the default five (faithful-wide)" in hint        # the default already keeps five float
    one = ExportOptions(target="openvino", nncf={"float_layers": "faithful"})
    assert "--int8-float-layers faithful-wide (the default)" in int8_recipe.gate_failure_hint(
        "openvino", "int8", "cpu", one, caps=CPUS["zen3"])
    first = ExportOptions(target="openvino", nncf={"overflow_fix": "first_layer"})
    assert "overflow_fix ENABLE" in int8_recipe.gate_failure_hint("openvino", "int8", "cpu", first, caps=CPUS["zen3"])
    vnni = int8_recipe.gate_failure_hint("openvino", "int8", "cpu", ExportOptions(), caps=CPUS["zen4"])
    assert "no VNNI" not in vnni and "Try:" in vnni
    ort = int8_recipe.gate_failure_hint("onnxruntime", "int8", "cpu", ExportOptions(ort_quant={"reduce_range": False}),
                                        caps=CPUS["zen3"])
    assert "reduce_range" in ort and "--target openvino" in ort
    assert int8_recipe.gate_failure_hint("openvino", "fp16", "cpu", caps=CPUS["zen3"]) == ""
    assert int8_recipe.gate_failure_hint("tensorrt", "int8", "cuda", caps=CPUS["zen3"]) == ""


def test_bf16_candidates_only_where_bf16_is_native():
    def names(caps):
        return {c.name for c in candidates_for("CPU", caps=caps)}
    bf16_rows = {"ov-bf16", "ov-bf16-fold", "ov-int8-transformer-bf16", "ov-int8-transformer-dense-bf16"}   # the last two: INT8, bf16 float parts
    assert bf16_rows <= names(CPUS["zen4"])
    for caps in (CPUS["zen3"], ZEN4_AS_AVX2):
        got = names(caps)
        assert not bf16_rows & got
        assert {"ov-fp32", "ov-int8-transformer-dense", "ort-int8-qdq"} <= got
    explicit = candidates_for("CPU", ["ov-bf16"], caps=CPUS["zen3"])     # asked for by name: kept
    assert [c.name for c in explicit] == ["ov-bf16"]


def test_float_layers_resolve_per_cpu_and_by_name():
    from cmunext_edge.export.openvino_export import FLOAT_LAYERS, resolved_nncf_options
    for caps in CPUS.values():          # the five-layer list on every CPU kind (AVX2 and AVX-512 VNNI measured)
        assert cpu_fit.resolve_float_layers("auto", FLOAT_LAYERS, caps) == "faithful-wide"
    assert cpu_fit.resolve_float_layers("Faithful", FLOAT_LAYERS) == "faithful"
    assert cpu_fit.resolve_float_layers("NONE", FLOAT_LAYERS) == "none"
    assert cpu_fit.resolve_float_layers([], FLOAT_LAYERS) == "none"
    assert cpu_fit.resolve_float_layers((".*/Conv_1x1/.*",), FLOAT_LAYERS) == [".*/Conv_1x1/.*"]
    with pytest.raises(ValueError, match="float_layers"):
        cpu_fit.resolve_float_layers("most", FLOAT_LAYERS)
    opts = resolved_nncf_options({})
    assert opts["float_layers"] == "faithful-wide"
    assert opts["float_layer_patterns"] == list(FLOAT_LAYERS["faithful-wide"])
    assert resolved_nncf_options({"float_layers": "none"})["float_layer_patterns"] == []


def test_nncf_ignored_scope_joins_float_layers_and_ignored_names():
    nncf = pytest.importorskip("nncf")
    from cmunext_edge.export.openvino_export import FLOAT_LAYERS, _kwargs, resolved_nncf_options
    scope = _kwargs(nncf, resolved_nncf_options({"ignored_names": [".*Conv_1x1.*"]}))["ignored_scope"]
    assert scope.patterns == [".*Conv_1x1.*", *FLOAT_LAYERS["faithful-wide"]]
    assert "ignored_scope" not in _kwargs(nncf, resolved_nncf_options({"float_layers": "none"}))


def test_manifest_fields_record_the_machine_and_the_int8_recipe(monkeypatch):
    monkeypatch.setattr(cpu_fit, "detect", lambda: CPUS["zen3"])
    monkeypatch.setattr(int8_recipe, "detect", lambda: CPUS["zen3"])
    fields = int8_recipe.manifest_fields("openvino", "int8", ExportOptions(target="openvino"))
    assert fields["capabilities"]["isa"] == "AVX2" and "no VNNI" in fields["capabilities"]["summary"]
    assert fields["int8_settings"]["nncf"]["overflow_fix"] == "enable"
    assert fields["int8_settings"]["nncf"]["float_layers"] == "faithful-wide"
    ort = int8_recipe.manifest_fields("onnxruntime", "int8", ExportOptions(target="onnxruntime"))
    assert ort["int8_settings"]["ort_quant"]["reduce_range"] is True           # zen3: no VNNI
    monkeypatch.setattr(cpu_fit, "detect", lambda: CPUS["graviton3"])
    arm = int8_recipe.manifest_fields("onnxruntime", "int8", ExportOptions(target="onnxruntime"))
    assert arm["int8_settings"]["ort_quant"]["reduce_range"] is False
    assert "int8_settings" not in int8_recipe.manifest_fields("onnx", "fp32", ExportOptions())
    json.dumps(fields)


def test_list_devices_and_bench_machine_show_the_probe():
    from cmunext_edge.bench.system import machine_info
    from cmunext_edge.cli.bench import list_devices_text
    text = list_devices_text()
    assert f"CPU: {detect().summary()}" in text and "OpenVINO CPU capabilities" in text
    info = machine_info(matmul_seconds=0)
    assert info["capabilities"]["isa"] == detect().isa and json.dumps(info)


# --- the demo: export what verifies, report what was rejected and why -----------------------
class _Result:
    def __init__(self, out, name, target, precision):
        self.artifact, self.target, self.precision = Path(out) / f"{name}.x", target, precision


def _fake_export(reject: set):
    def export(weights, *, target, precision, name, out):
        if precision in reject:
            raise VerificationError(f"{target} {precision} artifact disagrees with PyTorch FP32: mask Dice "
                                    f"agreement 0.9651 < 0.97; nothing was written. Likely cause: no VNNI", {})
        return _Result(out, name, target, precision)
    return export


def test_demo_reports_a_rejected_int8_artifact_and_exits_0(tmp_path, capsys):
    from cmunext_edge.cli.demo import DEMO_EXPORTS, report_exports, run_exports
    results = run_exports(tmp_path, "w.safetensors", DEMO_EXPORTS, _fake_export({"int8"}))
    assert [bool(r["artifact"]) for r in results] == [True, False]
    assert "0.9651 < 0.97" in results[1]["rejected"]
    assert report_exports(results) == 0
    out = capsys.readouterr().out
    assert "REJECTED on this CPU" in out and "no VNNI" in out and "onnx_fp32" in out


def test_demo_fails_when_fp32_is_rejected_or_export_breaks(tmp_path):
    from cmunext_edge.cli.demo import DEMO_EXPORTS, report_exports, run_exports
    assert report_exports(run_exports(tmp_path, "w", DEMO_EXPORTS, _fake_export({"fp32"}))) == 2
    assert report_exports(run_exports(tmp_path, "w", DEMO_EXPORTS, _fake_export(set()))) == 0

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")
    with pytest.raises(RuntimeError, match="converter crashed"):   # not a rejection: main() turns it into exit 1
        run_exports(tmp_path, "w", DEMO_EXPORTS, broken)


def test_demo_main_exits_1_on_a_real_failure(tmp_path, monkeypatch, capsys):
    from cmunext_edge.cli import demo
    monkeypatch.setattr(demo, "segment_samples", lambda out: {"skipped": 0})
    monkeypatch.setattr(demo, "export_and_bench", lambda out: (_ for _ in ()).throw(RuntimeError("boom")))
    assert demo.main(["--out", str(tmp_path)]) == 1
    assert "boom" in capsys.readouterr().err


def test_cmunext_info_shows_the_probe(capsys):
    from cmunext_edge.cli.info import main
    assert main(["cmunext-s-busi"]) == 0
    assert f"this CPU      {detect().summary()}" in capsys.readouterr().out
    assert main(["cmunext-s-busi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["capabilities"]["isa"] == detect().isa
