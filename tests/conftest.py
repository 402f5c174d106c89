import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
BUSI = SHARED / "data" / "busi-train"
SAMPLES = ROOT / "cmunext_edge" / "samples" / "busi"


@pytest.fixture(scope="session")
def reference():
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference is not available")
    return REFERENCE


@pytest.fixture(scope="session")
def ckpt_s(reference):
    return reference / "official_cmunext_s_random.pth"


@pytest.fixture(scope="session")
def busi():
    if not BUSI.is_dir():
        pytest.skip("../shared/data/busi-train is not available")
    return BUSI


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A copy of the shipped CMUNeXt-S: reduced precisions need a trained network (random
    weights give near-random masks that no FP16/INT8 export reproduces)."""
    path = ROOT / "models" / "cmunext-s-busi.safetensors"
    if not path.is_file():
        pytest.skip("no shipped CMUNeXt-S (models/cmunext-s-busi.safetensors)")
    copy = tmp_path_factory.mktemp("trained") / "cmunext-s-busi.safetensors"
    shutil.copyfile(path, copy)
    return copy


@pytest.fixture
def int8_recipe(monkeypatch):
    """The per-ISA OpenVINO INT8 recipe of benchmarks/int8_notes.md ("INT8 per instruction set"):
    NNCF TRANSFORMER everywhere, plus overflow_fix ENABLE (7-bit weights) where the effective ISA
    has no VNNI/AMX, whose saturating u8 x s8 multiply-add otherwise costs agreement (0.966 -> 0.986
    on the bundled samples under AVX2). export() has no overflow_fix option yet, so this adds it to
    the NNCF call for the test; phase 2 of issue 11 makes it the export default. Returns the
    overflow_fix used (None: NNCF's own default)."""
    from cmunext_edge.capabilities import detect
    if detect().int8_native:
        return None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    import cmunext_edge.export.openvino_export as ove
    original = ove._kwargs

    def with_overflow_fix(nncf, opts):
        kwargs = original(nncf, opts)
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
        return kwargs
    monkeypatch.setattr(ove, "_kwargs", with_overflow_fix)
    return "enable"
