"""Property-based fuzzing (hypothesis) of what hostile files reach: image decoding (with the
header size check), safetensors headers, and artifact metadata / self-test parsing. Each may
refuse its input, but only with its documented error type, never with a crash or a hang."""
import json
import struct

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cmunext_edge.artifacts.meta import PREFIX, check_selftest, make_selftest, parse_metadata  # noqa: E402
from cmunext_edge.checkpoints.inspect import CheckpointError  # noqa: E402
from cmunext_edge.core.image_limits import header_size  # noqa: E402
from cmunext_edge.core.preprocess import ImageReadError, PreprocessSpec, get_preset, load_image  # noqa: E402
from cmunext_edge.checkpoints.weights import inspect_checkpoint  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SEEDS = {fmt: cv2.imencode(fmt, np.random.default_rng(0).integers(0, 255, (21, 34, 3), np.uint8))[1].tobytes()
         for fmt in (".png", ".jpg", ".bmp", ".tif", ".webp")}


def _mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


mutated_images = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda fmt, edits, cut: _mutate(SEEDS[fmt], edits)[:cut or None],
              st.sampled_from(sorted(SEEDS)), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)),
                                                       max_size=8), st.integers(0, 4000)))


@FUZZ
@given(data=mutated_images)
def test_image_decoding_refuses_cleanly(tmp_path, data):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    kind, size = header_size(data)
    try:
        img = load_image(path, max_pixels=4_000_000)
    except ImageReadError:
        return
    assert img.dtype in (np.uint8, np.uint16) and img.ndim == 3
    assert size is not None and img.shape[0] * img.shape[1] <= 4_000_000


@FUZZ
@given(width=st.integers(1, 1 << 31), height=st.integers(1, 1 << 31))
@example(width=1000, height=1000)           # the limit itself: decoded (and fails on the missing pixels)
@example(width=1000, height=1001)           # one row over it: refused from the header
def test_huge_declared_png_is_refused_before_decoding(tmp_path, width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 40)
    if width * height > 1_000_000:
        with pytest.raises(ImageReadError, match=f"{width}x{height} = .* megapixels exceeds the limit"):
            load_image(path, max_pixels=1_000_000)
    else:                                   # within the limit: read, and refused for its truncated pixels
        with pytest.raises(ImageReadError, match=f"its header gives {width}x{height}, but its pixels could not"):
            load_image(path, max_pixels=1_000_000)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)


@FUZZ
@given(header=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())),
       declared=st.one_of(st.none(), st.integers(0, 1 << 64 - 1)))
def test_safetensors_header_refuses_cleanly(tmp_path, header, declared):
    path = tmp_path / "x.safetensors"
    length = len(header) if declared is None else declared
    path.write_bytes(struct.pack("<Q", length) + header + b"\0" * 16)
    with pytest.raises((CheckpointError, ValueError)):
        inspect_checkpoint(path)


@FUZZ
@given(meta=st.dictionaries(st.sampled_from(["preprocess", "selftest", "in_channels", "num_classes", "runtime",
                                             "threshold", "variant", "other"]),
                            st.one_of(st.text(max_size=30), json_values.map(json.dumps)), max_size=6))
def test_artifact_metadata_parsing_refuses_cleanly(meta):
    try:
        parsed = parse_metadata({PREFIX + k: v for k, v in meta.items()})
    except ValueError:
        return
    if "spec" in parsed:
        assert isinstance(parsed["spec"], PreprocessSpec)


_SPEC = get_preset("official")
_LOGITS = np.random.default_rng(3).normal(0, 3, (1, 1, 256, 256)).astype(np.float32)
_GOOD = make_selftest(_SPEC, _LOGITS, "fp32")


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(sorted(_GOOD)), json_values, max_size=4),
       drop=st.lists(st.sampled_from(sorted(_GOOD)), max_size=3))
def test_selftest_digest_never_crashes(changes, drop):
    digest = {**_GOOD, **changes}
    for key in drop:
        digest.pop(key, None)
    result = check_selftest(digest, _SPEC, lambda x: _LOGITS)
    assert result.status in ("pass", "fail", "unavailable")
    if not changes and not drop:
        assert result.passed


@pytest.mark.parametrize("seed", [float("inf"), float("-inf"), float("nan"), 1e300, -1, "x", None])
def test_selftest_with_a_seed_that_is_no_count_fails_cleanly(seed):
    """Found by the fuzz test above: a seed of Infinity (valid JSON to Python) raised OverflowError."""
    result = check_selftest({**_GOOD, "seed": seed}, _SPEC, lambda x: _LOGITS)
    assert result.status == "fail" and not result.passed, result


@FUZZ
@given(spec=st.dictionaries(st.sampled_from(["height", "width", "mean", "std", "threshold", "extra_scale",
                                             "channel_order", "in_channels", "bogus"]), json_values, max_size=5))
def test_preprocess_contract_parsing_refuses_cleanly(spec):
    try:
        parsed = PreprocessSpec.from_json(json.dumps(spec))
    except ValueError:
        return
    # accepted: only what the contract allows, and it reads back as itself
    assert parsed.height > 0 and parsed.height % 16 == 0 and parsed.width > 0 and parsed.width % 16 == 0
    assert parsed.channel_order in ("bgr", "rgb") and 0 < parsed.threshold < 1 and parsed.in_channels in (1, 3)
    assert len(parsed.mean) == len(parsed.std) == parsed.in_channels
    assert PreprocessSpec.from_json(parsed.to_json()) == parsed
    for key in ("height", "width", "channel_order", "interpolation", "threshold", "in_channels", "extra_scale"):
        if key in spec:                                              # a value given is the value kept
            assert getattr(parsed, key) == spec[key], (key, spec[key], getattr(parsed, key))
