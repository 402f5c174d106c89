"""The shipped model: loads by default, and its model card's validation figures reproduce."""
import json

import pytest

from conftest import ROOT
from cmunext_edge.data.discovery import discover
from cmunext_edge.fileio import sha256_file
from cmunext_edge.predict.job import run_job
from cmunext_edge.runtime.segmenter import EdgeSegmenter

CARD = ROOT / "models" / "cmunext-s-busi.json"


@pytest.fixture(scope="module")
def card():
    if not CARD.is_file():
        pytest.skip("no shipped model yet")
    return json.loads(CARD.read_text())


def test_default_segmenter_is_the_shipped_model(card):
    seg = EdgeSegmenter()
    assert seg.describe()["artifact"].endswith("cmunext-s-busi.safetensors")
    assert seg.backend.metadata["sha256"] == card["sha256_safetensors"]
    assert sha256_file(ROOT / "models" / "cmunext-s-busi.pth") == card["sha256_pth"]


def test_validation_figures_of_the_card_reproduce(card, busi, tmp_path):
    names = (ROOT / "models" / "cmunext-s-busi.val.txt").read_text().split("\n")
    samples = discover(busi, ROOT / "models" / "cmunext-s-busi.val.txt")
    assert len(samples) == card["n_val"] == len([n for n in names if n])
    result = run_job(EdgeSegmenter(), samples, tmp_path, write_overlays=False)
    summary = result.summary()
    assert abs(summary["mean_dice"] - card["val_dice"]) < 1e-4
    assert abs(summary["mean_iou"] - card["val_iou"]) < 1e-4
    assert summary["mean_dice"] >= 0.70
