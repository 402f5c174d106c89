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
