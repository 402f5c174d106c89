"""The preprocessing contract: image in, network tensor out, and logits back to a mask.

`PreprocessSpec` is frozen and serialisable; it travels inside every exported artifact.
The preset `official` reproduces the authors' validation pipeline bit for bit, quirk
included: OpenCV BGR input, INTER_LINEAR resize of the uint8 image, albumentations
`Normalize()` (ImageNet mean/std applied in BGR order, as the official code does), then
one more division by 255 (inputs end up in roughly [-0.0083, 0.0105]).

Channel order of in-memory arrays: a 3-channel array is taken to be BGR (OpenCV's
convention, what `cv2.imread` returns) and a 4-channel array BGRA, unless the caller
says `channel_order="rgb"` (then RGB / RGBA). 2-D arrays are grayscale and replicated
to three channels; alpha is dropped. 16-bit images are reduced to 8 bit by keeping the
high byte, which is what `cv2.imread(path)` in the official code does for 16-bit PNGs.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge._deps import MissingDependencyError
from cmunext_edge.core import dicom
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS, ImageSizeError, check_dimensions
from cmunext_edge.fileio import loads_json

_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
                  "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# DICOM files (core/dicom.py converts them to the contract; see docs/dicom.md)
DICOM_SUFFIXES = (".dcm", ".dicom")


class NonFiniteOutputError(ValueError):
    """The network's output holds NaN or inf: no mask is made from it (EdgeSegmenter refuses it)."""


class ImageReadError(ValueError):
    """An image file or array that cannot be used as network input."""


def _real(value) -> bool:
    """A finite real number (not a bool, a string or NaN/inf)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def naming(path, error) -> str:
    """The text of `error`, prefixed with `path` unless it names it already (every reported input
    names its file, also when the error came from an array check that never saw the path)."""
    text = str(error)
    return text if str(path) in text else f"{path}: {text}"


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn an image into network input and logits into a mask."""

    height: int = 256
    width: int = 256
    channel_order: str = "bgr"          # order the network was trained with
    interpolation: str = "linear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    max_pixel_value: float = 255.0
    extra_scale: float = 1.0 / 255.0     # the official dataset's second division by 255
    threshold: float = 0.5               # on sigmoid probability
    in_channels: int = 3
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        for key in ("height", "width", "in_channels"):
            value = getattr(self, key)
            if not (_real(value) and float(value).is_integer()):    # 256.0 too, as the C++ library reads it
                raise ValueError(f"{key} must be a whole number, got {value!r}")
            object.__setattr__(self, key, int(value))          # numpy scalars too: to_json writes it
        for key in ("max_pixel_value", "extra_scale", "threshold"):
            if not _real(getattr(self, key)):
                raise ValueError(f"{key} must be a finite number, got {getattr(self, key)!r}")
            object.__setattr__(self, key, float(getattr(self, key)))
        if not all(_real(v) for v in (*self.mean, *self.std)) or not all(v > 0 for v in self.std):
            raise ValueError(f"mean must hold finite numbers and std finite numbers above 0, got mean "
                             f"{tuple(self.mean)!r}, std {tuple(self.std)!r}")
        for key in ("mean", "std"):
            object.__setattr__(self, key, tuple(float(v) for v in getattr(self, key)))
        if self.max_pixel_value <= 0 or self.extra_scale <= 0:
            raise ValueError(f"max_pixel_value and extra_scale must be above 0, got {self.max_pixel_value} "
                             f"and {self.extra_scale}")
        for side in (self.height, self.width):
            if side <= 0 or side % 16:
                raise ValueError(f"network input size must be a positive multiple of 16 "
                                 f"(CMUNeXt has four 2x2 max-pools); got {self.height}x{self.width}")
        if self.channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {self.channel_order!r}")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError("mean and std need one value per input channel")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def with_size(self, height: int, width: int | None = None) -> "PreprocessSpec":
        return PreprocessSpec(**{**asdict(self), "height": height, "width": width or height})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> "PreprocessSpec":
        data = loads_json(text) if isinstance(text, str) else dict(text)
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing contract must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"preprocessing contract has unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        try:
            return cls(**data)                 # __post_init__ checks and converts each value
        except TypeError as exc:
            raise ValueError(f"preprocessing contract is invalid ({exc})") from None

    # --- image -> tensor -------------------------------------------------------
    def __call__(self, image, channel_order: str = "bgr") -> np.ndarray:
        """One image (path, pydicom Dataset or array) -> CHW float32 network input."""
        return self.preprocess(to_bgr_uint8(load_image(image) if is_image_source(image) else image,
                                            channel_order))

    def preprocess(self, bgr: np.ndarray) -> np.ndarray:
        """A BGR uint8 HxWx3 image -> CHW float32, exactly as the official pipeline."""
        img = bgr if self.channel_order == "bgr" else bgr[..., ::-1]
        if self.in_channels == 1:
            img = cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2GRAY)[..., None]
        img = cv2.resize(np.ascontiguousarray(img), (self.width, self.height),
                         interpolation=_INTERPOLATION[self.interpolation])
        if img.ndim == 2:
            img = img[..., None]
        return np.ascontiguousarray(self.normalize(img).transpose(2, 0, 1))

    def normalize(self, resized: np.ndarray) -> np.ndarray:
        """Channels-last uint8 (HxWxC or NxHxWxC, already at network size) -> float32, same layout.

        albumentations `Normalize` arithmetic in float32, then the extra scale."""
        mean = np.asarray(self.mean, np.float32) * np.float32(self.max_pixel_value)
        inv_std = np.float32(1.0) / (np.asarray(self.std, np.float32) * np.float32(self.max_pixel_value))
        out = (resized.astype(np.float32) - mean) * inv_std
        if self.extra_scale != 1.0:
            out = out / np.float32(1.0 / self.extra_scale)
        return out.astype(np.float32, copy=False)

    # --- logits -> mask ----------------------------------------------------------
    def postprocess(self, logits: np.ndarray, original_hw: tuple[int, int]):
        """CHW logits -> (probability HxWxC or HxW at original size, boolean mask)."""
        prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))
        prob = prob.transpose(1, 2, 0)
        h, w = original_hw
        if (h, w) != prob.shape[:2]:
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        if prob.ndim == 3 and prob.shape[2] == 1:
            prob = prob[..., 0]
        # row-major whatever the size: at network size (no resize) several classes were a transposed
        # view, so mask.ctypes.data / a buffer handed to C code held the classes planar, not HxWxC
        prob = np.ascontiguousarray(prob)
        return prob, prob > self.threshold


PRESETS: dict[str, PreprocessSpec] = {
    "official": PreprocessSpec(name="official"),
}


def get_preset(name: str) -> PreprocessSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def is_image_source(obj) -> bool:
    """A path or a pydicom Dataset (something `load_image` reads), not an array."""
    return isinstance(obj, (str, Path)) or dicom.is_dataset(obj)


def load_image(path, max_pixels: int | None = DEFAULT_MAX_PIXELS, frame: int | None = None) -> np.ndarray:
    """Decode an image file as the official code sees it (colour, EXIF-rotated), keeping 16 bit.

    Its size is read from the header first; above `max_pixels` it is refused, not decoded.
    A DICOM file (or pydicom Dataset) is converted to BGR uint8 (core/dicom.py); `frame` (0-based)
    picks a frame of a multi-frame object, which is refused without one."""
    if dicom.is_dataset(path) or (Path(path).is_file() and dicom.is_dicom_file(path)):
        try:
            return dicom.read_frame(path, frame, max_pixels)
        except dicom.DicomError as exc:
            raise ImageReadError(str(exc)) from None
        except MissingDependencyError as exc:
            raise ImageReadError(f"{path}: a DICOM file: {exc}") from None
    if frame not in (None, 0):
        raise ImageReadError(f"{path}: frame {frame}: only DICOM files have several frames here")
    if str(path) == "":
        raise ImageReadError("an empty string is not an image path")
    path = Path(path)
    if not path.is_file():
        what = ("broken symbolic link (its target is missing, or the links form a loop)" if path.is_symlink()
                else "a folder, not an image file (cmunext-predict takes folders)" if path.is_dir()
                else "not a regular file" if path.exists() else "no such file")
        raise ImageReadError(f"{path}: {what}")
    try:
        width, height = check_dimensions(path, max_pixels)
    except ImageSizeError as exc:
        raise ImageReadError(str(exc)) from None
    img = decode_image_bytes(np.fromfile(str(path), dtype=np.uint8))
    if img is None:
        raise ImageReadError(f"{path}: not a readable image: its header gives {width}x{height}, but its pixels "
                             "could not be decoded (truncated data, or a pixel format OpenCV does not read, "
                             "e.g. floating-point TIFF)")
    return img


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_image_bytes(data: np.ndarray) -> np.ndarray | None:
    """An encoded image (uint8 buffer) decoded as `cv2.imread` decodes it in the official code (colour,
    EXIF-rotated, 8 bit), except that a 16-bit PNG keeps its 16 bits: reduced to 8 bit by its high
    byte later (to_bgr_uint8), which is what cv2.imread does for PNG. Other 16-bit formats (TIFF)
    are decoded to 8 bit by OpenCV itself, which rounds there instead of keeping the high byte
    (6450 of 27000 values of a 16-bit TIFF differed by one grey level). None if not decodable."""
    if not data.size:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is not None and img.dtype != np.uint8 and bytes(data[:8]) != PNG_SIGNATURE:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return img


def to_bgr_uint8(image: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """Any supported array -> HxWx3 uint8 BGR (see the module docstring for the rules)."""
    if not isinstance(image, np.ndarray):
        if type(image).__name__ in ("Dataset", "FileDataset"):       # a Dataset without file_meta
            raise ImageReadError("a pydicom Dataset without file_meta: its transfer syntax is unknown; set "
                                 "ds.file_meta (pynetdicom: ds.file_meta = event.file_meta)")
        raise ImageReadError(f"expected an image path or a numpy array, got {type(image).__name__}"
                             f"{_type_hint(image)}")
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    if image.dtype.kind == "u" and image.dtype.itemsize == 2:      # uint16 in either byte order ('>u2' too)
        image = (image.astype(np.uint16) >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"image arrays must be uint8 or uint16, got {image.dtype} ({image.dtype.str}){_dtype_hint(image)}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ImageReadError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageReadError(f"empty image of shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    image = image[..., :3]
    if channel_order == "rgb":
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def _type_hint(image) -> str:
    """How to pass an object that is neither a path nor an array (bytes, a PIL image) as an image."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return ("; a file path goes in as str or pathlib.Path (os.fsdecode(path)), encoded image data "
                "(PNG/JPEG bytes) decoded first: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)")
    if type(image).__module__.split(".")[0] == "PIL":
        return ("; a PIL image is RGB: pass np.asarray(img.convert('RGB')) with channel_order='rgb' "
                "(convert first: a palette or 16-bit image's raw values are not its pixels)")
    return ""


def _dtype_hint(image: np.ndarray) -> str:
    """How to turn an array of another dtype into an image (its scale is the caller's to know)."""
    if image.dtype.kind == "f":
        return ("; its scale is not guessed: convert it first, from [0, 1] with (img * 255).round()"
                ".astype(np.uint8), from [0, 255] with img.round().astype(np.uint8)")
    if image.dtype.kind == "b":
        return "; a boolean array is a mask, not an image (as uint8: img.astype(np.uint8) * 255)"
    return "; convert it first, e.g. np.clip(img, 0, 255).astype(np.uint8)" if image.dtype.kind in "iu" else ""


def decode_truth_file(path, flags: int, what: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A ground-truth image file (mask or label image) decoded with OpenCV `flags`, its size checked
    from the header first; ImageReadError when it is missing, too large or not decodable."""
    if Path(path).is_file():
        try:
            check_dimensions(path, max_pixels)
        except ImageSizeError as exc:
            raise ImageReadError(str(exc)) from None
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else np.empty(0, np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a readable {what}")
    return image


def load_mask(path, size: tuple[int, int] | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Ground-truth mask as the official dataset reads it: grayscale, nearest resize, > 127. A mask
    that this reading would make empty although it marks something (0/1 values, a colour or palette
    mask, a 16-bit 0/1 mask, foreground only in the alpha channel) is an ImageReadError saying how
    to fix it: read as the official code reads it, it would silently score (or train) as background."""
    mask = decode_truth_file(path, cv2.IMREAD_GRAYSCALE, "mask", max_pixels)
    if int(mask.max()) <= 127:
        _check_mask_encoding(path, int(mask.max()))
    if size is not None:
        mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return mask.astype(np.float32) / 255.0 > 0.5


MASK_RULE = "masks mark foreground with values above 127 (0/255), as the official code reads them"


def _check_mask_encoding(path, top: int) -> None:
    """ImageReadError if a mask whose grey values are all <= 127 (`top` the largest) still marks
    something in the file: values 1..127 (0/1 masks, colour or palette masks), 16-bit low values,
    or foreground drawn only in the alpha channel. An all-black mask is a valid empty mask."""
    raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        return
    colour = raw.ndim == 3 and raw.shape[2] >= 3 and not (
        np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 1], raw[..., 2]))
    if top > 0:
        fix = ("a colour or palette mask: save the foreground white (255) on black" if colour
               else "a 0/1 (or 0/k) mask: multiply it by 255")
        raise ImageReadError(f"{path}: mask values are 0..{top}, none above 127, so it would be read as empty "
                             f"({MASK_RULE}); {fix}")
    grey = raw[..., :3] if raw.ndim == 3 else raw
    if raw.dtype != np.uint8 and int(grey.max()) > 0:
        raise ImageReadError(f"{path}: a {raw.dtype.itemsize * 8}-bit mask with values 0..{int(grey.max())}: read "
                             f"as 8 bit (its high byte) it is empty ({MASK_RULE}); save it as 8-bit 0/255")
    if raw.ndim == 3 and raw.shape[2] == 4 and raw[..., 3].min() != raw[..., 3].max():
        raise ImageReadError(f"{path}: the foreground is drawn only in the alpha channel, which masks are not "
                             f"read from ({MASK_RULE}); save it as white (255) on black without alpha")
