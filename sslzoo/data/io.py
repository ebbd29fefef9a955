"""Reading and writing images and label maps (PNG, JPEG, TIFF).

Images come back as ``uint8`` arrays of shape ``(H, W, 3)`` (RGB): grey is
replicated, alpha is dropped, 16-bit and float images are rescaled to 0..255.
Label maps come back as ``int64`` arrays of shape ``(H, W)``: 0 is background,
other values are object ids (semantic masks: 0 / non-zero).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sslzoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")

Source = str | Path | bytes


def _name(source: Source) -> str:
    return "<bytes>" if isinstance(source, bytes | bytearray) else str(source)


def _is_tiff(source: Source) -> bool:
    if isinstance(source, bytes | bytearray):
        return source[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    return Path(source).suffix.lower() in (".tif", ".tiff")


def _read_with_pillow(source: Source) -> np.ndarray:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source) as opened:
        opened.load()
        im: Image.Image = opened
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        return np.asarray(im)


def _read_tiff(source: Source) -> np.ndarray:
    """tifffile first (16/32-bit, float, multi-sample); Pillow when tifffile cannot decode the compression."""
    import tifffile

    try:
        return tifffile.imread(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)
    except (ValueError, NotImplementedError, KeyError) as exc:  # e.g. a codec that needs imagecodecs
        try:
            return _read_with_pillow(source)
        except (UnidentifiedImageError, OSError) as pil_exc:
            raise ValueError(f"{exc}; Pillow: {pil_exc}") from exc


def read_array(source: Source) -> np.ndarray:
    """Decode a PNG/JPEG/TIFF file or byte string to a numpy array, dtype kept."""
    name = _name(source)
    if not isinstance(source, bytes | bytearray) and not Path(source).is_file():
        raise DataError(f"{name}: no such file")
    try:
        arr = _read_tiff(source) if _is_tiff(source) else _read_with_pillow(source)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"{name}: cannot decode as PNG, JPEG or TIFF ({exc}); check that the file is a complete image"
        ) from exc
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first TIFF
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DataError(f"{name}: expected a 2-D image (H, W[, C]), got shape {arr.shape}")
    return arr


def to_rgb_uint8(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Convert grey / RGB / RGBA of any numeric dtype to ``uint8`` RGB ``(H, W, 3)``."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    elif arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise DataError(f"{name}: expected grey, RGB or RGBA, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = 65535 if arr.max(initial=0) > 255 else 255
        return (arr.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8)
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo >= 0.0 and hi <= 1.0:
        return (arr * 255.0).round().astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((arr - lo) * scale).round().clip(0, 255).astype(np.uint8)


def read_image(source: Source) -> np.ndarray:
    """Read an image as ``uint8`` RGB ``(H, W, 3)``."""
    return to_rgb_uint8(read_array(source), _name(source))


def read_label_map(source: Source) -> np.ndarray:
    """Read an instance label map or binary mask as ``int64`` ``(H, W)``.

    Accepts 8/16/32-bit integer PNG or TIFF, and float TIFFs whose values are whole
    numbers. RGB files are accepted only when the three channels are equal.
    """
    name = _name(source)
    arr = read_array(source)
    if arr.ndim == 3:
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.shape[-1] >= 3 and not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            raise DataError(
                f"{name}: a label map must have one channel (0 = background, 1..N = object ids), "
                f"got a colour image of shape {arr.shape}; save it as 8/16-bit greyscale"
            )
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer) and (not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))):
        raise DataError(
            f"{name}: label map is not integer (dtype {arr.dtype} with fractional values); "
            "save object ids as 8/16-bit integer PNG or TIFF"
        )
    out = arr.astype(np.int64)
    if out.min(initial=0) < 0:
        raise DataError(f"{name}: label map has negative values; ids must be 0 (background) or positive")
    return out


def write_label_map(path: str | Path, labels: np.ndarray) -> Path:
    """Write a label map as PNG: 8-bit when ids fit, else 16-bit (ids up to 65535)."""
    path = Path(path)
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    if labels.min(initial=0) < 0 or top > 65535:
        raise DataError(f"{path}: label ids must lie in 0..65535 to fit a 16-bit PNG, got max {top}")
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if top < 256 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(path)
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write a ``uint8`` RGB/grey image (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_rgb_uint8(np.asarray(image))).save(path)
    return path


def list_images(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
