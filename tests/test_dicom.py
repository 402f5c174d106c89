"""DICOM in and DICOM SEG out, on real files: pydicom's bundled test objects (JPEG baseline, RLE,
JPEG 2000, YBR, palette, multi-frame, a structured report, a truncated file) and ultrasound objects
built from the bundled BUSI samples. Every SEG written is checked by dciodvfy (dicom3tools) and read
back with highdicom."""
import json
import shutil
from pathlib import Path
import subprocess

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")
from pydicom.data import get_testdata_file  # noqa: E402

from cmunext_edge.cli.predict import main as predict_main  # noqa: E402
from cmunext_edge.core.preprocess import ImageReadError, load_image  # noqa: E402
from cmunext_edge.core import dicom  # noqa: E402
from cmunext_edge.data.dicom_sample import write_ultrasound_dicoms  # noqa: E402
from cmunext_edge.data.discovery import discover  # noqa: E402
from cmunext_edge.predict.dicom_seg import read_back  # noqa: E402
from cmunext_edge.runtime.segmenter import EdgeSegmenter  # noqa: E402

DCIODVFY = shutil.which("dciodvfy")


def bundled(name):
    return get_testdata_file(name)


def dciodvfy_errors(path) -> list[str]:
    """dciodvfy's errors for `path`; skips the test where dciodvfy is missing, so call it after the
    test's own checks (they run everywhere)."""
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; .ci/run installs it (the test's other checks "
                    "passed)")
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def us(tmp_path_factory):
    folder = tmp_path_factory.mktemp("us")
    write_ultrasound_dicoms(folder)
    return folder


@pytest.fixture(scope="module")
def segmenter():
    return EdgeSegmenter()


# --- conversion ------------------------------------------------------------------------------------
def test_ybr_jpeg_rle_and_uncompressed_copies_of_one_image_convert_alike():
    rle = load_image(bundled("SC_rgb_rle.dcm"))                       # RGB, lossless
    ybr = load_image(bundled("SC_ybr_full_422_uncompressed.dcm"))     # YBR_FULL_422
    jpeg = load_image(bundled("SC_rgb_jpeg_dcmtk.dcm"))               # JPEG baseline, YBR_FULL
    assert rle.shape == ybr.shape == jpeg.shape == (100, 100, 3) and rle.dtype == np.uint8
    assert np.abs(rle.astype(int) - ybr).mean() < 2 and np.abs(rle.astype(int) - jpeg).mean() < 2
    # BGR order: the test image's top band is red in RGB, so channel 2 (R in BGR) dominates
    top = rle[:10].reshape(-1, 3).mean(axis=0)
    assert top[2] > 200 and top[0] < 50


def test_16_bit_rgb_keeps_its_high_byte_and_palette_is_applied():
    assert np.array_equal(load_image(bundled("SC_rgb_rle_16bit.dcm")), load_image(bundled("SC_rgb_rle.dcm")))
    pal = load_image(bundled("examples_palette.dcm"))
    ds = pydicom.dcmread(bundled("examples_palette.dcm"))
    from pydicom.pixels import apply_color_lut
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)[..., ::-1]
    assert np.array_equal(pal, expected) and len(np.unique(pal.reshape(-1, 3), axis=0)) > 10


def test_monochrome_windowing_and_monochrome1_inversion():
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = 40, 400                     # a soft-tissue window
    img = load_image(ds)
    values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = np.rint(np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(img[..., 0], expected) and (img[..., 0] == img[..., 2]).all()
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(load_image(ds)[..., 0], 255 - expected)
    mr = pydicom.dcmread(bundled("MR_small.dcm"))                 # 16 bit without a window: min..max
    for key in ("WindowCenter", "WindowWidth"):
        if key in mr:
            delattr(mr, key)
    img = load_image(mr)
    assert img.min() == 0 and img.max() == 255


def test_jpeg2000_and_rle_decode_and_multiframe_needs_a_frame():
    assert load_image(bundled("JPEG2000.dcm")).shape == (1024, 256, 3)
    assert np.array_equal(load_image(bundled("MR_small_RLE.dcm")), load_image(bundled("MR_small.dcm")))
    with pytest.raises(ImageReadError, match="multi-frame DICOM object \\(30 frames\\)"):
        load_image(bundled("examples_ybr_color.dcm"))
    assert load_image(bundled("examples_ybr_color.dcm"), frame=29).shape == (240, 320, 3)


def test_lossless_dicom_gives_the_pixels_and_mask_of_the_png(us, segmenter):
    for name in ("us_rgb", "us_mono"):
        assert np.array_equal(load_image(us / f"{name}.dcm"), load_image(us / "png" / f"{name}.png"))
        a, b = segmenter.segment(us / f"{name}.dcm"), segmenter.segment(us / "png" / f"{name}.png")
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.logits, b.logits)
    ds = pydicom.dcmread(us / "us_mono.dcm")                          # a Dataset in memory
    assert np.array_equal(segmenter.segment(ds).mask, segmenter.segment(us / "png" / "us_mono.png").mask)
    frames = segmenter.segment_frames(us / "us_cine.dcm")
    assert len(frames) == 3
    for k, seg in enumerate(frames):
        assert np.array_equal(seg.mask, segmenter.segment(us / "png" / f"us_cine_frame{k + 1:04d}.png").mask)


def test_discovery_expands_multiframe_objects_into_frames(us):
    names = [s.name for s in discover(us)]
    assert names == ["us_cine_frame0001", "us_cine_frame0002", "us_cine_frame0003", "us_mono",
                     "us_mono_jpeg", "us_rgb", "us_rgb_jpeg"]
    assert len(discover(bundled("examples_ybr_color.dcm"))) == 30


# --- bad input ---------------------------------------------------------------------------------------
def _unequal_frames(path):
    """A 2-frame JPEG baseline object whose second frame is smaller than the header says."""
    from pydicom.encaps import encapsulate
    ds = pydicom.dcmread(bundled("examples_ybr_color.dcm"))
    big = np.zeros((240, 320), np.uint8)
    small = np.zeros((120, 160), np.uint8)
    ds.PixelData = encapsulate([cv2.imencode(".jpg", f)[1].tobytes() for f in (big, small)])
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = 2, 1, "MONOCHROME2"
    del ds.PlanarConfiguration
    ds.save_as(path)


def _enormous(path):
    """A header claiming 60000 x 60000 x 50 frames, with almost no pixel data."""
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds.Rows = ds.Columns = 60000
    ds.NumberOfFrames = 50
    ds.save_as(path)


def test_bad_files_get_one_line_each_and_the_rest_is_done(us, tmp_path, capsys, monkeypatch):
    src = tmp_path / "mixed"
    src.mkdir()
    shutil.copy(us / "us_mono.dcm", src / "good.dcm")
    shutil.copy(us / "png" / "us_rgb.png", src / "plain.png")
    shutil.copy(bundled("test-SR.dcm"), src / "report.dcm")
    shutil.copy(bundled("JPEG2000.dcm"), src / "j2k.dcm")
    (src / "cut.dcm").write_bytes((us / "us_rgb.dcm").read_bytes()[:5000])
    _unequal_frames(src / "unequal.dcm")
    _enormous(src / "huge.dcm")
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000
    monkeypatch.setattr(get_decoder(JPEG2000), "_available", {})       # its handlers "not installed"
    dicom._cached_header.cache_clear()
    rc = predict_main([str(src), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert rc == 1 and len(lines) == 6, err
    for name, text in [("report.dcm", "without pixel data (Comprehensive SR Storage)"),
                       ("j2k.dcm", "no decoder installed for transfer syntax JPEG 2000 Image Compression; "
                                   "install pylibjpeg-openjpeg"),
                       ("cut.dcm", "(truncated)"),
                       ("unequal.dcm", "frame 2"),
                       ("huge.dcm", "60000x60000x50 frames")]:
        assert sum(name in line and text in line for line in lines) == 1, (name, lines)
    # the frame of unequal.dcm that decoded has its mask; its SEG is not written, and that is said too
    assert sum("unequal.dcm: DICOM SEG not written: 1 of 2 frame(s) have no mask" in line for line in lines) == 1
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == [
        "good.png", "plain.png", "unequal_frame0001.png"]
    assert sorted(p.name for p in (tmp_path / "out" / "seg").iterdir()) == ["good.seg.dcm"]


# --- cmunext-predict end to end, SEG validated ----------------------------------------------------
def _png_masks(folder):
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0 for p in (folder / "masks").iterdir()}


def test_busi_dicom_folder_gives_png_masks_and_valid_segs(us, tmp_path):
    assert predict_main([str(us), "--out", str(tmp_path / "dcm"), "--quiet"]) == 0
    assert predict_main([str(us / "png"), "--out", str(tmp_path / "png"), "--quiet"]) == 0
    dcm, png = _png_masks(tmp_path / "dcm"), _png_masks(tmp_path / "png")
    assert len(dcm) == 7                                      # 4 single-frame objects + 3 cine frames
    for name in png:                                          # lossless objects: same masks as the PNGs
        assert np.array_equal(dcm[name], png[name]), name
    segs = sorted((tmp_path / "dcm" / "seg").iterdir())
    assert [p.name for p in segs] == [f"{n}.seg.dcm" for n in ("us_cine", "us_mono", "us_mono_jpeg",
                                                                "us_rgb", "us_rgb_jpeg")]
    for seg in segs:
        source = pydicom.dcmread(us / seg.name.replace(".seg", ""), stop_before_pixels=True)
        back = read_back(seg, [source])[..., 0].astype(bool)
        stem = source.SOPInstanceUID and seg.name[:-len(".seg.dcm")]
        names = [f"{stem}_frame{k + 1:04d}" for k in range(3)] if stem == "us_cine" else [stem]
        assert np.array_equal(back, np.stack([dcm[n] for n in names])), seg
        ds = pydicom.dcmread(seg)
        assert ds.PatientID == source.PatientID and ds.StudyInstanceUID == source.StudyInstanceUID
        algo = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert "artifact_sha256" in algo.AlgorithmParameters and algo.AlgorithmName == "cmunext-s-busi"
        assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Lesion"
    for seg in segs:                                          # last: it skips where dciodvfy is missing
        assert dciodvfy_errors(seg) == [], seg


def test_pixel_spacing_without_slice_thickness_reads_back(us, tmp_path):
    """A 2-D source with Pixel Spacing but no Slice Thickness or frame of reference (pydicom's own
    RGB secondary captures are such): its SEG passes dciodvfy and highdicom reads it back."""
    src = tmp_path / "spaced"
    src.mkdir()
    ds = pydicom.dcmread(us / "us_mono.dcm")
    ds.PixelSpacing = [0.1, 0.1]
    ds.save_as(src / "spaced.dcm")
    shutil.copy(bundled("SC_rgb_rle.dcm"), src / "sc_rgb_rle.dcm")
    assert predict_main([str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    segs = {name: tmp_path / "out" / "seg" / f"{name}.seg.dcm" for name in ("spaced", "sc_rgb_rle")}
    for name, seg in segs.items():
        source = pydicom.dcmread(src / f"{name}.dcm", stop_before_pixels=True)
        mask = cv2.imread(str(tmp_path / "out" / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(read_back(seg, [source])[0, ..., 0].astype(bool), mask), name
    for name, seg in segs.items():                            # last: it skips where dciodvfy is missing
        assert dciodvfy_errors(seg) == [], name


def test_a_header_cut_short_reads_as_damaged(us, tmp_path):
    cut = tmp_path / "hdrcut.dcm"
    cut.write_bytes((us / "us_mono.dcm").read_bytes()[:300])
    dicom._cached_header.cache_clear()
    with pytest.raises(dicom.DicomError, match="damaged or truncated"):
        dicom.check_header(dicom.read_header(cut), cut)


def test_per_series_fractional_seg_with_custom_codes(us, tmp_path):
    codes = tmp_path / "codes.json"
    codes.write_text(json.dumps([{"label": "mass", "category": ["49755003", "SCT", "Morphologically Abnormal Structure"],
                                  "type": ["4147007", "SCT", "Mass"]}]))
    src = tmp_path / "series"
    src.mkdir()
    for name in ("us_rgb", "us_mono", "us_rgb_jpeg", "us_mono_jpeg"):
        shutil.copy(us / f"{name}.dcm", src)
    out = tmp_path / "out"
    assert predict_main([str(src), "--out", str(out), "--quiet", "--dicom-seg", "series",
                         "--seg-type", "fractional", "--seg-codes", str(codes)]) == 0
    (seg,) = (out / "seg").iterdir()
    assert seg.name.startswith("series-")
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in src.iterdir()),
                     key=lambda d: int(d.InstanceNumber))
    back = read_back(seg, sources)[..., 0]
    for k, ds in enumerate(sources):
        name = [p.stem for p in src.iterdir() if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                == ds.SOPInstanceUID][0]
        prob = cv2.imread(str(out / "probabilities" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        assert np.allclose(back[k], prob / 255.0, atol=1e-6)
    ds = pydicom.dcmread(seg)
    assert ds.SegmentationType == "FRACTIONAL" and ds.SegmentSequence[0].SegmentLabel == "mass"
    assert dciodvfy_errors(seg) == []                         # last: it skips where dciodvfy is missing


# --- datasets: calibration / verification and training read DICOM images too -------------------------
def test_dicom_dataset_feeds_calibration_and_training(us, tmp_path):
    from cmunext_edge.core.preprocess import get_preset
    from cmunext_edge.export.calibration import make_calibration_set
    from cmunext_edge.train.recipe import _cache
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks" / "0").mkdir(parents=True)
    for name in ("us_mono", "us_cine"):
        shutil.copy(us / f"{name}.dcm", root / "images")
    for name in ("us_mono", "us_cine_frame0001", "us_cine_frame0002", "us_cine_frame0003"):
        mask = np.zeros((448, 576), np.uint8)
        mask[100:200, 100:300] = 255
        cv2.imwrite(str(root / "masks" / "0" / f"{name}.png"), mask)
    samples = discover(root)
    assert [s.name for s in samples] == ["us_cine_frame0001", "us_cine_frame0002", "us_cine_frame0003", "us_mono"]
    assert all(s.mask is not None for s in samples)
    spec = get_preset("official")
    calib = make_calibration_set(root, spec, size=10)
    assert calib.inputs.shape == (4, 3, 256, 256) and all(m is not None for m in calib.masks)
    assert np.array_equal(calib.inputs[3], spec(us / "png" / "us_mono.png"))
    skipped = {}
    (images, masks), kept, _ = _cache(samples, spec, 1, 0, skipped)
    assert images.shape == (4, 256, 256, 3) and masks.shape == (4, 1, 256, 256) and masks.any()
    assert kept == [s.name for s in samples] and not skipped


def test_without_pydicom_each_dicom_file_names_the_extra(us, tmp_path, capsys, monkeypatch):
    import sys
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(us / "us_mono.dcm", src)
    shutil.copy(us / "png" / "us_rgb.png", src)
    monkeypatch.setitem(sys.modules, "pydicom", None)          # import pydicom now fails
    dicom._cached_header.cache_clear()
    assert predict_main([str(src), "--out", str(tmp_path / "out"), "--quiet", "--dicom-seg", "off"]) == 1
    err = capsys.readouterr().err
    assert 'us_mono.dcm: a DICOM file: pydicom is not installed; install it with: pip install "cmunext-edge[dicom]"' in err
    assert [p.name for p in (tmp_path / "out" / "masks").iterdir()] == ["us_rgb.png"]


def test_without_highdicom_the_masks_are_written_and_each_seg_names_the_extra(us, tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "highdicom", None)        # import highdicom now fails
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(us / "us_mono.dcm", src)
    assert predict_main([str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert 'us_mono.dcm: DICOM SEG not written (MissingDependencyError: highdicom is not installed; install it ' \
           'with: pip install "cmunext-edge[dicom]")' in err
    assert [p.name for p in (tmp_path / "out" / "masks").iterdir()] == ["us_mono.png"]


def test_dicom_is_read_not_listed_as_unread(us, tmp_path):
    from cmunext_edge.data.discovery import not_read_reason, unread_files
    src = tmp_path / "mixed"
    src.mkdir()
    shutil.copy(us / "us_mono.dcm", src / "a.dcm")
    shutil.copy(us / "us_mono.dcm", src / "b.dicom")
    shutil.copy(us / "us_mono.dcm", src / "IM0001")               # extensionless, DICOM preamble
    (src / "notes").write_text("not an image")                     # extensionless, not DICOM
    assert [not_read_reason(src / n) for n in ("a.dcm", "b.dicom", "IM0001")] == [None, None, None]
    assert [Path(u["path"]).name for u in unread_files(src)] == ["notes"]
    assert sorted(s.name for s in discover(src)) == ["IM0001", "a", "b"]
    assert [s.name for s in discover(src / "a.dcm")] == ["a"]      # a lone DICOM file is read, not refused


def test_a_dicom_over_the_pixel_limit_is_image_too_large(us):
    from cmunext_edge.core.image_limits import ImageTooLargeError
    body = (us / "us_cine.dcm").read_bytes()                        # 576 x 448 x 3 frames
    with pytest.raises(ImageTooLargeError, match="576x448x3 frames"):
        dicom.dataset_from_bytes(body, max_pixels=576 * 448 * 3 - 1)
    assert dicom.frame_count(dicom.dataset_from_bytes(body, max_pixels=576 * 448 * 3)) == 3


def test_serve_answers_413_for_a_dicom_over_the_pixel_limit(us):
    import asyncio
    pytest.importorskip("fastapi")
    import fastapi
    from cmunext_edge.scale.serve import Limits, RequestError, _answer_dicom

    class Replica:
        async def _segment(self, frame):
            raise AssertionError("a frame was decoded and segmented")

    body = (us / "us_cine.dcm").read_bytes()        # the body as read_body streamed it
    with pytest.raises(RequestError, match="refused before decoding") as exc:
        asyncio.run(_answer_dicom(Replica(), body, "binary", Limits(1 << 30, 1000, 10.0), fastapi))
    assert exc.value.status == 413


def test_serve_refuses_a_dicom_no_seg_can_reference_before_inference():
    """A 2-frame Secondary Capture (frames a SEG cannot reference): 422, nothing segmented."""
    import asyncio
    pytest.importorskip("fastapi")
    import fastapi
    from cmunext_edge.scale.serve import Limits, RequestError, _answer_dicom

    class Replica:
        async def _segment(self, frame):
            raise AssertionError("a frame was segmented")

    body = Path(bundled("SC_rgb_rle_2frame.dcm")).read_bytes()
    with pytest.raises(RequestError, match="no DICOM SEG can answer it: the source holds 2 frames") as exc:
        asyncio.run(_answer_dicom(Replica(), body, "binary", Limits(1 << 30, 1 << 30, 10.0), fastapi))
    assert exc.value.status == 422


def test_serve_query_parameters_must_fit_the_body_and_dicom_needs_its_content_type(us):
    from cmunext_edge.scale.serve import RequestError, check_query, decode_body
    assert check_query({"format": None, "seg": None}, dicom=True) == {"format": "json", "seg": "binary"}
    assert check_query({"format": "png", "seg": None}, dicom=False)["format"] == "png"
    assert check_query({"format": None, "seg": "fractional"}, dicom=True)["seg"] == "fractional"
    for params, is_dcm, says in (({"format": "png"}, True, "'format' applies to an image body"),
                                 ({"seg": "binary"}, False, "'seg' applies to a DICOM body"),
                                 ({"seg": "bogus"}, True, "must be binary or fractional")):
        with pytest.raises(RequestError, match=says) as exc:
            check_query(params, dicom=is_dcm)
        assert exc.value.status == 400
    with pytest.raises(RequestError, match="Content-Type: application/dicom") as exc:
        decode_body((us / "us_mono.dcm").read_bytes())
    assert exc.value.status == 400


# --- hostile re-test, round three (issue 23): each made a wrong or invalid result before -----------
def _mono8(path, img, sop="1.2.840.10008.5.1.4.1.1.6.1", **attrs):
    """A small single-frame 8-bit MONOCHROME2 object around `img` (uint8 HxW), `attrs` set on it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "A^B", "1", "US"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation, ds.PixelData = 7, 0, img.tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def small_gray():
    img = cv2.imread(str(sorted((Path(__file__).parents[1] / "cmunext_edge/samples/busi/images").glob("*.png"))[0]),
                     cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(cv2.resize(img, (160, 120)))


def test_rle_frame_of_another_size_is_refused_not_decoded_into_wrong_pixels(tmp_path, small_gray):
    from pydicom.encaps import encapsulate
    from pydicom.pixels.encoders import RLELosslessEncoder
    from pydicom.uid import RLELossless

    def rle(a):
        return RLELosslessEncoder.encode(a.tobytes(), rows=a.shape[0], columns=a.shape[1], samples_per_pixel=1,
                                         bits_allocated=8, bits_stored=8, pixel_representation=0, number_of_frames=1,
                                         photometric_interpretation="MONOCHROME2", planar_configuration=0)
    path = _mono8(tmp_path / "rle.dcm", small_gray, sop="1.2.840.10008.5.1.4.1.1.3.1")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.NumberOfFrames, ds.FrameTime, ds.FrameIncrementPointer = 3, 33.3, 0x00181063
    ds.PixelData = encapsulate([rle(small_gray), rle(small_gray), rle(cv2.resize(small_gray, (159, 123)))])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.save_as(path, enforce_file_format=True)
    assert np.array_equal(dicom.read_frame(path, 1)[..., 0], small_gray)
    with pytest.raises(dicom.DicomError, match="frame 3: the decoder warned"):
        dicom.read_frame(path, 2)


def test_nan_or_infinite_rescale_and_few_stored_bits(tmp_path, small_gray):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag
    from pydicom.pixels import pack_bits
    for text in (b"nan ", b"inf "):
        path = _mono8(tmp_path / "slope.dcm", small_gray)
        ds = pydicom.dcmread(path)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelData = (small_gray.astype(np.uint16) * 16).tobytes()
        tag = Tag("RescaleSlope")
        ds[tag] = RawDataElement(tag, "DS", 4, text, 0, False, True)
        ds.RescaleIntercept = 0
        ds.save_as(path, enforce_file_format=True)
        with pytest.raises(ImageReadError, match="RescaleSlope .* is not a \\(finite\\) number"):
            load_image(path)
    path = _mono8(tmp_path / "bits1.dcm", small_gray)             # a 1-bit image: 0/1 becomes 0/255
    ds = pydicom.dcmread(path)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit, ds.PixelData = 0, pack_bits((small_gray > 60).astype(np.uint8))
    ds.save_as(path, enforce_file_format=True)
    assert np.array_equal(load_image(path)[..., 0], np.where(small_gray > 60, 255, 0))


def test_seg_sources_and_codes_that_would_make_an_invalid_seg_are_reported(tmp_path, small_gray, capsys):
    bad = _mono8(tmp_path / "ctrl" / "name.dcm", small_gray, PatientName="Evil^Name\x07")
    assert predict_main([str(bad), "--out", str(tmp_path / "o1"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "PatientName holds '\\x07'" in err and (tmp_path / "o1" / "masks" / "name.png").is_file()
    assert not (tmp_path / "o1" / "seg").exists() or not list((tmp_path / "o1" / "seg").iterdir())
    dup = tmp_path / "dup"
    a = _mono8(dup / "a.dcm", small_gray, InstanceNumber=1)
    _mono8(dup / "b.dcm", np.ascontiguousarray(small_gray[::-1]), InstanceNumber=2,
           SOPInstanceUID=pydicom.dcmread(a).SOPInstanceUID)
    assert predict_main([str(dup), "--out", str(tmp_path / "o2"), "--dicom-seg", "series", "--quiet"]) == 1
    assert "repeat the SOP Instance UID" in capsys.readouterr().err
    codes = tmp_path / "codes.json"
    codes.write_text('[{"label": "mass", "category": ["", "SCT", "x"], "type": ["4147007", "SCT", "Mass"]}]')
    assert predict_main([str(a), "--out", str(tmp_path / "o3"), "--seg-codes", str(codes)]) == 2
    assert "category code value is empty" in capsys.readouterr().err and not (tmp_path / "o3").exists()
    codes.write_text('[{"label": "a", "category": ["1", "SCT", "x"], "type": ["2", "SCT", "y"]},'
                     ' {"label": "b", "category": ["1", "SCT", "x"], "type": ["3", "SCT", "z"]}]')
    assert predict_main([str(a), "--out", str(tmp_path / "o4"), "--seg-codes", str(codes), "--quiet"]) == 0
    assert "gives 2 segment codes, the model has 1 class(es): the last 1 are not used" in capsys.readouterr().out


def test_a_dicom_file_whose_name_is_not_utf8_gets_its_seg(tmp_path, small_gray):
    """OpenCV crashed reading the mask PNGs back for the SEG (run in a child process: a crash fails here)."""
    import os
    import sys
    path = _mono8(tmp_path / os.fsdecode(b"bad\xffname.dcm"), small_gray)
    run = subprocess.run([sys.executable, "-m", "cmunext_edge.cli.predict", str(path), "--out", str(tmp_path / "o"),
                          "--quiet"], capture_output=True, text=True, errors="replace")
    assert run.returncode == 0, run.stderr
    seg = tmp_path / "o" / "seg" / os.fsdecode(b"bad\xffname.seg.dcm")
    assert seg.is_file()
    png = tmp_path / "o" / "masks" / os.fsdecode(b"bad\xffname.png")        # decoded from bytes: no file name
    mask = cv2.imdecode(np.frombuffer(png.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
    back = read_back(seg, [pydicom.dcmread(path, stop_before_pixels=True)])
    assert back.shape[:3] == (1, *small_gray.shape) and np.array_equal(back[0, ..., 0].astype(bool), mask)
    assert not dciodvfy_errors(seg)                           # last: it skips where dciodvfy is missing


def test_a_dataset_whose_deferred_file_has_gone_is_an_image_read_error(tmp_path, segmenter):
    path = shutil.copy(bundled("MR_small.dcm"), tmp_path / "mr.dcm")
    ds = pydicom.dcmread(path, defer_size=100)                 # pixel data read later, from the file
    Path(path).rename(tmp_path / "moved.dcm")
    for call in (segmenter.segment, segmenter.segment_frames):
        with pytest.raises(ImageReadError, match="its data cannot be read .*Deferred read"):
            call(ds)


def test_three_class_seg_is_built_from_this_runs_masks_segment_k_class_k(tmp_path, small_gray, three_class):
    """A 3-class model's SEG: segment k is class k, every source frame of a multi-frame object is
    referenced per segment, and highdicom reads back each class's PNG mask. Into an --out where a
    one-class run left <name>.png, the SEG is still built from this run's <name>_class<k>.png (was:
    the stale one-class mask was taken, a one-segment SEG, exit 0)."""
    single = _mono8(tmp_path / "in" / "one.dcm", small_gray)
    frames = np.ascontiguousarray(np.stack([small_gray, small_gray[::-1]]))
    cine = _mono8(tmp_path / "in" / "cine.dcm", frames[0], sop="1.2.840.10008.5.1.4.1.1.3.1",
                  NumberOfFrames=2, PixelData=frames.tobytes())
    out = tmp_path / "out"
    assert predict_main([str(tmp_path / "in"), "--out", str(out), "--quiet"]) == 0             # one class
    assert predict_main([str(tmp_path / "in"), "--weights", str(three_class["checkpoint"]), "--out", str(out),
                         "--quiet"]) == 0
    for source, names in ((single, ["one"]), (cine, ["cine_frame0001", "cine_frame0002"])):
        seg_path = out / "seg" / f"{source.stem}.seg.dcm"
        seg = pydicom.dcmread(seg_path)
        assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "class 0"), (2, "class 1"),
                                                                                   (3, "class 2")]
        back = read_back(seg_path, [pydicom.dcmread(source, stop_before_pixels=True)]).astype(bool)
        pngs = np.stack([np.stack([cv2.imread(str(out / "masks" / f"{n}_class{k}.png"), cv2.IMREAD_GRAYSCALE) > 127
                                   for k in range(3)], axis=-1) for n in names])
        assert back.shape == pngs.shape and np.array_equal(back, pngs), source
    refs = [(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber,
             int(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber))
            for f in pydicom.dcmread(out / "seg" / "cine.seg.dcm").PerFrameFunctionalGroupsSequence]
    assert refs == [(k, f) for k in (1, 2, 3) for f in (1, 2)]
