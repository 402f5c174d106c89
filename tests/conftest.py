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


def _export_once(weights, tmp_path_factory, folder: str, **options):
    pytest.importorskip("torch"), pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")
    from cmunext_edge.export.pipeline import export
    return export(weights, out=tmp_path_factory.mktemp(folder), log=lambda m: None, **options)


# Exported artifacts, one export per test session (an export is the slowest step of a test):
# treat them as read-only and copy an artifact (and its manifest.json) before changing it.
@pytest.fixture(scope="session")
def onnx_random(ckpt_s, tmp_path_factory):
    """ExportResult of the random-weight CMUNeXt-S reference as a verified FP32 dynamic-batch
    ONNX, s.onnx (6 calibration/verification images)."""
    return _export_once(ckpt_s, tmp_path_factory, "onnx_random", target="onnx", dynamic=True, calib_size=6,
                        name="s")


@pytest.fixture(scope="session")
def onnx_trained(trained, tmp_path_factory):
    """ExportResult of the shipped (trained) CMUNeXt-S as a verified FP32 dynamic-batch ONNX,
    cmunext-s-busi_fp32.onnx (8 calibration/verification images)."""
    return _export_once(trained, tmp_path_factory, "onnx_trained", target="onnx", dynamic=True, calib_size=8,
                        name="cmunext-s-busi_fp32")


@pytest.fixture(scope="session")
def three_class(trained, tmp_path_factory):
    """A 3-class CMUNeXt-S and the 3-class sets derived from the bundled samples (benign lesion,
    malignant lesion, lesion rim; cmunext_edge/data/multiclass_sample.py) in both ground-truth layouts.

    The checkpoint is the shipped model with its 1-channel head widened to 3 channels (channel 0
    the shipped lesion head, 1 the same shifted by -2 logits, 2 its negation shifted by -4): a
    trained network whose 3 masks differ and are not empty, so reduced precisions can verify."""
    torch = pytest.importorskip("torch")
    from cmunext_edge.data.multiclass_sample import make_three_class_dataset
    from cmunext_edge.checkpoints.weights import load_checkpoint, save_safetensors

    root = tmp_path_factory.mktemp("three_class")
    ckpt = load_checkpoint(trained)
    state = dict(ckpt.state_dict)
    w, b = state["Conv_1x1.weight"], state["Conv_1x1.bias"]
    state["Conv_1x1.weight"] = torch.cat([w, w, -w])
    state["Conv_1x1.bias"] = torch.cat([b, b - 2.0, -b - 4.0])
    path = save_safetensors(state, root / "cmunext-s-3class.safetensors", ckpt.spec)
    return {"checkpoint": path,
            "masks": make_three_class_dataset(root / "masks_layout", "masks"),
            "labels": make_three_class_dataset(root / "labels_layout", "labels")}


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """A release key pair and another key pair (the signing tests; needs the [sign] extra)."""
    pytest.importorskip("model_signing")
    from cmunext_edge.artifacts.signing import new_key_pair
    d = tmp_path_factory.mktemp("keys")
    return {"release": new_key_pair(d / "release.pem", d / "release.pub.pem"),
            "other": new_key_pair(d / "other.pem", d / "other.pub.pem")}


def run_with_sigint(body: str, timeout: float = 120):
    """Run `body` (Python source that sends itself a real SIGINT and checks what follows, printing
    "ok" at the end) in a fresh interpreter with Python's default SIGINT handler: a signal landing in
    native code cannot disturb the test process, and a runner started in the background by a shell
    without job control (`cmd &`, SIGINT inherited as ignored, so Python installs no handler) still
    raises KeyboardInterrupt. -> (returncode, stdout + stderr)."""
    import subprocess
    import sys
    import textwrap
    prelude = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr
