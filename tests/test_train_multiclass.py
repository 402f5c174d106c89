"""Multi-class training (issue 16, item 8): --num-classes, both ground-truth layouts, per-class
validation Dice, --init across class counts, resume. Real runs on the 16-image derived 3-class set
(conftest `three_class`), 64x64, a few training images, one epoch."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cmunext_edge.cli.info import main as info_main        # noqa: E402
from cmunext_edge.cli.train import main as train_main      # noqa: E402
from cmunext_edge.data.discovery import discover                     # noqa: E402
from cmunext_edge.train.recipe import TrainConfig, _augment, train  # noqa: E402
from cmunext_edge.train.state import class_truth, load_init, resolve_classes  # noqa: E402
from cmunext_edge.checkpoints.inspect import read_safetensors_header  # noqa: E402
from cmunext_edge.checkpoints.weights import load_checkpoint  # noqa: E402

FAST = ["--epochs", "1", "--img-size", "64", "--batch-size", "2", "--max-train-images", "4"]
HEAD = "--init: 1 class -> 3 classes: the output head is initialised fresh, all other weights loaded"


def _history(out):
    lines = (out / "history.csv").read_text().splitlines()
    return lines[0].split(","), [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]


def test_three_classes_train_from_the_shipped_model_and_resume(three_class, trained, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([str(three_class["masks"]), "--out", str(out), "--init", str(trained), *FAST]) == 0
    printed = capsys.readouterr().out
    assert HEAD in printed
    epoch_line = next(line for line in printed.splitlines() if line.startswith("epoch 1/1 loss"))
    assert epoch_line.count(" / ") == 2 and "(per class " in epoch_line
    assert printed.splitlines()[-1].startswith("best val Dice") and "(per class " in printed.splitlines()[-1]
    ck = load_checkpoint(out / "best.safetensors")
    assert ck.info.num_classes == 3 and ck.state_dict["Conv_1x1.weight"].shape[0] == 3
    assert load_checkpoint(out / "best.pth").info.num_classes == 3
    meta = read_safetensors_header(out / "best.safetensors")[1]
    per_class = json.loads(meta["per_class_dice"])
    keys, rows = _history(out)
    assert keys[-3:] == ["val_dice_class0", "val_dice_class1", "val_dice_class2"]
    assert [float(rows[0][k]) for k in keys[-3:]] == pytest.approx(per_class)
    assert info_main([str(out / "best.safetensors")]) == 0
    assert any(line.split() == ["classes", "3"] for line in capsys.readouterr().out.splitlines())

    again = [str(three_class["masks"]), "--out", str(out), *FAST[2:], "--epochs", "2"]
    assert train_main(again) == 0                                       # resumes the 3-class run
    assert "1 of 2 epochs done" in capsys.readouterr().out
    assert len(_history(out)[1]) == 2
    assert train_main([*again, "--num-classes", "2"]) == 2              # another class count: refused
    err = capsys.readouterr().err
    assert "this run trains 3 class(es), not 2" in err and "--num-classes 3" in err


def test_label_images_train_three_classes(three_class, tmp_path):
    logs = []
    cfg = TrainConfig(data=str(three_class["labels"]), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                      img_size=64, max_train_images=4)
    state = train(cfg, log=logs.append)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["val"]) == 3 and len(split["train"]) == 4          # 16 labelled images: 13 + 3
    assert len(state["best_per_class_dice"]) == 3
    assert any("3 classes" in line for line in logs) and not any("--init" in line for line in logs)
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").info.num_classes == 3
    assert _history(tmp_path / "run")[0][-1] == "val_dice_class2"


@pytest.mark.parametrize("layout", ["masks", "labels"])
def test_more_classes_than_the_dataset_exit_2(three_class, tmp_path, capsys, layout):
    out = tmp_path / "run"
    assert train_main([str(three_class[layout]), "--out", str(out), "--num-classes", "4", *FAST]) == 2
    err = capsys.readouterr().err
    assert "--num-classes 4, but the dataset's ground truth holds 3 class(es)" in err
    assert not (out / "split.json").exists()


@pytest.mark.parametrize("layout", ["masks", "labels"])
def test_fewer_classes_train_the_first_ones(three_class, layout):
    samples = discover(three_class[layout])
    logs = []
    assert resolve_classes(2, samples, logs.append) == (2, 3)
    assert "training the first 2 of the dataset's 3 classes" in logs[0]
    assert resolve_classes(0, samples, logs.append) == (3, 3) and len(logs) == 1
    s = samples[0]
    full = class_truth(s, 3, 3, (64, 64))
    assert full.shape == (3, 64, 64) and full.dtype == np.uint8
    assert np.array_equal(class_truth(s, 2, 3, (64, 64)), full[:2])


def test_init_across_class_counts_keeps_the_body_and_refuses_another_variant(trained):
    from cmunext_edge.core.model import build_model
    shipped = load_checkpoint(trained).state_dict
    model, logs = build_model("cmunext-s", num_classes=3), []
    load_init(model, str(trained), "cmunext-s", 3, logs.append)
    assert logs == [HEAD]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in shipped.items() if not k.startswith("Conv_1x1"))
    assert state["Conv_1x1.weight"].shape[0] == 3
    with pytest.raises(ValueError, match="is a cmunext-s checkpoint but this run trains cmunext-l"):
        load_init(build_model("cmunext-l", num_classes=3), str(trained), "cmunext-l", 3, logs.append)


def test_augmentation_moves_every_class_mask_with_the_image():
    rng_img = np.random.default_rng(0)
    img = rng_img.integers(0, 255, (8, 6, 3), dtype=np.uint8)   # non-square: a wrong axis shows
    mask = img.transpose(2, 0, 1).copy()                         # mask k = image channel k
    seen = set()
    for seed in range(40):
        a_img, a_mask = _augment(np.random.default_rng(seed), img, mask)
        assert np.array_equal(a_img.transpose(2, 0, 1), a_mask)
        one_img, one_mask = _augment(np.random.default_rng(seed), img, mask[:1])
        assert np.array_equal(one_mask[0], a_img[..., 0])           # one class: the same transform
        seen.add(a_img.tobytes())
    assert len(seen) >= 6                                            # rotations and flips happened


def test_help_names_both_multiclass_layouts(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--num-classes" in text and "masks/0/, masks/1/, ... masks/<N-1>/" in text
    assert "labels/<name>.png" in text and "your_3class_dataset/" in text
