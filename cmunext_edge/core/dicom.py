"""DICOM in: a DICOM object's frames converted to the preprocessing contract (HxWx3 uint8 BGR).

pydicom (the `dicom` extra) is imported lazily; so are the decoders of compressed transfer syntaxes
(pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls or Pillow, through pydicom).

The conversion, by Photometric Interpretation (one table, `_CONVERT`):
- MONOCHROME2: 8-bit unsigned data without rescale is used as it is (the same bytes as an 8-bit PNG);
  anything else (BitsStored > 8, signed, a Rescale Slope/Intercept) goes through the modality LUT
  (rescale), then the first VOI window of the file (Window Center/Width, linear, DICOM PS3.3
  C.11.2.1.2.1) to 0..255; without a window, the frame's own min..max is stretched to 0..255.
- MONOCHROME1: as MONOCHROME2, then inverted (0 is white), so that the image looks as displayed.
- RGB, YBR_FULL, YBR_FULL_422 (and YBR_RCT/YBR_ICT of JPEG 2000): pydicom's decoders return RGB
  (YBR is converted with the DICOM equations; planar configuration 1 is interleaved); more than 8
  bits stored keep their high 8 bits. RGB is then reordered to BGR.
- PALETTE COLOR: the palette is applied (16-bit entries keep their high byte, unless every entry lies
  in 0..255: then they are 8-bit values, a common writer's quirk), then BGR.
Grayscale ends up replicated to three channels, exactly as a grayscale PNG through `to_bgr_uint8`.

A multi-frame object is a sequence of frames: `frame` is 0-based, and a multi-frame object read
without one is refused rather than silently reduced to its first frame. Every check that can be made
from the header runs before any pixel data is decoded: pixel data present, a supported Photometric
Interpretation, a decoder for the transfer syntax (else the package to install is named),
Rows x Columns x Frames against the pixel limit (all frames count: a cine loop is one object), and
the Image Pixel module's consistency (`_pixel_module_problem`). A compressed frame's own size is read
from its codestream before it is decoded; a decoder's warning refuses the frame.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS, ImageSizeError, ImageTooLargeError, check_pixels

DICOM_SUFFIXES = (".dcm", ".dicom")
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
# transfer syntax UID -> the pip packages that decode it (what to install when none is present)
HANDLERS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or Pillow)",          # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (or Pillow)",          # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",                      # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",                      # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls or pylibjpeg-libjpeg",          # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls or pylibjpeg-libjpeg",          # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (or Pillow with OpenJPEG)",   # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (or Pillow with OpenJPEG)",   # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",                    # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",                    # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",                    # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",                             # RLE (pydicom decodes it too)
}
INSTALL = 'pip install "cmunext-edge[dicom]"'
# SOP classes with pixel data that are results, not images (e.g. our own SEG output in an input folder)
NOT_IMAGES = {"1.2.840.10008.5.1.4.1.1.66.4": "Segmentation", "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation",
              "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose"}


class DicomError(ValueError):
    """A DICOM object that cannot be used as network input (the message starts with its source)."""


class DicomTooLargeError(DicomError, ImageTooLargeError):
    """A DICOM object over the pixel limit (image_limits.check_pixels): refused before decoding
    (cmunext-serve answers 413)."""


def is_dicom_file(path) -> bool:
    """A .dcm/.dicom file, or any file with the DICOM preamble ("DICM" at byte 128)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dataset(obj) -> bool:
    return type(obj).__name__ in ("Dataset", "FileDataset") and hasattr(obj, "file_meta")


def pydicom():
    return require("pydicom")


def _dcmread(path: str, **kwargs):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # remarks on a leniently read header, not naming it
        return pydicom().dcmread(path, **kwargs)


@functools.lru_cache(maxsize=16)
def _cached_header(path: str, mtime_ns: int, size: int):
    # pixel data (and other large values) stay on disk until a frame is decoded
    return _dcmread(path, defer_size=4096)


@functools.lru_cache(maxsize=1)
def _cached_object(path: str, mtime_ns: int, size: int):
    # the whole object, for files whose frames cannot be read one by one (deflated, or an encapsulated
    # value pydicom cannot index): read once for all its frames (its size was checked from the header)
    return _dcmread(path)


def _full(path):
    st = Path(path).stat()
    return _cached_object(str(path), st.st_mtime_ns, st.st_size)


def read_header(path):
    """The dataset of a DICOM file with its pixel data left on disk (cached per file version)."""
    path = Path(path)
    pydicom()                     # a missing pydicom is MissingDependencyError (naming the extra), not "damaged"
    try:
        st = path.stat()
        if st.st_size == 0:
            raise DicomError(f"{path}: empty file (0 bytes)")
        return _cached_header(str(path), st.st_mtime_ns, st.st_size)
    except DicomError:
        raise
    except OSError as exc:
        raise DicomError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:      # pydicom raises InvalidDicomError, EOFError, struct/value errors
        if type(exc).__name__ == "InvalidDicomError":
            raise DicomError(f"{path}: not a DICOM Part 10 file (no 'DICM' prefix and file meta header: a bare "
                             f"dataset, or not DICOM at all); re-save it as a DICOM file, e.g. with dcmtk's "
                             f"dcmconv") from None
        raise DicomError(f"{path}: not a readable DICOM file (damaged or truncated: {_first_line(exc)})") from None


def frame_count(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def check_header(ds, source, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """Everything checkable before decoding; -> the number of frames (DicomError otherwise)."""
    if str(ds.get("SOPClassUID", "")) in NOT_IMAGES:
        raise DicomError(f"{source}: a DICOM {NOT_IMAGES[str(ds.SOPClassUID)]} (a result, not an image); "
                         f"not segmented")
    if str(_file_meta(ds, "MediaStorageSOPClassUID") or "") == "1.2.840.10008.1.3.10":
        raise DicomError(f"{source}: a DICOMDIR (the index of a DICOM medium, not an image): give the image "
                         f"files it lists")
    if "PixelData" not in ds and "SOPClassUID" not in ds:   # type 1 in every IOD: the header stops short
        raise DicomError(f"{source}: not a readable DICOM file (damaged or truncated: no SOP Class UID "
                         f"and no pixel data)")
    if "PixelData" not in ds:
        what = ds.get("SOPClassUID")
        what = getattr(what, "name", what) or "unknown SOP class"
        extra = " (float pixel data is not supported)" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else ""
        raise DicomError(f"{source}: DICOM object without pixel data ({what}){extra}; nothing to segment")
    rows, cols, frames = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), frame_count(ds)
    try:                          # the one pixel limit, over every frame of the object
        check_pixels(cols, rows, frames, max_pixels, f"{source}: DICOM header")
    except ImageTooLargeError as exc:
        raise DicomTooLargeError(str(exc)) from None
    except ImageSizeError as exc:
        raise DicomError(str(exc)) from None
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in _CONVERT:
        raise DicomError(f"{source}: Photometric Interpretation {photometric or '(missing)'} is not supported "
                         f"(supported: {', '.join(_CONVERT)})")
    problem = _pixel_module_problem(ds, photometric, rows, cols, frames)
    if problem:
        raise DicomError(f"{source}: {problem}")
    _check_decoder(ds, source)
    return frames


def _pixel_module_problem(ds, photometric: str, rows: int, cols: int, frames: int) -> str | None:
    """What in the Image Pixel module makes the frames unusable, read from the header alone."""
    allocated, stored = int(ds.get("BitsAllocated", 8) or 8), int(ds.get("BitsStored", 8) or 8)
    if stored > allocated or stored < 1:
        return f"invalid header: Bits Stored {stored} with Bits Allocated {allocated}"
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = ds.get(keyword)
        if value not in (None, "") and _first(value) is None:
            return f"invalid header: {keyword} {str(value)[:40]!r} is not a (finite) number"
    slope = ds.get("RescaleSlope")
    if slope is not None and _first(slope) == 0:
        return "Rescale Slope 0 maps every pixel to one value; nothing to segment"
    if photometric == "PALETTE COLOR" and not all(f"{c}PaletteColorLookupTableDescriptor" in ds
                                                  for c in ("Red", "Green", "Blue")):
        return "PALETTE COLOR without its colour lookup tables (Red/Green/Blue descriptors)"
    uid = _transfer_syntax(ds)
    if uid is None or not uid.is_compressed:
        if photometric == "YBR_FULL_422" and cols % 2:
            return f"YBR_FULL_422 with an odd number of columns ({cols}): 4:2:2 data needs an even number"
        samples = 2 if photometric == "YBR_FULL_422" else int(ds.get("SamplesPerPixel", 1) or 1)   # 4:2:2: Y Y Cb Cr
        need = (rows * cols * samples * allocated * frames + 7) // 8
        have = _value_length(ds, "PixelData")
        if have is not None and have < need:
            return (f"pixel data holds {have} bytes, the header's {cols}x{rows}x{frames} frame(s) need {need} "
                    f"(truncated)")
    return None


def _file_meta(ds, keyword: str):
    meta = getattr(ds, "file_meta", None)
    return meta.get(keyword) if meta is not None else None


def _transfer_syntax(ds):
    return _file_meta(ds, "TransferSyntaxUID")


def _value_length(ds, keyword: str) -> int | None:
    """The length in bytes of an element's value, without reading a deferred value from disk."""
    elem = ds.get_item(keyword)
    if elem is None:
        return None
    length = getattr(elem, "length", None)          # a raw (deferred) element
    if length is not None and length != 0xFFFFFFFF:
        return int(length)
    value = getattr(elem, "value", None)
    return len(value) if isinstance(value, (bytes, bytearray)) else None


def _check_decoder(ds, source) -> None:
    uid = _transfer_syntax(ds)
    if uid is None or not uid.is_compressed:
        return
    from pydicom.pixels import get_decoder
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DicomError(f"{source}: transfer syntax {uid.name} ({uid}) has no pixel data decoder "
                         f"in pydicom; not supported") from None
    if not decoder.is_available:
        handler = HANDLERS.get(str(uid), "a pydicom pixel data handler for it")
        raise DicomError(f"{source}: no decoder installed for transfer syntax {uid.name}; install "
                         f"{handler} ({INSTALL} installs them)")


def read_frame(source, frame: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One frame (0-based) of a DICOM file path or pydicom Dataset -> HxWx3 uint8 BGR."""
    name = _name(source)
    try:
        return _read_frame(source, name, frame, max_pixels)
    except OSError as exc:        # e.g. a Dataset read with defer_size whose file has gone since
        raise _unreadable(name, exc) from None


def _unreadable(name: str, exc: OSError) -> DicomError:
    return DicomError(f"{name}: its data cannot be read ({_first_line(exc)})")


def _read_frame(source, name: str, frame: int | None, max_pixels: int | None) -> np.ndarray:
    ds = source if is_dataset(source) else read_header(source)
    frames = check_header(ds, name, max_pixels)
    if frame is None:
        if frames > 1:
            raise DicomError(f"{name}: multi-frame DICOM object ({frames} frames): give a frame index "
                             f"(cmunext-predict and EdgeSegmenter.segment_frames take every frame)")
        frame = 0
    if not 0 <= frame < frames:
        raise DicomError(f"{name}: frame {frame} out of range (the object has {frames} frames)")
    return frame_to_bgr(ds, _decode(source, ds, frame, name), name)


def read_frames(source, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """Every frame of a DICOM file path or Dataset, in order -> list of HxWx3 uint8 BGR."""
    try:
        ds = source if is_dataset(source) else read_header(source)
        frames = check_header(ds, _name(source), max_pixels)
    except OSError as exc:
        raise _unreadable(_name(source), exc) from None
    return [read_frame(source, k, max_pixels) for k in range(frames)]


def _decode(source, ds, frame: int, name: str) -> np.ndarray:
    """Decode one frame (file sources read only that frame's bytes); shape checked against the header,
    a compressed frame's own size before it is decoded (a small header over a huge codestream would
    otherwise allocate the huge image). A decoder's warning (e.g. RLE segments that do not add up)
    refuses the frame: its pixels may be wrong."""
    import warnings
    from pydicom.pixels import pixel_array
    uid = _transfer_syntax(ds)
    if uid is not None and uid.is_compressed and not uid.is_deflated:
        _check_codestream(source, ds, frame, name)
    if is_dataset(source):
        target = ds
    else:                                      # a deflated stream is read whole
        target = _full(source) if uid is not None and uid.is_deflated else str(source)
    # RLE: pydicom's own decoder, which warns when a frame's segments do not add up to the header's
    # size (the pylibjpeg plugin decodes such a frame silently into wrong pixels)
    plugin = {"decoding_plugin": "pydicom"} if uid == RLE_LOSSLESS else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                arr = pixel_array(target, index=frame, **plugin)
            except Exception:
                if not isinstance(target, str):
                    raise
                caught.clear()
                # reading one frame from the file can fail where reading the object does (e.g. an
                # encapsulated value without its item tags); its size was checked above
                arr = pixel_array(_full(source), index=frame, **plugin)
        except Exception as exc:     # decoders raise ValueError, RuntimeError, EOFError, ...
            raise DicomError(f"{name}: frame {frame + 1} cannot be decoded (damaged, truncated or of another "
                             f"size than the header's {ds.Columns}x{ds.Rows}: {_first_line(exc)})") from None
    decoder_warnings = [w for w in caught if "pydicom" in (w.filename or "")]
    if decoder_warnings:
        raise DicomError(f"{name}: frame {frame + 1}: the decoder warned that its data is not what the header "
                         f"describes ({_first_line(decoder_warnings[0].message)}); not used, as its pixels may be wrong")
    if arr.shape[:2] != (int(ds.Rows), int(ds.Columns)):
        raise DicomError(f"{name}: frame {frame + 1} is {arr.shape[1]}x{arr.shape[0]}, the header says "
                         f"{ds.Columns}x{ds.Rows} (frames of unequal size)")
    return arr


def _check_codestream(source, ds, frame: int, name: str) -> None:
    """A JPEG / JPEG-LS / JPEG 2000 frame's own size (from its codestream header) against Rows x Columns."""
    from pydicom.encaps import get_frame
    frames = frame_count(ds)
    try:
        elem = ds.get_item("PixelData")
        if is_dataset(source) or getattr(elem, "value", None) is not None:     # the value is in memory
            data = get_frame(ds.PixelData, frame, number_of_frames=frames)
        else:                                      # deferred: only this frame's fragments are read
            with open(source, "rb") as fh:
                fh.seek(elem.value_tell)
                data = get_frame(fh, frame, number_of_frames=frames)
    except Exception as exc:
        raise DicomError(f"{name}: frame {frame + 1}: its compressed data cannot be found (damaged or truncated: "
                         f"{_first_line(exc)})") from None
    size = codestream_size(data[:65536])
    if size is not None and size != (int(ds.Columns), int(ds.Rows)):
        raise DicomError(f"{name}: frame {frame + 1}: its compressed image is {size[0]}x{size[1]}, the header says "
                         f"{ds.Columns}x{ds.Rows}; not decoded")


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG, JPEG-LS or JPEG 2000 codestream from its header; None if unknown."""
    from cmunext_edge.core.image_limits import header_size
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 24:       # J2K: SOC, SIZ: Xsiz, Ysiz, XOsiz, YOsiz
        xsiz, ysiz, xo, yo = (int.from_bytes(data[i:i + 4], "big") for i in (8, 12, 16, 20))
        return xsiz - xo, ysiz - yo
    kind, size = header_size(data)
    return size if kind == "JPEG" else None


def frame_to_bgr(ds, arr: np.ndarray, name: str = "DICOM") -> np.ndarray:
    """A decoded frame -> HxWx3 uint8 BGR, by Photometric Interpretation (module docstring)."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in _CONVERT:
        raise DicomError(f"{name}: Photometric Interpretation {photometric} is not supported")
    out = _CONVERT[photometric](ds, arr)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def _plain_8bit(ds) -> bool:
    """8 stored bits, unsigned, no rescale: the values are grey levels as they are (fewer bits, e.g. a
    1-bit image of 0/1, go through window_to_uint8 and are stretched)."""
    return (int(ds.get("BitsStored", 8) or 8) == 8 and int(ds.get("PixelRepresentation", 0) or 0) == 0
            and float(ds.get("RescaleSlope", 1) or 1) == 1.0 and float(ds.get("RescaleIntercept", 0) or 0) == 0.0)


def _first(value) -> float | None:
    """The first value of a (possibly multi-valued) numeric attribute, or None."""
    if value is None:
        return None
    try:
        number = float(value if isinstance(value, (int, float, str)) else list(value)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None          # NaN or infinity is no number here


def window_to_uint8(ds, arr: np.ndarray) -> np.ndarray:
    """Modality LUT (rescale), then the first VOI window (linear) or the frame's min..max, to uint8."""
    from pydicom.pixels import apply_modality_lut
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        if width == 1:
            scaled = (values > center - 0.5).astype(np.float64)
        else:
            scaled = (values - (center - 0.5)) / (width - 1) + 0.5
    else:
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _mono2(ds, arr):
    arr = arr[..., 0] if arr.ndim == 3 else arr
    return arr.astype(np.uint8) if _plain_8bit(ds) else window_to_uint8(ds, arr)


def _mono1(ds, arr):
    return 255 - _mono2(ds, arr)


def _high_byte(arr: np.ndarray, bits: int) -> np.ndarray:
    if bits < 8:                               # e.g. 4 stored bits: 0..15 stretched to 0..255
        return (arr.astype(np.uint32) * 255 // ((1 << bits) - 1)).clip(0, 255).astype(np.uint8)
    if arr.dtype == np.uint8 and bits == 8:
        return arr
    return (arr.astype(np.uint32) >> max(0, bits - 8)).clip(0, 255).astype(np.uint8)


def _rgb(ds, arr):
    return _high_byte(arr, int(ds.get("BitsStored", 8) or 8))[..., ::-1]


def _palette(ds, arr):
    from pydicom.pixels import apply_color_lut
    try:
        rgb = apply_color_lut(arr, ds)
    except (ValueError, KeyError, AttributeError) as exc:
        raise DicomError(f"{_name(ds)}: PALETTE COLOR lookup tables cannot be applied ({_first_line(exc)})") from None
    bits = 8 if rgb.dtype == np.uint8 or _palette_entries_8bit(ds) else 16
    return _high_byte(rgb, bits)[..., ::-1]


def _palette_entries_8bit(ds) -> bool:
    """16-bit palette entries that all lie in 0..255: a common writer's quirk (8-bit values in a 16-bit
    table). Read as 16-bit values they would make the image black; they are taken as 8-bit, as viewers do."""
    tables = [ds.get(f"{c}PaletteColorLookupTableData") for c in ("Red", "Green", "Blue")]
    if any(t is None for t in tables):
        return False
    return all(np.frombuffer(bytes(t)[: len(t) // 2 * 2], "<u2").max(initial=0) <= 255 for t in tables)


# Photometric Interpretation -> conversion to uint8 (grayscale HxW or BGR HxWx3)
_CONVERT = {"MONOCHROME1": _mono1, "MONOCHROME2": _mono2, "RGB": _rgb, "YBR_FULL": _rgb,
            "YBR_FULL_422": _rgb, "YBR_RCT": _rgb, "YBR_ICT": _rgb, "PALETTE COLOR": _palette}


def dataset_from_bytes(body: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """A DICOM object sent as bytes (e.g. an HTTP body) -> its Dataset, header checked."""
    from io import BytesIO
    try:
        ds = pydicom().dcmread(BytesIO(body))
    except Exception as exc:
        raise DicomError(f"request body: not a readable DICOM object ({_first_line(exc)})") from None
    ds.filename = "request body"          # what every later message names (read from memory, never reopened)
    check_header(ds, "request body", max_pixels)
    return ds


def _name(source) -> str:
    if is_dataset(source):
        return str(getattr(source, "filename", None) or f"DICOM dataset {source.get('SOPInstanceUID', '')}").strip()
    return str(source)


def _first_line(exc) -> str:
    """The reason in an exception's (or warning's) text: its first line, or, when that only announces
    what follows ("...: "), the first line after it; pydicom's API hint about force=True left out."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    text = text.replace(" Use force=True to force reading.", "").replace(" - use force=True to force reading", "")
    return text[:240]
