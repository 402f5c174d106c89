"""Image admission: dimensions from the header, checked against ONE pixel limit before decoding.

A 20000x20000 PNG is a few hundred KB on disk and gigabytes once decoded; decoders allocate
the whole raster first. `check_dimensions` (a file) and `check_bytes` (an in-memory body, e.g. a
cmunext-serve request) read width and height from the header of PNG, JPEG, BMP, TIFF and WebP
data (the formats OpenCV is asked to decode here) and refuse an image above `max_pixels`
(default DEFAULT_MAX_PIXELS, 40 megapixels: about 120 MB as 8-bit BGR, ten times a 4K
ultrasound frame). Data whose header is none of these, or whose header cannot be parsed, is
refused too: its size cannot be known before decoding. `check_pixels(width, height, frames)`
is the limit itself, for sources that know their size another way (a video's frame size, a
DICOM header's rows x columns x frames): every reader of the toolkit admits images through it.
A JPEG's frame header may follow any amount of APP (EXIF, ICC, XMP) data: the reader walks the
segments by their lengths, reading only each segment's 4-byte header (or 9 bytes of the frame
header), never the segment bodies.
"""
from __future__ import annotations

import struct

DEFAULT_MAX_PIXELS = 40_000_000
HEADER_BYTES = 1 << 16          # JPEG frame headers may follow large EXIF/ICC segments
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageSizeError(ValueError):
    """An image too large to decode, or whose size cannot be read from its header."""


class ImageTooLargeError(ImageSizeError):
    """An image whose header gives more pixels than the limit (HTTP 413 in cmunext-serve)."""


def _png(h: bytes):
    if len(h) >= 24 and h[12:16] == b"IHDR":
        return struct.unpack(">II", h[16:24])
    return None


def _jpeg(h: bytes, read_at):
    """Walk the marker segments (each read at its offset, bodies skipped) to the frame header."""
    i = 2
    for _ in range(1 << 16):                     # a bound on segments: no endless walk
        seg = h[i:i + 9] if i + 9 <= len(h) else read_at(i, 9)
        if len(seg) < 4 or seg[0] != 0xFF:
            return None
        marker = seg[1]
        if marker == 0xFF:                       # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:   # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):               # end of image / start of scan before a frame header
            return None
        (length,) = struct.unpack(">H", seg[2:4])
        if marker in _SOF:
            if len(seg) < 9:
                return None
            height, width = struct.unpack(">HH", seg[5:9])
            return width, height
        if length < 2:
            return None
        i += 2 + length
    return None


def _bmp(h: bytes):
    if len(h) < 26:
        return None
    (header_size,) = struct.unpack("<I", h[14:18])
    if header_size == 12:                        # OS/2 BITMAPCOREHEADER
        w, hh = struct.unpack("<HH", h[18:22])
    else:
        w, hh = struct.unpack("<ii", h[18:26])
    return abs(w), abs(hh)


def _tiff(h: bytes, data_len: int, read_at):
    endian = "<" if h[:2] == b"II" else ">"
    (ifd,) = struct.unpack(endian + "I", h[4:8])
    head = read_at(ifd, 2)
    if len(head) < 2:
        return None
    (count,) = struct.unpack(endian + "H", head)
    entries = read_at(ifd + 2, 12 * min(count, 4096))
    found = {}
    for k in range(len(entries) // 12):
        tag, typ = struct.unpack(endian + "HH", entries[12 * k:12 * k + 4])
        if tag in (256, 257):
            fmt = endian + ("H" if typ == 3 else "I")
            (found[tag],) = struct.unpack(fmt, entries[12 * k + 8:12 * k + 8 + struct.calcsize(fmt)])
    return (found[256], found[257]) if len(found) == 2 else None


def _webp(h: bytes):
    chunk = h[12:16]
    if chunk == b"VP8 " and len(h) >= 30:
        w, hh = struct.unpack("<HH", h[26:30])
        return w & 0x3FFF, hh & 0x3FFF
    if chunk == b"VP8L" and len(h) >= 25:
        b = h[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        hh = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, hh
    if chunk == b"VP8X" and len(h) >= 30:
        w = 1 + int.from_bytes(h[24:27], "little")
        hh = 1 + int.from_bytes(h[27:30], "little")
        return w, hh
    return None


def header_size(data: bytes, read_at=None) -> tuple[str, tuple[int, int] | None]:
    """(format, (width, height) or None) from the first bytes of an image file."""
    read_at = read_at or (lambda off, n: data[off:off + n])
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return "PNG", _png(data)
        if data.startswith(b"\xff\xd8"):
            return "JPEG", _jpeg(data, read_at)
        if data.startswith(b"BM"):
            return "BMP", _bmp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return "TIFF", _tiff(data, len(data), read_at)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return "WebP", _webp(data)
    except struct.error:
        return "damaged", None
    return "unknown", None


def check_pixels(width: int, height: int, frames: int = 1, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 what: str = "image") -> None:
    """The one pixel limit: ImageSizeError if `width` x `height` (x `frames`, for a multi-frame
    source decoded at once, e.g. a DICOM series) is empty or exceeds `max_pixels` (None: no limit).
    The message starts with `what` (a path, or "image")."""
    if width < 1 or height < 1 or frames < 1:
        raise ImageSizeError(f"{what}: header gives an empty image ({width}x{height}"
                             + (f"x{frames} frames)" if frames != 1 else ")"))
    total = width * height * frames
    if max_pixels is not None and total > max_pixels:
        size = f"{width}x{height}" + (f"x{frames} frames" if frames != 1 else "")
        got, limit = _megapixels(total, max_pixels)
        every = "; every frame counts, as its masks are held together" if frames != 1 else ""
        raise ImageTooLargeError(f"{what}: {size} = {got} megapixels exceeds the limit of {limit} megapixels "
                                 f"(raise it with --max-pixels / max_pixels=...{every}); not decoded")


def _megapixels(total: int, limit: int) -> tuple[str, str]:
    """Both counts in megapixels, with enough digits that a count over the limit never reads equal to it."""
    for digits in (1, 3, 6):
        got, lim = (f"{n / 1e6:.{digits}f}" for n in (total, limit))
        if got != lim:
            break
    if digits > 1:                        # the extra digits only, without trailing zeros
        got, lim = (t.rstrip("0").rstrip(".") for t in (got, lim))
    return got, lim


def _admit(kind: str, size, max_pixels: int | None, what: str) -> tuple[int, int]:
    if size is None:
        reason = ("not a readable image: not a supported image format (PNG, JPEG, BMP, TIFF, WebP)"
                  if kind == "unknown" else
                  f"not a readable image: {kind} header without a readable image size (damaged or truncated)")
        raise ImageSizeError(f"{what}: {reason}")
    check_pixels(size[0], size[1], 1, max_pixels, what)
    return size


def check_dimensions(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the image file at `path`, read from its header; ImageSizeError if the
    header gives no size or the image has more than `max_pixels` pixels (None: no limit)."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)

        def read_at(offset, n):
            fh.seek(offset)
            return fh.read(n)

        kind, size = header_size(head, read_at)
    return _admit(kind, size, max_pixels, str(path))


def check_bytes(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                what: str = "image") -> tuple[int, int]:
    """`check_dimensions` for an image held in memory (e.g. a request body): nothing is decoded."""
    kind, size = header_size(bytes(data[:HEADER_BYTES]), lambda off, n: bytes(data[off:off + n]))
    return _admit(kind, size, max_pixels, what)
