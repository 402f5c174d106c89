"""Hostile and unlucky inputs to cmunext-export found by an audit (one test per finding)."""
import os
import shutil

import pytest

from conftest import SAMPLES


def _tiny_dataset(root, names):
    """An official-layout dataset (images/ + masks/0/) of bundled samples under the given file names
    (bytes: possibly not UTF-8)."""
    images, masks = root / "images", root / "masks" / "0"
    images.mkdir(parents=True), masks.mkdir(parents=True)
    sources = sorted((SAMPLES / "images").iterdir())
    for source, name in zip(sources, names):
        shutil.copyfile(source, os.path.join(os.fsencode(images), name))
        shutil.copyfile(SAMPLES / "masks" / "0" / source.name, os.path.join(os.fsencode(masks), name))
    return root


def test_images_with_non_utf8_file_names_can_calibrate_and_verify(tmp_path):
    """A file name that is not UTF-8 (bytes 0xff 0xfe on Linux) stopped the export with "'utf-8' codec
    can't encode characters ... surrogates not allowed": the set's digest encoded the name strictly."""
    from cmunext_edge.core.preprocess import PreprocessSpec
    from cmunext_edge.export.calibration import make_calibration_set
    data = _tiny_dataset(tmp_path / "ds", [b"img\xff\xfe0.png", b"img\xff\xfe1.png", b"plain.png"])
    spec = PreprocessSpec(height=64, width=64)
    first = make_calibration_set(data, spec, size=None)
    assert len(first) == 3 and sum(m is not None for m in first.masks) == 3
    assert make_calibration_set(data, spec, size=None).sha256 == first.sha256     # still deterministic
