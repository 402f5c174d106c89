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

