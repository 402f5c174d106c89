"""Slow soak (issue 12): 10,000 segment calls on a verified ONNX artifact, RSS recorded every
1,000, growth after the first 1,000 below 20 MB. Kept out of the default run: pytest -m slow."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_soak_10000_segment_calls_bounded_rss(tmp_path):
    pytest.importorskip("onnxruntime")
    import soak
    result = soak.soak(soak.export_default(tmp_path), calls=10_000)
    assert len(result["records"]) == 10
    assert result["growth_mb"] < 20, result["records"]
