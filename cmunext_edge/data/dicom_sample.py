"""DICOM ultrasound objects built from the bundled BUSI samples, to try (and test) the DICOM path
without patient data: `python -m cmunext_edge.data.dicom_sample OUT`.

One study, one series of Ultrasound Image Storage objects and one Ultrasound Multi-frame object,
every frame `SIZE` (the BUSI images resized to one frame size, as one device's series would be):
  us_rgb.dcm         RGB, uncompressed (a BUSI image with a coloured annotation, like a cart's screen)
  us_mono.dcm        MONOCHROME2, uncompressed
  us_rgb_jpeg.dcm    YBR_FULL_422, JPEG baseline (lossy)
  us_mono_jpeg.dcm   MONOCHROME2, JPEG baseline (lossy)
  us_cine.dcm        MONOCHROME2, uncompressed, 3 frames (a short cine loop)
and `png/` with the very pixels of every lossless frame as PNG (`us_cine_frame0001.png`, ...), so that
the PNG route and the DICOM route can be compared image for image.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.resources import SAMPLES_DIR

SIZE = (448, 576)                   # rows, columns of every frame
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
# name -> (photometric, JPEG baseline?, source images used (frames))
OBJECTS = {
    "us_rgb": ("RGB", False, 1), "us_mono": ("MONOCHROME2", False, 1),
    "us_rgb_jpeg": ("YBR_FULL_422", True, 1), "us_mono_jpeg": ("MONOCHROME2", True, 1),
    "us_cine": ("MONOCHROME2", False, 3),
}


def _frames(paths: list[Path], photometric: str) -> list[np.ndarray]:
    """BUSI images at SIZE: grayscale HxW, or RGB HxWx3 with a coloured annotation."""
    out = []
    for p in paths:
        gray = cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), SIZE[::-1], interpolation=cv2.INTER_AREA)
        if photometric == "MONOCHROME2":
            out.append(gray)
            continue
        rgb = np.repeat(gray[..., None], 3, axis=2)
        cv2.putText(rgb, "L BREAST 10MHz", (12, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 200, 0), 2)
        cv2.rectangle(rgb, (SIZE[1] - 60, 20), (SIZE[1] - 20, 120), (0, 160, 255), -1)
        out.append(rgb)
    return out


def base_dataset(sop_class: str, study: dict, series_uid: str, number: int):
    """Patient, study, series, equipment and SOP attributes of one ultrasound object."""
    require("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    for key, value in study.items():
        setattr(ds, key, value)
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "US", series_uid, 1, number
    ds.Laterality, ds.BodyPartExamined = "L", "BREAST"
    ds.Manufacturer, ds.ContentDate, ds.ContentTime = "cmunext-edge sample", study["StudyDate"], study["StudyTime"]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PatientOrientation, ds.BurnedInAnnotation = "", "NO"
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _set_pixels(ds, frames: list[np.ndarray], photometric: str, jpeg: bool) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit
    color = frames[0].ndim == 3
    ds.Rows, ds.Columns = frames[0].shape[:2]
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if color:
        ds.PlanarConfiguration = 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
        ds.FrameTime = 33.3
        ds.FrameIncrementPointer = 0x00181063          # Frame Time
    if not jpeg:
        ds.PixelData = np.stack(frames).tobytes()
        ds["PixelData"].VR = "OB"
        return
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    if color:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
    encoded = [cv2.imencode(".jpg", f[..., ::-1] if color else f, params)[1].tobytes() for f in frames]
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    raw = sum(f.nbytes for f in frames)
    ds.LossyImageCompressionRatio = f"{raw / sum(len(e) for e in encoded):.2f}"[:16]


def write_ultrasound_dicoms(out, source: str | Path | None = None) -> dict[str, Path]:
    """Write the objects listed in the module docstring to `out` -> name -> path."""
    require("pydicom")
    from pydicom.uid import generate_uid
    out = Path(out)
    (out / "png").mkdir(parents=True, exist_ok=True)
    images = sorted((Path(source or SAMPLES_DIR) / "images").glob("*.png"))
    needed = sum(n for _, _, n in OBJECTS.values())
    if len(images) < needed:
        raise ValueError(f"{source}: needs {needed} images in images/, found {len(images)}")
    study = {"PatientName": "BUSI^Sample", "PatientID": "BUSI-0001", "PatientBirthDate": "",
             "PatientSex": "F", "StudyInstanceUID": generate_uid(), "StudyDate": "20240101",
             "StudyTime": "120000", "ReferringPhysicianName": "", "StudyID": "1", "AccessionNumber": ""}
    series, written, used = generate_uid(), {}, 0
    for number, (name, (photometric, jpeg, n)) in enumerate(OBJECTS.items(), start=1):
        frames = _frames(images[used:used + n], photometric)
        used += n
        ds = base_dataset(US_MULTIFRAME if n > 1 else US_IMAGE, study, series, number)
        _set_pixels(ds, frames, photometric, jpeg)
        path = out / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written[name] = path
        if not jpeg:
            for k, f in enumerate(frames):
                png = out / "png" / (f"{name}_frame{k + 1:04d}.png" if n > 1 else f"{name}.png")
                cv2.imwrite(str(png), f[..., ::-1] if f.ndim == 3 else f)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cmunext_edge.data.dicom_sample OUT_FOLDER")
    for name, path in write_ultrasound_dicoms(sys.argv[1]).items():
        print(f"{name}: {path}")
