"""Multi-class prediction (issue 16 item 8): cmunext-predict with a 3-class model writes per-class
masks, a colour overlay (one palette colour per class), per-class scores in scores.csv, the printed
summary and --summary-json, identically for both ground-truth layouts; a 3-class video accounts for
every frame and writes the colour overlay video. One-class outputs stay as they were."""
import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmunext_edge.cli.predict import main
from cmunext_edge.data.discovery import discover
from cmunext_edge.data.groundtruth import load_truth
from cmunext_edge.core.metrics import class_scores, format_class_dice
from cmunext_edge.predict.overlay import ALPHA, PALETTE_RGB, class_color, overlay
from cmunext_edge.core.preprocess import load_image, to_bgr_uint8

C = 3
ONE_CLASS_KEYS = {"n_images", "mean_dice", "mean_iou", "skipped", "stopped", "mean_dice_original",
                  "mean_iou_original"}


def _predict(source, checkpoint, out: Path, *extra) -> tuple[int, dict, str]:
    summary = out.parent / f"{out.name}.json"
    rc = main([str(source), "--weights", str(checkpoint), "--out", str(out), "--summary-json", str(summary),
               *extra])
    return rc, json.loads(summary.read_text()), out


@pytest.fixture(scope="module")
def predicted(three_class, tmp_path_factory):
    """cmunext-predict on the 3-class set in both layouts: {layout: (rc, summary, out, stdout)}."""
    root, runs = tmp_path_factory.mktemp("mcpredict"), {}
    for layout in ("masks", "labels"):
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            runs[layout] = (*_predict(three_class[layout], three_class["checkpoint"], root / layout),
                            printed.getvalue())
    return runs


def _rows(out: Path) -> list[dict]:
    with open(out / "scores.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _masks(out: Path, name: str) -> np.ndarray:
    return np.stack([cv2.imread(str(out / "masks" / f"{name}_class{k}.png"), cv2.IMREAD_GRAYSCALE) > 127
                     for k in range(C)])


def test_palette_is_fixed_distinct_and_wraps():
    colors = [class_color(k) for k in range(len(PALETTE_RGB))]
    assert len(set(colors)) == len(colors) and (0, 0, 0) not in colors
    assert class_color(len(PALETTE_RGB) + 2) == class_color(2)
    assert class_color(0) == (0, 159, 230)          # orange, BGR


@pytest.mark.parametrize("layout", ["masks", "labels"])
def test_three_masks_per_image_and_per_class_scores_from_them(predicted, three_class, layout):
    rc, summary, out, _ = predicted[layout]
    assert rc == 0 and summary["n_images"] == 16 and summary["num_classes"] == C
    rows, samples = _rows(out), {s.name: s for s in discover(three_class[layout])}
    assert len(rows) == 16
    assert [c for c in rows[0] if c.startswith("dice_class")] == [f"dice_class{k}" for k in range(C)]
    assert not any((out / "masks" / f"{r['name']}.png").exists() for r in rows)
    for row in rows:
        pred = _masks(out, row["name"])
        scores = class_scores(pred, load_truth(samples[row["name"]], C))
        assert float(row["dice_original"]) == pytest.approx(scores["dice"], abs=1e-12)
        for k in range(C):
            assert float(row[f"dice_original_class{k}"]) == pytest.approx(scores["class_dice"][k], abs=1e-12)
            assert float(row[f"iou_original_class{k}"]) == pytest.approx(scores["class_iou"][k], abs=1e-12)
            assert 0.0 <= float(row[f"dice_class{k}"]) <= 1.0
    for key, column in (("per_class_dice", "dice_class"), ("per_class_iou_original", "iou_original_class")):
        assert summary[key] == pytest.approx([np.mean([float(r[f"{column}{k}"]) for r in rows]) for k in range(C)])
    assert len(set(round(d, 6) for d in summary["per_class_dice"])) == C      # classes scored apart


def test_both_layouts_give_identical_figures(predicted):
    (_, a, out_a), (_, b, out_b) = predicted["masks"][:3], predicted["labels"][:3]
    assert {k: v for k, v in a.items() if k != "skipped"} == {k: v for k, v in b.items() if k != "skipped"}
    drop = ("image", "infer_ms")
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in _rows(out_a)]
    assert rows_a == [{k: v for k, v in r.items() if k not in drop} for r in _rows(out_b)]


def test_colour_overlay_carries_each_class_colour(predicted, three_class):
    _, _, out, _ = predicted["masks"]
    assert (out / "legend.png").is_file()
    outlined, tinted_px = np.zeros(C, int), np.zeros(C, int)
    for image in sorted((three_class["masks"] / "images").glob("*.png"))[:4]:
        bgr = to_bgr_uint8(load_image(image))
        pred = _masks(out, image.stem)
        over = cv2.imread(str(out / "overlays" / f"{image.stem}.png"))
        assert (over[~pred.any(axis=0)] == bgr[~pred.any(axis=0)]).all()      # no class: untouched
        expected = bgr.copy()       # the documented tint: alpha blend per class, compounding in class order
        for k in range(C):
            expected[pred[k]] = (expected[pred[k]] * (1 - ALPHA) + np.asarray(class_color(k)) * ALPHA).astype(np.uint8)
        is_tint = (over == expected).all(axis=2)
        is_outline = [(over == class_color(k)).all(axis=2) & pred[k] for k in range(C)]
        assert (is_tint | np.any(is_outline, axis=0))[pred.any(axis=0)].all()
        for k in range(C):
            tinted_px[k] += (is_tint & pred[k]).sum()
            outlined[k] += is_outline[k].sum()
    assert (outlined > 0).all() and (tinted_px > 0).all()    # every class's tint and outline are seen


def test_printed_summary_shows_per_class_dice(predicted):
    _, summary, _, text = predicted["masks"]
    assert f"mean Dice {summary['mean_dice']:.4f}{format_class_dice(summary['per_class_dice'])}" in text
    assert format_class_dice(summary["per_class_dice_original"]) in text
    assert "overlay colours: class 0 orange, class 1 sky blue, class 2 bluish green" in text


def test_one_class_outputs_are_unchanged(trained, tmp_path):
    ds = tmp_path / "ds"
    src = Path(__file__).resolve().parents[1] / "cmunext_edge" / "samples" / "busi"
    shutil.copytree(src, ds)
    rc, summary, out = _predict(ds, trained, tmp_path / "o")
    assert rc == 0 and set(summary) == ONE_CLASS_KEYS
    rows = _rows(out)
    assert list(rows[0]) == ["name", "image", "height", "width", "mask_fraction", "infer_ms", "dice", "iou",
                             "dice_original", "iou_original", "truth_problem"]   # the last: why no Dice
    name = rows[0]["name"]
    mask = cv2.imread(str(out / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 127
    bgr = to_bgr_uint8(load_image(rows[0]["image"]))
    assert (cv2.imread(str(out / "overlays" / f"{name}.png")) == overlay(bgr, mask)).all()
    assert ((overlay(bgr, mask) == (0, 255, 0)).all(axis=2) & mask).any()      # green outline
    assert not (out / "legend.png").exists()


def test_one_class_model_on_three_class_data_alike_in_both_layouts_and_says_so(trained, three_class, tmp_path):
    """A 1-class model on 3-class data is scored on class 0 in both layouts, and the run says so (it
    was silent for masks/ and refused every label image with a class above 1: exit 1)."""
    runs = {}
    for layout in ("masks", "labels"):
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            runs[layout] = (*_predict(three_class[layout], trained, tmp_path / layout), printed.getvalue())
    for rc, summary, _, printed in runs.values():
        assert rc == 0 and summary["n_images"] == 16 and "truth_not_used" not in summary
        assert "the ground truth holds 3 classes" in printed and "scored on class 0 only" in printed
    assert runs["masks"][1]["mean_dice"] == runs["labels"][1]["mean_dice"]


def test_model_with_more_classes_than_mask_folders_is_refused(three_class, tmp_path, capsys):
    ds = tmp_path / "one"
    shutil.copytree(three_class["masks"] / "images", ds / "images")
    shutil.copytree(three_class["masks"] / "masks" / "0", ds / "masks" / "0")
    assert main([str(ds), "--weights", str(three_class["checkpoint"]), "--out", str(tmp_path / "o")]) == 2
    assert "the model has 3 classes" in capsys.readouterr().err


def _clip(path: Path, n: int, size=(160, 128)) -> list[np.ndarray]:
    images = sorted((Path(__file__).resolve().parents[1] / "cmunext_edge" / "samples" / "busi" / "images").glob("*.png"))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    assert w.isOpened()
    for i in range(n):
        w.write(cv2.resize(cv2.imread(str(images[i])), size))
    w.release()
    return _frames(path)


def _frames(path: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames


def test_three_class_video_accounts_for_every_frame(three_class, tmp_path):
    n = 6
    frames = _clip(tmp_path / "clip.mp4", n)
    out = tmp_path / "v"
    assert main([str(tmp_path / "clip.mp4"), "--weights", str(three_class["checkpoint"]), "--out", str(out)]) == 0
    summary = json.loads((out / "video_summary.json").read_text())
    assert summary["frames_decoded"] == summary["frames_written"] == n == len(frames)
    assert len(summary["mean_foreground_per_class"]) == C and (out / "legend.png").is_file()
    written = sorted(p.name for p in (out / "masks").iterdir())
    assert written == [f"{i:06d}_class{k}.png" for i in range(n) for k in range(C)]
    video = _frames(out / "overlay.mp4")
    assert len(video) == n
    for i in (0, n - 1):        # the overlay video shows the colour overlay of the written masks
        pred = np.stack([cv2.imread(str(out / "masks" / f"{i:06d}_class{k}.png"), 0) > 127 for k in range(C)], axis=2)
        region = pred.any(axis=2)
        colour = np.abs(video[i].astype(int) - overlay(frames[i], pred)).mean(axis=2)[region].mean()
        red = np.abs(video[i].astype(int) - overlay(frames[i], region)).mean(axis=2)[region].mean()
        assert colour < 8 and red > 2 * colour


def test_three_class_mask_videos(three_class, tmp_path):
    n = 4
    _clip(tmp_path / "clip.mp4", n)
    out = tmp_path / "v"
    assert main([str(tmp_path / "clip.mp4"), "--weights", str(three_class["checkpoint"]), "--out", str(out),
                 "--mask-video", "--no-overlay"]) == 0
    summary = json.loads((out / "video_summary.json").read_text())
    assert summary["frames_written"] == n and sorted(summary["outputs"]) == [f"mask_class{k}" for k in range(C)]
    for k in range(C):
        assert len(_frames(out / f"mask_class{k}.mp4")) == n
    assert not (out / "masks").exists() and not (out / "legend.png").exists()


@pytest.mark.parametrize("layout", ["masks", "labels"])
def test_ray_rows_carry_multiclass_truth(three_class, layout):
    from cmunext_edge.scale.ray_batch import _item, _sample
    for sample in discover(three_class[layout]):
        back = _sample(_item(sample))
        assert back == sample and (load_truth(back, C) == load_truth(sample, C)).all()


def test_ray_engine_scores_every_class_like_the_local_job(predicted, three_class, tmp_path):
    ray = pytest.importorskip("ray")
    _, local, _, _ = predicted["labels"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        rc, summary, out = _predict(three_class["labels"], three_class["checkpoint"], tmp_path / "ray",
                                    "--engine", "ray", "--quiet")
    finally:
        ray.shutdown()
    assert rc == 0 and summary["num_classes"] == C
    for key in ("per_class_dice", "per_class_iou", "per_class_dice_original", "mean_dice"):
        assert summary[key] == pytest.approx(local[key], abs=1e-6)
    assert len(list((out / "masks").iterdir())) == 16 * C


def test_serve_answer_has_per_class_masks(three_class):
    from cmunext_edge.scale.serve import class_mask_pngs, describe_result, mask_png
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    image = sorted((three_class["masks"] / "images").glob("*.png"))[0]
    seg = EdgeSegmenter(three_class["checkpoint"]).segment(image)
    info = describe_result(seg, {}, 0.0, 0.0)
    decoded = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_GRAYSCALE) > 127
               for p in class_mask_pngs(seg)]
    assert len(decoded) == C and all((d == seg.mask[..., k]).all() for k, d in enumerate(decoded))
    assert [c["area_px"] for c in info["classes"]] == [int(seg.mask[..., k].sum()) for k in range(C)]
    union = cv2.imdecode(np.frombuffer(mask_png(seg), np.uint8), cv2.IMREAD_GRAYSCALE) > 127
    assert (union == seg.mask.any(axis=2)).all() and info["mask_area_px"] == int(union.sum())
