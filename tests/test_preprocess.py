import dataclasses
import re

import cv2
import numpy as np
import pytest

from cmunext_edge.core.preprocess import (
    ImageReadError, PreprocessSpec, get_preset, load_image, load_mask, to_bgr_uint8)


def test_official_preset_reproduces_golden_from_files(reference, busi):
    golden = np.load(reference / "golden_preprocess_busi.npz")
    spec = get_preset("official")
    for i, name in enumerate(golden["names"]):
        x = spec(busi / "images" / f"{name}.png")
        assert x.dtype == np.float32 and x.shape == (3, 256, 256)
        assert np.abs(x - golden[f"image_{i}"]).max() <= 1e-6
        mask = load_mask(busi / "masks" / "0" / f"{name}.png", spec.size)
        assert np.array_equal(mask, golden[f"mask_{i}"][0] > 0.5)


def test_input_range_has_the_official_double_normalisation():
    """../shared/reference/README.md: Normalize() with mean (0.485, 0.456, 0.406), std (0.229, 0.224,
    0.225), max_pixel_value 255, applied to the array as cv2.imread gives it (BGR), then / 255 again."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for value in (0, 255):
        x = get_preset("official")(np.full((40, 50, 3), value, np.uint8))
        expected = (value / 255 - mean) / std / 255            # per channel, in the array's channel order
        assert x.shape == (3, 256, 256)
        assert np.abs(x - expected[:, None, None]).max() < 1e-7, (value, x[:, 0, 0], expected)


def _bgr():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_gray_bgra_rgb_and_16bit_arrays_are_normalised_consistently():
    spec = get_preset("official")
    bgr = _bgr()
    ref = spec(bgr)
    assert np.array_equal(spec(np.dstack([bgr, np.full(bgr.shape[:2], 7, np.uint8)])), ref)
    assert np.array_equal(spec(bgr[..., ::-1].copy(), channel_order="rgb"), ref)
    assert np.array_equal(spec(bgr.astype(np.uint16) * 256 + 255), ref)
    gray = bgr[..., 0].copy()
    assert np.array_equal(spec(gray), spec(np.dstack([gray] * 3)))


def test_16bit_png_and_gray_png_files(tmp_path):
    spec = get_preset("official")
    img16 = (np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), img16)
    assert load_image(tmp_path / "a16.png").dtype == np.uint16
    expected = spec(cv2.cvtColor((img16 >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    assert np.array_equal(spec(tmp_path / "a16.png"), expected)


@pytest.mark.parametrize("bad, says", [
    (np.zeros((4, 4, 2), np.uint8), r"must be HxW, HxWx1, HxWx3 or HxWx4, got shape \(4, 4, 2\)"),
    (np.zeros((4, 4), np.float32), r"must be uint8 or uint16, got float32"),
    ("x", r"^x: no such file")])
def test_bad_arrays_are_clear_errors(bad, says):
    with pytest.raises(ImageReadError, match=says):
        to_bgr_uint8(bad) if not isinstance(bad, str) else get_preset("official")(bad)


def test_unreadable_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_image(tmp_path / "x.png")


@pytest.mark.parametrize("size", [(250, 256), (256, 8), (0, 16)])
def test_sizes_must_be_multiples_of_16(size):
    with pytest.raises(ValueError, match="multiple of 16"):
        PreprocessSpec(height=size[0], width=size[1])


def test_spec_is_frozen_and_round_trips_json():
    spec = get_preset("official").with_size(224, 320)
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'height'"):
        spec.height = 32
    assert spec.height == 224


def test_postprocess_resizes_probability_then_thresholds():
    spec = get_preset("official")
    logits = np.full((1, 256, 256), -5, np.float32)
    logits[0, :, 128:] = 5
    prob, mask = spec.postprocess(logits, (100, 300))
    assert prob.shape == mask.shape == (100, 300)
    assert mask[:, :140].sum() == 0 and mask[:, 160:].all()
    assert np.array_equal(mask, prob > spec.threshold)


def test_a_big_endian_uint16_array_is_read_as_uint16():
    import numpy as np
    from cmunext_edge.core.preprocess import to_bgr_uint8
    a = (np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)
    assert np.array_equal(to_bgr_uint8(a.astype(">u2")), to_bgr_uint8(a))


@pytest.mark.parametrize("edit, says", [
    ({"height": 32.5}, "height must be a whole number, got 32.5"),          # was: OpenCV's dsize error at the first image
    ({"in_channels": True}, "in_channels must be a whole number"),
    ({"std": [0.229, 0.0, 0.225]}, "std finite numbers above 0"),          # was: inf/NaN network input
    ({"mean": [0.485, "x", 0.406]}, "mean must hold finite numbers"),
    ({"extra_scale": "0.5"}, "extra_scale must be a finite number, got '0.5'"),   # was: accepted, failed at use
    ({"threshold": float("nan")}, "threshold must be a finite number"),
    ({"max_pixel_value": -255.0}, "max_pixel_value and extra_scale must be above 0"),
])
def test_a_contract_with_values_of_the_wrong_kind_is_refused_when_read(edit, says):
    """PreprocessSpec.from_json accepted a float size, a zero std and a string scale; each then
    failed (or gave non-finite input) only when an image was preprocessed."""
    import json
    from cmunext_edge.core.preprocess import PreprocessSpec
    data = {**json.loads(PreprocessSpec().to_json()), **edit}
    with pytest.raises(ValueError, match=re.escape(says)):
        PreprocessSpec.from_json(json.dumps(data))


def test_numpy_scalars_in_a_contract_become_plain_numbers():
    """A contract built from numpy values (e.g. a checkpoint's config) could not be written
    (json.dumps of np.int64), and a size of 256.0 (which the C++ library reads as 256) reached
    OpenCV as a float; they are stored as int / float, equal to the plain contract."""
    from cmunext_edge.core.preprocess import PreprocessSpec
    spec = PreprocessSpec(height=np.int64(256), width=256.0, threshold=np.float64(0.5),
                          mean=np.array([0.485, 0.456, 0.406]))
    assert spec == PreprocessSpec() and type(spec.height) is int and type(spec.width) is int
    assert type(spec.mean[0]) is float
    assert PreprocessSpec.from_json(spec.to_json()) == spec
