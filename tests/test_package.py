import re
import subprocess
import sys

import pytest

from conftest import ROOT


def test_import_needs_no_heavy_dependency():
    code = ("import sys, cmunext_edge; heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', "
            "'nncf', 'tensorrt', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_optional_dependency_names_its_extra(monkeypatch):
    from cmunext_edge._deps import MissingDependencyError, available, require
    # as on a machine without TensorRT / nncf, whether or not this one has them
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(MissingDependencyError, match=re.escape('pip install "cmunext-edge[tensorrt]"')):
        require("tensorrt")
    with pytest.raises(MissingDependencyError, match=re.escape('pip install "cmunext-edge[openvino-export]"')):
        require("nncf")
    assert not available("tensorrt")
    assert require("json") is sys.modules["json"] and available("json")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*Tests\*\*.*?```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    assert block in (ROOT / ".ci" / "run").read_text()


def test_bundled_samples_are_complete():
    """README.md: 16 bundled breast-ultrasound samples, each with its mask."""
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.resources import SAMPLES_DIR
    samples = discover(SAMPLES_DIR)
    images = sorted(p.stem for p in (SAMPLES_DIR / "images").iterdir())
    masks = sorted(p.stem for p in (SAMPLES_DIR / "masks" / "0").iterdir())
    assert len(samples) == 16 and images == masks == sorted(s.name for s in samples)
    assert all(s.mask == SAMPLES_DIR / "masks" / "0" / s.image.name for s in samples)
    assert "16 bundled breast-ultrasound samples" in (ROOT / "README.md").read_text()
    assert "Data in Brief" in (SAMPLES_DIR / "README.md").read_text()
