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


BASE_CARD = ROOT / "models" / "cmunext-base-busi.json"


def test_base_model_is_selectable_by_name_and_shares_the_default_models_split(tmp_path):
    """cmunext-base-busi (issue 26) loads by name, its weights are the card's, and it was validated on
    the same 90 images as the default model, whose 64 that are not near copies of training images are
    the bundled held-out images (so verification of its exports on them is held out too)."""
    from cmunext_edge.checkpoints.weights import load_checkpoint, save_official_pth
    from cmunext_edge.resources import HELDOUT_DIR, resolve_weights
    card = json.loads(BASE_CARD.read_text())
    seg = EdgeSegmenter("cmunext-base-busi")
    assert seg.describe()["artifact"].endswith("cmunext-base-busi.safetensors")
    assert seg.backend.metadata["sha256"] == card["sha256_safetensors"]
    assert seg.backend.metadata["variant"] == "cmunext"
    split = json.loads((ROOT / "models" / "cmunext-base-busi.split.json").read_text())
    val = [n for n in (ROOT / "models" / "cmunext-s-busi.val.txt").read_text().split("\n") if n]
    assert sorted(split["val"]) == sorted(val) and len(split["train"]) == card["n_train"]
    # the bundled held-out images: the validation images less the near copies of training images
    from cmunext_edge.data.discovery import discover as find
    from cmunext_edge.data.model_split import training_images
    bundled = {p.stem for p in (HELDOUT_DIR / "images").iterdir()}
    assert bundled < set(val) and len(bundled) == 64
    assert not training_images(find(HELDOUT_DIR), ROOT / "models" / "cmunext-s-busi.split.json")
    # the model card's one-line conversion to the official .pth format works
    ckpt = load_checkpoint(resolve_weights("cmunext-base-busi"))
    pth = save_official_pth(ckpt.state_dict, tmp_path / "cmunext-base-busi.pth")
    assert load_checkpoint(pth).info.variant == "cmunext"


@pytest.mark.slow          # 90 images through CMUNeXt base: ~40 s on 2 cores (the S card's test stays in)
def test_base_validation_figures_of_the_card_reproduce(busi, tmp_path):
    card = json.loads(BASE_CARD.read_text())
    samples = discover(busi, ROOT / "models" / "cmunext-s-busi.val.txt")
    assert len(samples) == card["n_val"] == 90
    summary = run_job(EdgeSegmenter("cmunext-base-busi"), samples, tmp_path, write_overlays=False).summary()
    assert abs(summary["mean_dice"] - card["val_dice"]) < 1e-4
    assert abs(summary["mean_iou"] - card["val_iou"]) < 1e-4


def test_an_install_without_models_says_so_and_asks_for_the_artifact(monkeypatch, tmp_path, capsys):
    """A device bundle's environment ships no model: without --weights the CLIs said
    "'cmunext-s-busi' is neither a file nor a shipped model (shipped: none)"."""
    import shutil
    from cmunext_edge import resources
    from cmunext_edge.cli.predict import main as predict_main
    from cmunext_edge.resources import SAMPLES_DIR

    def no_models():
        raise FileNotFoundError("no models/")
    monkeypatch.setattr(resources, "models_dir", no_models)
    with pytest.raises(FileNotFoundError, match="this install ships no model .* pass the artifact to run"):
        resources.resolve_weights(None)
    (tmp_path / "in").mkdir()
    shutil.copy(next((SAMPLES_DIR / "images").glob("*.png")), tmp_path / "in")
    assert predict_main([str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ships no model" in err and "--weights FILE" in err and "shipped: none" not in err, err
