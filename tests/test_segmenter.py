from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from cmunext_edge.runtime.base import BackendError, DeviceUnavailableError
from cmunext_edge.runtime.segmenter import EdgeSegmenter


@pytest.fixture(scope="module")
def seg(ckpt_s):
    return EdgeSegmenter.from_checkpoint(ckpt_s)


def test_segment_path_returns_original_size(seg, busi):
    path = busi / "images" / "benign (10).png"
    h, w = cv2.imread(str(path)).shape[:2]
    r = seg.segment(path)
    assert r.mask.shape == (h, w) and r.mask.dtype == bool
    assert r.probability.shape == (h, w) and r.probability.dtype == np.float32
    assert r.logits.shape == (1, 256, 256)
    assert set(r.timings) >= {"preprocess_ms", "infer_ms", "postprocess_ms", "total_ms"}
    assert np.array_equal(r.mask, r.probability > 0.5)


def test_array_and_path_agree_and_batch_matches_single(seg, busi):
    paths = sorted((busi / "images").glob("*.png"))[:3]
    singles = [seg.segment(p) for p in paths]
    batch = seg.segment_batch([cv2.imread(str(p)) for p in paths], batch_size=2)
    for a, b in zip(singles, batch):
        assert np.abs(a.logits - b.logits).max() < 1e-4
        assert (a.mask != b.mask).mean() < 1e-3


def test_thread_safety(seg, busi):
    paths = sorted((busi / "images").glob("*.png"))[:4]
    expected = [seg.segment(p).logits for p in paths]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: seg.segment(p).logits, paths * 2))
    for i, lg in enumerate(got):
        assert np.abs(lg - expected[i % 4]).max() < 1e-4


def test_cuda_request_on_cpu_machine_falls_back_visibly_or_fails_strict(ckpt_s):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    s = EdgeSegmenter.from_checkpoint(ckpt_s, device="cuda")
    assert s.describe()["device"] == "cpu" and "cuda" in s.describe()["fallback"]
    with pytest.raises(DeviceUnavailableError, match="strict"):
        EdgeSegmenter.from_checkpoint(ckpt_s, device="cuda", strict_device=True)


def test_unknown_artifact_kind(tmp_path):
    (tmp_path / "model.xyz").write_text("x")
    with pytest.raises(BackendError, match=r"model\.xyz: unknown artifact kind '\.xyz'; known suffixes: .*\.onnx"):
        EdgeSegmenter(tmp_path / "model.xyz")
