"""Request bytes → images and label maps, safely.

Every input is untrusted. Before any pixel is decoded the size is read from the file header
(PNG ``IHDR``, JPEG ``SOF`` via Pillow's lazy open, TIFF IFDs via tifffile) and checked against a
pixel limit, so a small file that would expand to gigabytes (a "decompression bomb") is refused
with :class:`~sslzoo.errors.TooLargeError` (HTTP 413). Decoding itself goes through
:func:`sslzoo.data.io.read_image` / :func:`~sslzoo.data.io.read_label_map`; any decoder failure
(garbage, truncated file, unsupported codec) becomes a :class:`~sslzoo.errors.DataError` (400).

Images decode to what a viewer shows: the EXIF orientation tag (JPEG, PNG, TIFF) is applied, so
the label map lines up with the picture on screen; CMYK (and YCCK, which libjpeg hands over as
CMYK) is converted to sRGB through the embedded ICC profile when there is one (Pillow's
ImageCms), else by Pillow's own CMYK → RGB conversion. 16-bit and alpha are handled by
:func:`sslzoo.data.io.read_image` as before. Label maps and masks are never re-oriented.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings

import numpy as np

from sslzoo.data.io import read_image, read_label_map
from sslzoo.errors import DataError, SslzooError, TooLargeError

#: Default pixel limit (height x width) per image; override with the ``SSLZOO_MAX_PIXELS`` environment variable.
DEFAULT_MAX_PIXELS = 50_000_000
SUPPORTED = "PNG, JPEG or TIFF"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def max_pixels_from_env() -> int:
    """The pixel limit: ``SSLZOO_MAX_PIXELS`` when set (a positive integer), else :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get("SSLZOO_MAX_PIXELS")
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        from sslzoo.errors import ConfigError

        raise ConfigError(f"SSLZOO_MAX_PIXELS must be a positive integer, got {raw!r}")
    return value


def sniff_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"tiff"`` from the magic bytes, or ``None``."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    return None


def _require_bytes(data: object, name: str) -> bytes:
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise DataError(f"{name}: expected binary image data, got {type(data).__name__}; send the file's bytes")
    if not data:
        raise DataError(
            f"{name}: empty body; send a {SUPPORTED} file as the request body (Content-Type image/png, "
            "image/jpeg, image/tiff or application/octet-stream) or as multipart field 'image'"
        )
    return data


def _tiff_pixels(shape: tuple[int, ...]) -> int:
    """Pixels of a TIFF series shape, not counting one channel axis (first or last, 1..4 samples)."""
    dims = list(shape)
    if len(dims) >= 3 and dims[-1] in (1, 2, 3, 4):
        dims = dims[:-1]
    elif len(dims) >= 3 and dims[0] in (1, 2, 3, 4):
        dims = dims[1:]
    return math.prod(dims)


def header_pixels(data: bytes, name: str = "image") -> tuple[int, tuple[int, ...]]:
    """Pixel count and shape from the header alone (no pixel data decoded)."""
    kind = sniff_format(data)
    if kind is None:
        raise DataError(f"{name}: not a {SUPPORTED} file (starts with {data[:8]!r}); send one of those formats")
    try:
        if kind == "png":
            if len(data) < 24 or data[12:16] != b"IHDR":
                raise DataError(f"{name}: truncated PNG header; send the complete file")
            width, height = struct.unpack(">II", data[16:24])
            return width * height, (height, width)
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                if not tif.series:
                    raise DataError(f"{name}: TIFF without image data")
                shape = tuple(int(s) for s in tif.series[0].shape)
            return _tiff_pixels(shape), shape
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        return width * height, (height, width)
    except SslzooError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "DecompressionBombError":
            raise TooLargeError(f"{name}: {exc}") from exc
        raise DataError(f"{name}: cannot read the {kind.upper()} header ({exc}); send a complete, valid file") from exc


def check_pixels(data: bytes, max_pixels: int | None = None, name: str = "image") -> tuple[int, ...]:
    """Raise :class:`TooLargeError` when the header announces more than ``max_pixels`` pixels; returns the shape."""
    limit = max_pixels if max_pixels is not None else max_pixels_from_env()
    pixels, shape = header_pixels(data, name)
    if pixels > limit:
        raise TooLargeError(
            f"{name}: {pixels:,} pixels (shape {shape}) exceed the limit of {limit:,}; "
            "send a smaller image or crop it (the server's limit is set by SSLZOO_MAX_PIXELS)"
        )
    if pixels == 0:
        raise DataError(f"{name}: the header announces an empty image (shape {shape})")
    return shape


def _decode(reader, data: object, max_pixels: int | None, name: str) -> np.ndarray:
    data = _require_bytes(data, name)
    check_pixels(data, max_pixels, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reader(data)
    except SslzooError as exc:
        raise type(exc)(str(exc).replace("<bytes>", name, 1)) from exc
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{name}: cannot decode ({detail}); send a complete {SUPPORTED} file") from exc


#: EXIF orientation → the numpy operation that shows the image upright (Pillow's ``exif_transpose`` table).
_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirror left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1],  # mirror top-bottom
    5: lambda a: np.swapaxes(a, 0, 1),  # transpose
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],  # transverse
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
}


def _view_properties(data: bytes) -> tuple[int, str | None, bytes | None]:
    """``(EXIF orientation, Pillow mode, ICC profile)`` from the header (no pixels); ``(1, None, None)`` if unknown."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                orientation = int(im.getexif().get(0x0112, 1) or 1)
                return (orientation if orientation in _ORIENT else 1), im.mode, im.info.get("icc_profile")
    except Exception:
        return 1, None, None


def cmyk_to_rgb(data: bytes, icc_profile: bytes | None) -> np.ndarray:
    """A CMYK image (JPEG, YCCK JPEG, TIFF) as sRGB ``uint8`` through its ICC profile, else Pillow's conversion."""
    from PIL import Image, ImageCms

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if icc_profile:
            try:
                source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
                target = ImageCms.createProfile("sRGB")
                converted = ImageCms.profileToProfile(im, source, target, outputMode="RGB")
                if converted is not None:
                    return np.asarray(converted)
            except (ImageCms.PyCMSError, OSError, ValueError):
                pass  # a broken profile: fall back to the plain conversion
        return np.asarray(im.convert("RGB"))


def _read_viewer_image(data: bytes) -> np.ndarray:
    orientation, mode, icc = _view_properties(data)
    image = cmyk_to_rgb(data, icc) if mode == "CMYK" else read_image(data)
    if orientation != 1:
        image = np.ascontiguousarray(_ORIENT[orientation](image))
    return image


def decode_image(data: object, max_pixels: int | None = None, name: str = "image") -> np.ndarray:
    """Decode PNG/JPEG/TIFF bytes (grey, RGB, RGBA, CMYK, 8/16-bit) to upright ``uint8`` RGB ``(H, W, 3)``."""
    return _decode(_read_viewer_image, data, max_pixels, name)


def decode_label_map(data: object, max_pixels: int | None = None, name: str = "mask") -> np.ndarray:
    """Decode an integer label map / binary mask (PNG or TIFF) to ``int64`` ``(H, W)``."""
    return _decode(read_label_map, data, max_pixels, name)
