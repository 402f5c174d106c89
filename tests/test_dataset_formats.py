"""Reliability, round six (datasets): ground truth that the official reading would silently turn into
background, names that cannot be told apart, and layouts that gave "no ground truth" without a word.

Found by an audit that fed predict, train, export and bench variants of the bundled samples: 0/1,
colour, palette, alpha-only and 16-bit 0/1 masks scored Dice 0 (and trained on empty masks, "best
val Dice 1.0"); dup.png and dup.jpg shared dup's mask; 0/255 masks in labels/ trained 255 classes; a
half-size mask made predict drop the image; macOS ._name files were read as images."""
import shutil

import cv2
import numpy as np
import pytest

from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.cli import train as train_cli
from cmunext_edge.core.preprocess import load_image, load_mask, to_bgr_uint8
from cmunext_edge.resources import SAMPLES_DIR

from test_reliability import one_error_line, run_cli

NAMES = sorted(p.stem for p in (SAMPLES_DIR / "images").glob("*.png"))[:3]


def _dataset(tmp_path, mask=lambda m: m, name="ds"):
    """An official-layout copy of 3 bundled samples with each mask rewritten by `mask` (an array,
    or a callable writing the file itself: (array, path) -> None)."""
    data = tmp_path / name
    (data / "images").mkdir(parents=True)
    (data / "masks" / "0").mkdir(parents=True)
    for n in NAMES:
        shutil.copy(SAMPLES_DIR / "images" / f"{n}.png", data / "images" / f"{n}.png")
        m = cv2.imread(str(SAMPLES_DIR / "masks" / "0" / f"{n}.png"), cv2.IMREAD_GRAYSCALE)
        target = data / "masks" / "0" / f"{n}.png"
        out = mask(m)
        if out is not None:
            cv2.imwrite(str(target), out)
    return data


def _rgba_alpha_only(m):
    return np.dstack([np.zeros_like(m)] * 3 + [m])


def _red(m):
    out = np.zeros(m.shape + (3,), np.uint8)
    out[m > 127] = (0, 0, 255)
    return out


@pytest.mark.parametrize("mask,says", [
    (lambda m: (m > 127).astype(np.uint8), "mask values are 0..1, none above 127"),
    (_red, "a colour or palette mask"),
    (lambda m: (m > 127).astype(np.uint16), "16-bit mask with values 0..1"),
    (_rgba_alpha_only, "drawn only in the alpha channel"),
])
def test_misencoded_masks_are_named_and_the_images_still_segmented(mask, says, tmp_path, capsys):
    data = _dataset(tmp_path, mask)
    rc, out, err = run_cli(predict_cli.main, [data, "--out", tmp_path / "o", "--no-overlay"], capsys)
    assert rc == 1 and err.count("ground truth not used:") == 3 and says in err, err
    assert "3 images segmented" in out and "mean Dice" not in out        # no Dice 0.0000 from empty masks
    assert len(list((tmp_path / "o" / "masks").glob("*.png"))) == 3


def test_well_encoded_masks_of_every_kind_still_read_the_same(tmp_path):
    m = cv2.imread(str(SAMPLES_DIR / "masks" / "0" / f"{NAMES[0]}.png"), cv2.IMREAD_GRAYSCALE)
    ref = load_mask(SAMPLES_DIR / "masks" / "0" / f"{NAMES[0]}.png")
    for name, arr in (("white_rgba.png", np.dstack([m, m, m, np.full_like(m, 255)])),
                      ("m16.png", (m > 127).astype(np.uint16) * 65535), ("jpeg.jpg", m),
                      ("empty.png", np.zeros_like(m))):
        cv2.imwrite(str(tmp_path / name), arr)
        got = load_mask(tmp_path / name)
        assert (not got.any()) if name == "empty.png" else (got ^ ref).mean() < 0.01, name


def test_training_on_01_masks_refuses_instead_of_learning_background(tmp_path, capsys):
    pytest.importorskip("torch")
    data = _dataset(tmp_path, lambda m: (m > 127).astype(np.uint8))
    rc, out, err = run_cli(train_cli.main, [data, "--out", tmp_path / "r", "--epochs", "1", "--img-size", "64",
                                            "--val-fraction", "0.34"], capsys)
    assert rc == 2 and "multiply it by 255" in out and "no readable image is left" in err, (out, err)


def test_images_sharing_a_name_are_refused_in_a_dataset(tmp_path, capsys):
    data = _dataset(tmp_path)
    cv2.imwrite(str(data / "images" / f"{NAMES[0]}.jpg"), cv2.imread(str(data / "images" / f"{NAMES[1]}.png")))
    rc, _, err = run_cli(predict_cli.main, [data, "--out", tmp_path / "o"], capsys)
    assert rc == 2 and f"are both images named {NAMES[0]!r}" in one_error_line(err, "cmunext-predict"), err


def test_two_masks_for_one_image_are_refused(tmp_path, capsys):
    data = _dataset(tmp_path)
    cv2.imwrite(str(data / "masks" / "0" / f"{NAMES[0]}.jpg"), np.zeros((8, 8), np.uint8))
    rc, _, err = run_cli(predict_cli.main, [data, "--out", tmp_path / "o"], capsys)
    assert rc == 2 and f"are both masks of {NAMES[0]!r}" in one_error_line(err, "cmunext-predict"), err


def test_binary_masks_in_labels_are_refused_by_training(tmp_path, capsys):
    pytest.importorskip("torch")
    data = _dataset(tmp_path)
    (data / "masks" / "0").rename(data / "labels")
    shutil.rmtree(data / "masks")
    rc, _, err = run_cli(train_cli.main, [data, "--out", tmp_path / "r", "--epochs", "1", "--img-size", "64"], capsys)
    assert rc == 2 and "holds only 0 and 255" in one_error_line(err, "cmunext-train"), err
    assert not (tmp_path / "r").exists()


def test_a_mask_of_another_size_is_refused_alike_everywhere(tmp_path, capsys):
    half = lambda m: cv2.resize(m, (m.shape[1] // 2, m.shape[0] // 2), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    data = _dataset(tmp_path, half)
    rc, out, err = run_cli(predict_cli.main, [data, "--out", tmp_path / "o", "--no-overlay"], capsys)
    assert rc == 1 and "3 images segmented" in out and err.count("is it the mask of this image?") == 3, err
    from cmunext_edge.export.calibration import CalibrationError, make_calibration_set
    from cmunext_edge.core.preprocess import get_preset
    with pytest.raises(CalibrationError, match="is it the mask of this image"):
        make_calibration_set(data, get_preset("official"))


def test_hidden_files_are_not_inputs(tmp_path, capsys):
    data = _dataset(tmp_path)
    (data / "images" / f"._{NAMES[0]}.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    shutil.copy(data / "images" / f"{NAMES[0]}.png", data / "images" / ".hidden.png")
    rc, out, err = run_cli(predict_cli.main, [data, "--out", tmp_path / "o", "--no-overlay"], capsys)
    assert rc == 0 and "3 images segmented, 0 skipped" in out, (out, err)


@pytest.mark.parametrize("layout,says", [
    ("flat", "holds 3 mask file(s) directly"),
    ("busi_names", "mask names end in '_mask'"),
    ("orphans", "1 mask(s) match no image"),
    ("empty", "is empty: no ground truth"),
])
def test_ground_truth_layout_problems_are_named(layout, says, tmp_path, capsys):
    data = _dataset(tmp_path)
    masks = data / "masks" / "0"
    if layout == "flat":
        for p in masks.iterdir():
            p.rename(data / "masks" / p.name)
        masks.rmdir()
    elif layout == "busi_names":
        for p in masks.iterdir():
            p.rename(p.with_name(f"{p.stem}_mask.png"))
    elif layout == "orphans":
        shutil.copy(next(masks.iterdir()), masks / "no such image.png")
    else:
        for p in masks.iterdir():
            p.unlink()
    rc, out, err = run_cli(predict_cli.main, [data, "--out", tmp_path / "o", "--no-overlay"], capsys)
    assert rc == 0 and "note: " in out and says in out, (out, err)
    if layout != "orphans":                              # no pair at all: training says why, in its one line
        pytest.importorskip("torch")
        rc, _, err = run_cli(train_cli.main, [data, "--out", tmp_path / "r", "--epochs", "1"], capsys)
        assert rc == 2 and says in one_error_line(err, "cmunext-train"), err


def test_16bit_tiff_is_read_as_the_official_cv2_imread_reads_it(tmp_path):
    img16 = np.random.default_rng(0).integers(0, 65536, (30, 90, 3), dtype=np.uint16)
    for name in ("a.tiff", "a.png"):
        cv2.imwrite(str(tmp_path / name), img16)
        assert np.array_equal(to_bgr_uint8(load_image(tmp_path / name)), cv2.imread(str(tmp_path / name))), name
        from cmunext_edge.scale.serve import decode_body               # an HTTP body: the same pixels
        assert np.array_equal(decode_body((tmp_path / name).read_bytes()), cv2.imread(str(tmp_path / name))), name


def test_a_split_naming_files_with_their_extension_says_to_drop_it(tmp_path):
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.resources import SAMPLES_DIR
    name = sorted((SAMPLES_DIR / "images").glob("*.png"))[0].name
    names = tmp_path / "val.txt"
    names.write_text(name + "\n")
    with pytest.raises(ValueError, match=r"1 name\(s\) have no image .*give names without their file extension"):
        discover(SAMPLES_DIR, names)


def test_a_names_file_saved_with_a_byte_order_mark_reads_its_first_name(tmp_path):
    """A names file (or split.json) saved as 'UTF-8 with BOM' (Windows Notepad), CRLF line ends: its
    first name was read as '\\ufeffname', so export refused it ("1 name(s) have no image") and
    cmunext-train --val-list refused it ("names without an image/mask pair")."""
    import json
    from cmunext_edge.data.discovery import discover, read_name_list
    names = sorted(p.stem for p in (SAMPLES_DIR / "images").glob("*.png"))[:2]
    text = tmp_path / "val.txt"
    text.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(names).encode() + b"\r\n")
    assert read_name_list(text) == names
    assert [s.name for s in discover(SAMPLES_DIR, text)] == names
    split = tmp_path / "split.json"
    split.write_bytes(b"\xef\xbb\xbf" + json.dumps({"val": names}).encode())
    assert read_name_list(split) == names
