"""Multi-class ground truth: per-class mask folders (the official layout) and label images read the
same truth; per-class scores; clear errors for gaps, both layouts, missing masks, bad labels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cmunext_edge.data.discovery import discover
from cmunext_edge.data.groundtruth import classes_note, dataset_classes, load_truth, truth_description
from cmunext_edge.core.metrics import class_scores, format_class_dice, summarize_scores
from cmunext_edge.data.multiclass_sample import derived_classes, make_three_class_dataset
from cmunext_edge.core.preprocess import ImageReadError


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc")
    return {lay: make_three_class_dataset(root / lay, lay, limit=6) for lay in ("masks", "labels")}


def test_both_layouts_read_the_same_truth(datasets):
    folders, labels = discover(datasets["masks"]), discover(datasets["labels"])
    assert [s.name for s in folders] == [s.name for s in labels] and len(folders) == 6
    assert dataset_classes(folders) == 3 and dataset_classes(labels) == 3
    assert "masks/2/" in truth_description(folders[0]) and "labels/" in truth_description(labels[0])
    for a, b in zip(folders, labels):
        ta, tb = load_truth(a, 3, (64, 64)), load_truth(b, 3, (64, 64))
        assert ta.shape == (3, 64, 64) and ta.dtype == bool
        assert np.array_equal(ta, tb)
        assert not (ta.sum(0) > 1).any(), "derived classes never overlap"


def test_derived_classes_follow_the_name():
    lesion = np.zeros((50, 50), bool)
    lesion[20:30, 20:30] = True
    benign, malignant = derived_classes("benign (1)", lesion), derived_classes("malignant (7)", lesion)
    assert benign[0].sum() == 100 and benign[1].sum() == 0
    assert malignant[1].sum() == 100 and malignant[0].sum() == 0
    assert benign[2].any() and not (benign[2] & lesion).any()


def test_fewer_model_classes_score_the_first_ones(datasets):
    s = discover(datasets["masks"])[0]
    assert np.array_equal(load_truth(s, 1), load_truth(s, 3)[:1])


def test_more_model_classes_than_folders_is_an_error(datasets):
    with pytest.raises(ValueError, match="4 classes but the dataset has mask folders for 3"):
        load_truth(discover(datasets["masks"])[0], 4)


def test_fewer_model_classes_read_alike_in_both_layouts(datasets):
    """A model with fewer classes than the data is scored on the first ones in either layout (label
    values above its classes are the classes left out), as training with a smaller --num-classes
    reads them; before, label images were an error per image while masks/ scored class 0."""
    for a, b in zip(discover(datasets["masks"]), discover(datasets["labels"])):
        for n in (1, 2):
            assert np.array_equal(load_truth(b, n), load_truth(a, n))
            assert np.array_equal(load_truth(b, n), load_truth(b, 3)[:n])
    assert any(load_truth(b, 3)[1:].any() for b in discover(datasets["labels"]))   # something was left out


def test_classes_note_names_what_a_smaller_model_is_scored_on(datasets):
    for layout in ("masks", "labels"):
        samples = discover(datasets[layout])
        note = classes_note(samples, 1, "DS")
        assert note.startswith("DS: the ground truth holds 3 classes") and "scored on class 0 only" in note
        assert "classes 0 ... 1 only" in classes_note(samples, 2, "DS")
        assert classes_note(samples, 3, "DS") is None


def test_missing_class_mask_is_named(tmp_path, datasets):
    import shutil
    d = shutil.copytree(datasets["masks"], tmp_path / "d")
    victim = sorted((d / "masks" / "1").iterdir())[0]
    victim.unlink()
    s = next(x for x in discover(d) if x.name == victim.stem)
    with pytest.raises(ImageReadError, match=r"no mask in masks/1/"):
        load_truth(s, 3)


def test_gap_in_class_folders_and_both_layouts_are_refused(tmp_path, datasets):
    import shutil
    d = shutil.copytree(datasets["masks"], tmp_path / "gap")
    shutil.rmtree(d / "masks" / "1")
    with pytest.raises(ValueError, match="without gaps"):
        discover(d)
    both = shutil.copytree(datasets["masks"], tmp_path / "both")
    shutil.copytree(datasets["labels"] / "labels", both / "labels")
    with pytest.raises(ValueError, match="both masks/ and labels/"):
        discover(both)


def test_colour_label_image_is_refused(tmp_path, datasets):
    import shutil
    d = shutil.copytree(datasets["labels"], tmp_path / "rgb")
    victim = sorted((d / "labels").iterdir())[0]
    cv2.imwrite(str(victim), np.zeros((8, 8, 3), np.uint8))
    s = next(x for x in discover(d) if x.name == victim.stem)
    with pytest.raises(ImageReadError, match="single-channel"):
        load_truth(s, 3)


def test_class_scores_pooled_and_per_class():
    target = np.zeros((2, 4, 4), bool)
    target[0, :2] = True            # 8 pixels of class 0
    target[1, 2:] = True            # 8 pixels of class 1
    pred = target.copy()
    pred[1] = False                 # class 1 missed entirely
    s = class_scores(pred, target)
    assert s["class_dice"][0] == pytest.approx(1.0)
    assert s["class_dice"][1] == pytest.approx(0.0, abs=1e-5)
    assert s["iou"] == pytest.approx(0.5, abs=1e-5)         # 8 of 16 pixels over both channels
    summary = summarize_scores([s, class_scores(target, target)])
    assert summary["per_class_dice"] == pytest.approx([1.0, 0.5], abs=1e-5)
    assert format_class_dice(summary["per_class_dice"]) == " (per class 1.0000 / 0.5000)"
    assert format_class_dice([0.9]) == ""
    with pytest.raises(ValueError, match="must both be C x H x W"):
        class_scores(pred[0], target[0])


def test_single_class_dataset_unchanged():
    from cmunext_edge.resources import SAMPLES_DIR
    samples = discover(SAMPLES_DIR)
    assert all(s.class_masks == (s.mask,) and not s.label_image for s in samples)
    assert dataset_classes(samples) == 1
