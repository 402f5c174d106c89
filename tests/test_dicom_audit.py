"""DICOM, round two: what a hostile-input audit of the DICOM path broke, as tests.

Invalid SEGs (a frame of reference without a slice thickness, a cine loop with one, a one-frame
US multi-frame object, no Patient ID, Latin-1 names without a character set), silent wrong pixels
(Rescale Slope 0, odd-width YBR_FULL_422, a corrupted RLE stream, 16-bit palette entries holding
8-bit values), a small header over a huge codestream decoded before it was refused, a truncated
multi-frame file reported once per frame, UID-named files ignored in folders, and two files with
one stem sharing one SEG."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import JPEGBaseline8Bit, RLELossless, generate_uid  # noqa: E402

from cmunext_edge.cli.predict import main as predict_main  # noqa: E402
from cmunext_edge.core import dicom  # noqa: E402
from cmunext_edge.data.dicom_sample import write_ultrasound_dicoms  # noqa: E402
from cmunext_edge.predict.dicom_seg import read_back  # noqa: E402

from test_reliability import run_cli  # noqa: E402

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


@pytest.fixture(scope="module")
def us(tmp_path_factory):
    folder = tmp_path_factory.mktemp("us_audit")
    write_ultrasound_dicoms(folder)
    return folder


def _mono(us, **changes):
    ds = pydicom.dcmread(us / "us_mono.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def _save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    dicom._cached_header.cache_clear()
    return path


def _refused(path, says):
    with pytest.raises(dicom.DicomError, match=says):
        dicom.read_frames(path)


@pytest.mark.parametrize("changes,says", [
    ({"RescaleSlope": 0, "RescaleIntercept": 0}, "Rescale Slope 0 maps every pixel to one value"),
    ({"BitsStored": 12, "HighBit": 11}, "invalid header: Bits Stored 12 with Bits Allocated 8"),
    ({"PhotometricInterpretation": "PALETTE COLOR"}, "PALETTE COLOR without its colour lookup tables"),
])
def test_headers_that_would_give_wrong_pixels_are_refused(us, tmp_path, changes, says):
    _refused(_save(_mono(us, **changes), tmp_path / "x.dcm"), says)


def test_a_rescale_slope_that_is_not_a_number_is_named(us, tmp_path):
    path = _save(_mono(us, RescaleSlope="9.9", RescaleIntercept="0"), tmp_path / "x.dcm")
    data = path.read_bytes()
    assert data.count(b"9.9 ") == 1                       # pydicom will not write a bad DS: edit the file
    path.write_bytes(data.replace(b"9.9 ", b"abc "))
    dicom._cached_header.cache_clear()
    _refused(path, "invalid header: RescaleSlope 'abc' is not a .finite. number")


def test_htj2k_without_its_decoder_names_the_package(us, monkeypatch):
    import pydicom.pixels
    ds = _mono(us)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"         # HTJ2K lossless

    class Unavailable:
        is_available = False
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    with pytest.raises(dicom.DicomError, match="install pylibjpeg-openjpeg"):
        dicom._check_decoder(ds, "htj2k.dcm")


def test_odd_width_ybr_422_is_refused(us, tmp_path):
    ds = _mono(us)
    rows, cols = 8, 7
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = rows, cols, 3, 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = bytes(rows * (cols + 1) * 2)
    _refused(_save(ds, tmp_path / "ybr.dcm"), "odd number of columns")


def test_a_truncated_multiframe_file_is_one_line_not_one_per_frame(us, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    ds = _mono(us, SOPClassUID=US_MULTIFRAME, NumberOfFrames=100, FrameIncrementPointer=0x00181063, FrameTime=33)
    ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    _save(ds, src / "cut_cine.dcm")
    shutil.copy(us / "us_mono.dcm", src / "good.dcm")
    rc, _, err = run_cli(predict_main, [src, "--out", tmp_path / "o", "--quiet"], capsys)
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped:")]
    assert rc == 1 and len(skipped) == 1 and "(truncated)" in skipped[0], err


def test_a_small_header_over_a_huge_codestream_is_refused_before_decoding(us, tmp_path):
    ds = _mono(us)
    ds.Rows = ds.Columns = 64
    ok, jpeg = cv2.imencode(".jpg", np.zeros((3000, 2000), np.uint8))
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    _refused(_save(ds, tmp_path / "bomb.dcm"), "its compressed image is 2000x3000, the header says 64x64; not decoded")
    assert dicom.codestream_size(jpeg.tobytes()) == (2000, 3000)


def test_a_corrupted_rle_stream_is_refused_and_an_intact_one_decodes(us, tmp_path):
    ds = _mono(us)
    ds.compress(RLELossless)
    good = dicom.read_frames(_save(ds, tmp_path / "ok.dcm"))[0]
    assert np.array_equal(good[..., 0], pydicom.dcmread(us / "us_mono.dcm").pixel_array)
    data = bytearray(ds.PixelData)
    data[-200:-100] = b"\xff" * 100
    ds.PixelData = bytes(data)
    _refused(_save(ds, tmp_path / "bad.dcm"), "the decoder warned|cannot be decoded")


def test_16_bit_palette_entries_holding_8_bit_values_are_read_as_8_bit(us, tmp_path):
    ds = _mono(us, PhotometricInterpretation="PALETTE COLOR")
    for c in ("Red", "Green", "Blue"):
        ds.add_new(f"{c}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData", np.arange(256, dtype="<u2").tobytes())
    frame = dicom.read_frames(_save(ds, tmp_path / "pal.dcm"))[0]
    assert np.array_equal(frame[..., 0], pydicom.dcmread(us / "us_mono.dcm").pixel_array)   # identity table


def test_dicomdir_and_bare_datasets_say_what_they_are(us, tmp_path):
    from pydicom.fileset import FileSet
    fs = FileSet()
    fs.add(us / "us_mono.dcm")
    fs.write(tmp_path / "media")
    with pytest.raises(dicom.DicomError, match="a DICOMDIR"):
        dicom.check_header(dicom.read_header(tmp_path / "media" / "DICOMDIR"), "DICOMDIR")
    bare = tmp_path / "bare.dcm"
    bare.write_bytes((us / "us_mono.dcm").read_bytes()[132:])       # no preamble, no 'DICM'
    with pytest.raises(dicom.DicomError, match="not a DICOM Part 10 file") as exc:
        dicom.read_header(bare)
    assert "force=True" not in str(exc.value)


# Type 2 patient/study attributes an anonymiser removes: the SEG is still written, with them empty
ANONYMISED = dict.fromkeys(("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                            "StudyID", "AccessionNumber", "ReferringPhysicianName"))
PLACED = {"FrameOfReferenceUID": generate_uid(), "PositionReferenceIndicator": "", "SliceThickness": 1,
          "ImagePositionPatient": [0, 0, 0], "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "PixelSpacing": [0.1, 0.1]}


def _seg_sources(us, folder):
    cine = pydicom.dcmread(us / "us_cine.dcm")
    cine.FrameOfReferenceUID, cine.PositionReferenceIndicator = generate_uid(), ""
    one = _mono(us, SOPClassUID=US_MULTIFRAME, NumberOfFrames=1, FrameIncrementPointer=0x00181063, FrameTime=33)
    one.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    latin = _mono(us, SpecificCharacterSet=None)
    latin.PatientName = "M\xfcller^J\xfcrgen"
    sources = {"for_spacing": _mono(us, FrameOfReferenceUID=generate_uid(), PositionReferenceIndicator="",
                                    PixelSpacing=[0.1, 0.1]),
               "cine_for": cine, "usmf_1frame": one, "no_patient_id": _mono(us, PatientID=None), "latin1": latin,
               "anonymised": _mono(us, **ANONYMISED), "anonymised_placed": _mono(us, **ANONYMISED, **PLACED)}
    return {name: _save(ds, folder / f"{name}.dcm") for name, ds in sources.items()}


def test_every_seg_is_valid_for_sources_highdicom_alone_got_wrong(us, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    paths = _seg_sources(us, src)
    ds = _mono(us, StudyInstanceUID=None)
    _save(ds, src / "no_study.dcm")
    rc = predict_main([str(src), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 1                                                   # the source without a study UID: reported
    for name, path in paths.items():
        seg = tmp_path / "out" / "seg" / f"{name}.seg.dcm"
        assert seg.is_file(), name
        source = pydicom.dcmread(path, stop_before_pixels=True)
        frames = int(source.get("NumberOfFrames", 1) or 1)
        masks = read_back(seg, [source])
        names = [f"{name}_frame{k + 1:04d}" for k in range(frames)] if frames > 1 else [name]
        for k, mask_name in enumerate(names):
            png = cv2.imread(str(tmp_path / "out" / "masks" / f"{mask_name}.png"), cv2.IMREAD_GRAYSCALE) > 0
            assert np.array_equal(masks[k, ..., 0].astype(bool), png), (name, k)
    assert not (tmp_path / "out" / "seg" / "no_study.seg.dcm").exists()
    for name in ("anonymised", "anonymised_placed"):
        seg = pydicom.dcmread(tmp_path / "out" / "seg" / f"{name}.seg.dcm", stop_before_pixels=True)
        assert all(seg.get(k) in ("", None) for k in ANONYMISED), name      # present (Type 2) and empty
        assert "PatientBirthDate" in seg and "AccessionNumber" in seg, name
    from test_dicom import dciodvfy_errors      # last: it skips (saying so) where dciodvfy is missing
    for name in paths:
        assert dciodvfy_errors(tmp_path / "out" / "seg" / f"{name}.seg.dcm") == [], name


def test_uid_named_files_are_read_and_same_stem_files_get_their_own_seg(us, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(us / "us_mono.dcm", src / "1.2.826.0.1.3680043.8.498.1")
    _save(_mono(us), src / "1.2.826.0.1.3680043.8.498.2")
    shutil.copy(us / "us_mono.dcm", src / "y.dcm")
    _save(_mono(us), src / "y.dicom")
    assert predict_main([str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    segs = sorted(p.name for p in (tmp_path / "out" / "seg").glob("*.seg.dcm"))
    assert len(segs) == 4 and "1.2.826.0.1.3680043.8.498.1.seg.dcm" in segs, segs
    referenced = set()
    for seg in (tmp_path / "out" / "seg").glob("*.seg.dcm"):
        instances = pydicom.dcmread(seg).ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert len(instances) == 1                                   # one source instance per SEG
        referenced.add(instances[0].ReferencedSOPInstanceUID)
    assert len(referenced) == 3    # two copies of us_mono share a SOP Instance UID; the other two are new


def test_a_dataset_without_file_meta_says_what_is_missing(us):
    from cmunext_edge.core.preprocess import ImageReadError, to_bgr_uint8
    ds = pydicom.dcmread(us / "us_mono.dcm")
    del ds.file_meta
    with pytest.raises(ImageReadError, match="Dataset without file_meta"):
        to_bgr_uint8(ds)


def test_series_segs_split_by_image_size(us, tmp_path):
    """--dicom-seg series over a series whose images differ in size: one SEG per size, every image in one."""
    src = tmp_path / "in"
    src.mkdir()
    small = _mono(us, InstanceNumber=2)
    small.PixelData = small.pixel_array[:64, :80].tobytes()
    small.Rows, small.Columns = 64, 80
    _save(_mono(us, InstanceNumber=1), src / "big.dcm")
    _save(small, src / "small.dcm")
    out = tmp_path / "out"
    assert predict_main([str(src), "--out", str(out), "--quiet", "--dicom-seg", "series"]) == 0
    segs = sorted((out / "seg").iterdir())
    uid = pydicom.dcmread(src / "big.dcm", stop_before_pixels=True).SeriesInstanceUID
    assert [p.name for p in segs] == [f"series-{uid}-2.seg.dcm", f"series-{uid}.seg.dcm"]
    big = _mono(us)
    sizes = sorted((int(s.Rows), int(s.Columns)) for s in map(pydicom.dcmread, segs))
    assert sizes == sorted([(64, 80), (int(big.Rows), int(big.Columns))])


def test_training_split_keeps_a_cine_loops_frames_together(us):
    from cmunext_edge.data.discovery import Sample, seeded_split, source_split
    singles = [Sample(f"img{k:02d}", Path(f"img{k:02d}.png")) for k in range(20)]
    cine = [Sample(f"loop_frame{k + 1:04d}", Path("loop.dcm"), frame=k) for k in range(6)]
    names = [s.name for s in singles]
    assert source_split(singles, 0.2, 41) == seeded_split(names, 0.2, 41)      # no multi-frame: unchanged
    for seed in range(8):
        train, val = source_split(singles + cine, 0.2, seed)
        frames = {s.name for s in cine}
        assert frames <= set(train) or frames <= set(val), seed
        assert sorted(train + val) == sorted(names + list(frames))


def test_an_empty_dcm_file_says_it_is_empty(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(dicom.DicomError, match="empty.dcm: empty file"):
        dicom.read_header(tmp_path / "empty.dcm")
