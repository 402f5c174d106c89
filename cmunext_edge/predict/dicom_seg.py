"""DICOM SEG out (highdicom, the `dicom` extra): the masks of DICOM inputs as Segmentation objects.

One SEG per source instance (`per="instance"`, every frame of a multi-frame object in it), or one per
series (`per="series"`: the single-frame instances of a series together; a multi-frame instance keeps
its own SEG). BINARY (the thresholded masks) or FRACTIONAL (the probabilities, 8 bit, PROBABILITY).
One segment per class, coded (`SegmentCode`; default for every class: category "Morphologically
Abnormal Structure", type "Lesion", SNOMED CT). Each SEG references its source instances and frames,
copies their patient, study and frame-of-reference attributes (highdicom does), keeps every frame
(empty ones too: every source frame is accounted for) and identifies the algorithm: model name,
variant, artifact sha256, precision and the cmunext-edge version.
"""
from __future__ import annotations

import socket
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmunext_edge._deps import require
from cmunext_edge._version import __version__
from cmunext_edge.fileio import loads_json

PER = ("instance", "series")
KINDS = ("binary", "fractional")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
AI_FAMILY = ("123110", "DCM", "Artificial Intelligence")        # CID 7162 algorithm family


class SegSourceError(ValueError):
    """A source a DICOM SEG cannot reference (a fault of the input, not of the toolkit)."""


@dataclass(frozen=True)
class SegmentCode:
    """A segment's label and its coded category and type, each (code value, scheme, meaning)."""
    label: str
    category: tuple[str, str, str] = ("49755003", "SCT", "Morphologically Abnormal Structure")
    type: tuple[str, str, str] = ("52988006", "SCT", "Lesion")


@dataclass(frozen=True)
class Algorithm:
    """What made the masks, as recorded in each segment's Algorithm Identification."""
    name: str
    variant: str
    sha256: str
    precision: str = "fp32"
    version: str = __version__


@dataclass(frozen=True)
class SegOptions:
    per: str = "instance"
    kind: str = "binary"
    codes: tuple[SegmentCode, ...] = ()       # one per class; missing ones get the default (lesion)

    def __post_init__(self):
        if self.per not in PER or self.kind not in KINDS:
            raise ValueError(f"SEG per must be one of {PER} and kind one of {KINDS}")

    def code(self, k: int, classes: int) -> SegmentCode:
        if k < len(self.codes):
            return self.codes[k]
        return SegmentCode("lesion" if classes == 1 else f"class {k}")


def read_codes(path) -> tuple[SegmentCode, ...]:
    """Segment codes from JSON: [{"label": "...", "category": [value, scheme, meaning], "type": [...]}, ...]."""
    try:
        items = loads_json(Path(path).read_text())
        codes = tuple(SegmentCode(str(i["label"]), *(tuple(str(v) for v in i[key]) for key in ("category", "type")))
                      for i in items)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: segment codes must be a JSON list of {{label, category: [value, scheme, "
                         f"meaning], type: [value, scheme, meaning]}} ({exc})") from None
    if any(len(c.category) != 3 or len(c.type) != 3 for c in codes):
        raise ValueError(f"{path}: every category and type needs [code value, coding scheme, code meaning]")
    for c in codes:
        fields = [("label", c.label, 64)] + [(f"{key} {what}", value, most) for key in ("category", "type")
                                             for (what, most), value in zip(_CODE_PARTS, getattr(c, key))]
        problem = next(filter(None, (_text_problem(*f) for f in fields)), None)
        if problem:
            raise ValueError(f"{path}: segment {c.label!r}: {problem}")
    return codes


_CODE_PARTS = (("code value", 16), ("coding scheme", 16), ("code meaning", 64))     # SH, SH, LO


def _text_problem(what: str, value: str, most: int | None = None) -> str | None:
    """Why `value` cannot stand in a DICOM text attribute (SH/LO/PN: not empty where required, at
    most `most` characters, no control character but ESC, no backslash), or None."""
    if most is not None and not value.strip():
        return f"{what} is empty (a SEG needs it: Type 1)"
    if most is not None and len(value) > most:
        return f"{what} has {len(value)} characters, DICOM allows {most}"
    bad = sorted({c for c in value if (ord(c) < 32 and c != "\x1b") or c == "\\"})
    if bad:
        return f"{what} holds {', '.join(repr(c) for c in bad)}, not allowed in DICOM text"
    return None


def build_seg(sources: list, masks: np.ndarray, options: SegOptions, algorithm: Algorithm,
              series_number: int = 900):
    """A highdicom Segmentation of `sources` (Datasets; one multi-frame or several single-frame ones).

    `masks`: (frames, rows, cols, classes), bool (binary) or float in [0, 1] (fractional)."""
    hd = require("highdicom")
    classes = masks.shape[3]
    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=_code(hd, AI_FAMILY),
        version=algorithm.version[:64], source="cmunext-edge",
        parameters={"variant": algorithm.variant, "artifact_sha256": algorithm.sha256,
                    "precision": algorithm.precision})
    segments = [hd.seg.SegmentDescription(
        segment_number=k + 1, segment_label=options.code(k, classes).label[:64],
        segmented_property_category=_code(hd, options.code(k, classes).category),
        segmented_property_type=_code(hd, options.code(k, classes).type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=ident)
        for k in range(classes)]
    fractional = options.kind == "fractional"
    pixels = masks.astype(np.float32) if fractional else masks.astype(bool)
    check_sources(sources)
    refs = _frame_refs(sources)
    registered = all(_registered(s) for s in sources)
    # highdicom's own path needs a frame of reference, planes and a thickness for several frames or a
    # FoR; without them the SEG maps by referenced frame (_all_frames)
    several = not registered and (len(refs) > 1 or any(s.get("FrameOfReferenceUID") or _multi_frame_class(
        s.SOPClassUID) for s in sources))
    sources = [_unregistered(s) if not registered else _with_type2(s) for s in sources]
    with warnings.catch_warnings():       # highdicom's remarks on the source's values (e.g. a one-part name)
        warnings.simplefilter("ignore", UserWarning)
        seg = _segmentation(hd, sources, pixels, several, fractional, segments, options, algorithm, series_number)
    _fill_conditional(seg, sources[0])
    if several:
        _all_frames(seg, refs, pixels, fractional)
    _declare_charset(seg)
    return seg


# SOP classes whose instances hold several frames (a ReferencedFrameNumber is allowed for them)
_MULTI_FRAME_WORDS = ("Multi-frame", "Enhanced", "Video", "X-Ray Angiographic", "X-Ray Radiofluoroscopic",
                      "Nuclear Medicine", "Whole Slide", "Breast Tomosynthesis", "Photoacoustic")


def _multi_frame_class(sop_class) -> bool:
    name = getattr(sop_class, "name", "") or ""
    return any(word in name for word in _MULTI_FRAME_WORDS)


def check_sources(sources: list) -> None:
    """What a valid SEG cannot do without: the UIDs it references (Type 1), and frames it can name
    (SegSourceError otherwise; checkable before any inference)."""
    for s in sources:
        missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not s.get(k)]
        if missing:
            raise SegSourceError(f"the source lacks {', '.join(missing)} (Type 1): a SEG cannot reference it")
        if int(s.get("NumberOfFrames", 1) or 1) > 1 and not _multi_frame_class(s.SOPClassUID):
            raise SegSourceError(f"the source holds {s.NumberOfFrames} frames under the single-frame SOP class "
                             f"{getattr(s.SOPClassUID, 'name', s.SOPClassUID)}: a SEG cannot reference its frames")
        for key in _TYPE2_COPIED:                 # copied into the SEG as they are: they must be valid there
            value = s.get(key)
            problem = _text_problem(key, str(value)) if value not in (None, "") else None
            if problem:
                raise SegSourceError(f"the source's {problem}: a SEG copying it would not be valid DICOM")
    counts = Counter(str(s.SOPInstanceUID) for s in sources)
    repeated = sorted(u for u, n in counts.items() if n > 1)
    if repeated:
        raise SegSourceError(f"{len(sources) - len(counts)} source(s) repeat the SOP Instance UID of another "
                             f"({repeated[0]}): a SEG of them cannot tell their frames apart")


def _registered(ds) -> bool:
    """A source highdicom can segment in its frame of reference: a FoR, a slice thickness, and planes
    (Image Position/Orientation of a single-frame image, or an enhanced object's functional groups)."""
    if not ds.get("FrameOfReferenceUID") or ds.get("SliceThickness") in (None, ""):
        return False
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or _multi_frame_class(ds.SOPClassUID):
        return "PerFrameFunctionalGroupsSequence" in ds and "SharedFunctionalGroupsSequence" in ds
    return "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds


_SPATIAL = ("FrameOfReferenceUID", "PositionReferenceIndicator", "ImagePositionPatient", "ImageOrientationPatient",
            "SliceLocation")


# Type 2 attributes of the Patient and General Study modules that the SEG copies from its source
# (highdicom reads each one): often removed by anonymisation, so an absent one is copied as empty
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _proxy(ds, leave_out=()):
    """A shallow copy of `ds` without the `leave_out` keywords, with every Type 2 attribute the SEG
    copies present (empty where the source has none); the source itself is never changed."""
    from pydicom.dataset import Dataset
    proxy = Dataset()
    proxy.file_meta = getattr(ds, "file_meta", Dataset())
    for elem in ds:
        if elem.keyword not in leave_out:
            proxy.add(elem)
    for keyword in _TYPE2_COPIED:
        if keyword not in proxy:
            setattr(proxy, keyword, "")
    return proxy


def _with_type2(ds):
    """`ds` itself when it has every Type 2 attribute the SEG copies, else a proxy that has them."""
    return ds if all(k in ds for k in _TYPE2_COPIED) else _proxy(ds)


def _unregistered(ds):
    """A proxy of `ds` without its frame of reference (the SEG then maps by referenced frame; the
    geometry stays in the source it references)."""
    return _proxy(ds, _SPATIAL)


def _declare_charset(seg) -> None:
    """A source without Specific Character Set whose names hold non-ASCII text (commonly Latin-1): the
    SEG declares ISO_IR 100 so that what it copies is valid in its own repertoire."""
    if "SpecificCharacterSet" in seg:
        return
    text_vrs = ("PN", "LO", "SH", "ST", "LT", "UT")
    if any(e.VR in text_vrs and any(ord(c) > 127 for c in str(e.value)) for e in seg if e.tag.group != 0x7FE0):
        seg.SpecificCharacterSet = "ISO_IR 100"


def _segmentation(hd, sources, pixels, several, fractional, segments, options, algorithm, series_number):
    return hd.seg.Segmentation(
        source_images=[_single_frame(sources[0])] if several else sources,
        pixel_array=pixels[:1] if several else pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="cmunext-edge",
        manufacturer_model_name=f"{algorithm.name} ({algorithm.variant})"[:64],
        software_versions=f"cmunext-edge {algorithm.version}"[:64],
        device_serial_number=socket.gethostname()[:64] or "unknown",
        content_label="CMUNEXT", content_description=f"{algorithm.name} {options.kind} segmentation"[:64],
        omit_empty_frames=False)


def _fill_conditional(seg, source) -> None:
    """Type 1C/2C attributes highdicom leaves out when the source lacks a plane orientation or a slice
    thickness: Patient Orientation (2C, from the source, else empty) and, when the source has it,
    Slice Thickness in the Pixel Measures. A source with Pixel Spacing but neither a slice thickness
    nor a frame of reference (a 2-D ultrasound or secondary capture image) gets no Pixel Measures:
    the SEG is not spatially registered then (it maps by referenced frame; the spacing stays in the
    source it references), and highdicom 0.28 cannot read a Pixel Measures without Slice Thickness."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PatientOrientation" not in seg and "PlaneOrientationSequence" not in shared:
        seg.PatientOrientation = source.get("PatientOrientation", "")
    measures = shared.get("PixelMeasuresSequence")
    if measures and "SliceThickness" not in measures[0] and source.get("SliceThickness") is not None:
        measures[0].SliceThickness = source.SliceThickness
    if measures and "SliceThickness" not in measures[0] and "FrameOfReferenceUID" not in seg:
        del shared.PixelMeasuresSequence


def _frame_refs(sources: list) -> list[tuple[str, str, int | None]]:
    """(SOP class, SOP instance, frame number or None) of every source frame, in order; frame numbers
    for every instance of a multi-frame SOP class (one frame too), none for single-frame classes."""
    refs = []
    for s in sources:
        n = max(1, int(s.get("NumberOfFrames", 1) or 1))
        numbered = n > 1 or _multi_frame_class(s.SOPClassUID)
        refs += [(s.SOPClassUID, s.SOPInstanceUID, k + 1 if numbered else None) for k in range(n)]
    return refs


def _single_frame(ds):
    """The header of `ds` as a single-frame Secondary Capture image: what highdicom accepts without a
    frame of reference. Only its patient/study/series/equipment attributes reach the SEG; every
    reference to the source is rewritten by `_all_frames` with the source's own SOP class."""
    proxy = _proxy(ds, ("PixelData", "NumberOfFrames", "FrameIncrementPointer", "FrameTime", "SOPClassUID"))
    proxy.SOPClassUID = SECONDARY_CAPTURE
    return proxy


def _all_frames(seg, refs, pixels: np.ndarray, fractional: bool) -> None:
    """Extend highdicom's one-frame SEG to every source frame, for sources without a frame of reference
    (highdicom 0.28 writes only one frame then): one SEG frame per (segment, source frame), each
    referencing its source instance and frame, indexed by segment and Temporal Position Index."""
    import copy
    from pydicom.dataset import Dataset
    from pydicom.pixels import pack_bits
    template = seg.PerFrameFunctionalGroupsSequence[0]
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" in shared:
        del shared.SegmentIdentificationSequence
    items, planes = [], []
    for s in range(pixels.shape[3]):
        for i, (sop_class, sop_uid, frame_no) in enumerate(refs):
            item = copy.deepcopy(template)
            src = item.DerivationImageSequence[0].SourceImageSequence[0]
            src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID = sop_class, sop_uid
            if frame_no is not None:
                src.ReferencedFrameNumber = frame_no
            ident = Dataset()
            ident.ReferencedSegmentNumber = s + 1
            item.SegmentIdentificationSequence = [ident]
            content = item.FrameContentSequence[0]
            content.DimensionIndexValues = [s + 1, i + 1]
            content.TemporalPositionIndex = i + 1
            items.append(item)
            planes.append(pixels[i, :, :, s])
    seg.PerFrameFunctionalGroupsSequence = items
    dim = copy.deepcopy(seg.DimensionIndexSequence[0])
    dim.DimensionIndexPointer, dim.FunctionalGroupPointer = 0x00209128, 0x00209111
    dim.DimensionDescriptionLabel = "Source Frame"
    seg.DimensionIndexSequence.append(dim)
    seg.NumberOfFrames = len(items)
    stack = np.stack(planes)
    data = (np.rint(stack * 255).astype(np.uint8).tobytes() if fractional
            else pack_bits(stack.astype(np.uint8).ravel()))
    seg.PixelData = data + (b"\0" if len(data) % 2 else b"")
    instances = {}
    for sop_class, sop_uid, _ in refs:
        instances.setdefault(sop_uid, sop_class)
    refd = []
    for sop_uid, sop_class in instances.items():
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_uid
        refd.append(ref)
    seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence = refd
    seg.SourceImageSequence = copy.deepcopy(refd)


def _code(hd, triple):
    value, scheme, meaning = triple
    return hd.sr.CodedConcept(value, scheme, meaning)


def read_back(path, sources: list) -> np.ndarray:
    """A written SEG's masks per source frame -> (frames, rows, cols, segments), via highdicom."""
    hd = require("highdicom")
    seg = hd.seg.segread(str(path))
    if len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1:
        n = int(sources[0].NumberOfFrames)
        return seg.get_pixels_by_source_frame(sources[0].SOPInstanceUID, list(range(1, n + 1)),
                                              combine_segments=False, rescale_fractional=True)
    return seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], combine_segments=False,
                                             rescale_fractional=True)
