import csv
import io
import json
import shutil

import cv2
import numpy as np
import pytest

from cmunext_edge.cli.predict import main


def _dataset(tmp_path, busi, n=3):
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "masks" / "0").mkdir(parents=True)
    names = sorted(p.stem for p in (busi / "images").glob("*.png"))[:n]
    for name in names:
        shutil.copy(busi / "images" / f"{name}.png", ds / "images")
        shutil.copy(busi / "masks" / "0" / f"{name}.png", ds / "masks" / "0")
    return ds, names


def test_dataset_with_a_broken_file_is_skipped_and_reported(tmp_path, busi, ckpt_s, capsys):
    ds, names = _dataset(tmp_path, busi)
    (ds / "images" / "broken.png").write_bytes(b"\x89PNG truncated")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    rc = main([str(ds), "--weights", str(ckpt_s), "--out", str(out), "--summary-json", str(summary)])
    assert rc == 1
    data = json.loads(summary.read_text())
    assert data["n_images"] == 3 and [s["path"].endswith("broken.png") for s in data["skipped"]] == [True]
    dice, iou = [], []
    for name in names:
        mask = cv2.imread(str(out / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        image = cv2.imread(str(ds / "images" / f"{name}.png"))
        assert mask.shape == image.shape[:2] and set(mask.ravel()) <= {0, 255}
        assert (out / "overlays" / f"{name}.png").is_file()
        # the written mask scored against the ground truth file at its own size, by the official formula
        truth = cv2.imread(str(ds / "masks" / "0" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 127
        inter, union = np.logical_and(mask > 0, truth).sum(), np.logical_or(mask > 0, truth).sum()
        iou.append((inter + 1e-5) / (union + 1e-5))
        dice.append(2 * iou[-1] / (1 + iou[-1]))
    assert data["mean_dice_original"] == pytest.approx(np.mean(dice), abs=1e-9)
    assert data["mean_iou_original"] == pytest.approx(np.mean(iou), abs=1e-9)
    rows = list(csv.DictReader(io.StringIO((out / "scores.csv").read_text())))
    assert [r["name"] for r in rows] == names
    assert data["mean_dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]), abs=1e-12)
    assert data["mean_iou"] == pytest.approx(np.mean([float(r["iou"]) for r in rows]), abs=1e-12)
    assert "mean Dice" in capsys.readouterr().out


def test_folder_without_masks_has_null_scores_and_exit_0(tmp_path, busi, ckpt_s):
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copy(busi / "images" / "benign (10).png", folder)
    summary = tmp_path / "s.json"
    assert main([str(folder), "--weights", str(ckpt_s), "--out", str(tmp_path / "o"),
                 "--summary-json", str(summary)]) == 0
    data = json.loads(summary.read_text())
    assert data == {**data, "n_images": 1, "mean_dice": None, "mean_iou": None, "skipped": []}


def test_bad_weights_and_missing_source_exit_2(tmp_path, busi, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    assert main([str(busi / "images" / "benign (10).png"), "--weights", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1, err
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"cmunext-predict: error: {tmp_path / 'missing'}: no such file or folder\n", err
    assert not (tmp_path / "o").exists()


def test_parallel_workers_give_the_same_masks_in_order(tmp_path, busi, ckpt_s, capsys):
    ds, names = _dataset(tmp_path, busi, n=5)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    capsys.readouterr()
    assert main([str(ds), "--weights", str(ckpt_s), "--out", str(tmp_path / "o1"), "--batch-size", "2",
                 "--summary-json", str(one), "--quiet"]) == 0
    assert "segmenting [" not in capsys.readouterr().err              # --quiet: no progress bar either
    assert main([str(ds), "--weights", str(ckpt_s), "--out", str(tmp_path / "o2"), "--batch-size", "2",
                 "--workers", "2", "--no-overlay", "--summary-json", str(two), "--quiet"]) == 0
    assert json.loads(one.read_text())["mean_dice"] == json.loads(two.read_text())["mean_dice"]
    rows1 = (tmp_path / "o1" / "scores.csv").read_text().splitlines()
    rows2 = (tmp_path / "o2" / "scores.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows1] == [r.split(",")[0] for r in rows2]
    for name in names:
        a = cv2.imread(str(tmp_path / "o1" / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        b = cv2.imread(str(tmp_path / "o2" / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        assert (a != b).mean() < 1e-3
    assert not (tmp_path / "o2" / "overlays").exists()
