"""Work limits per request: what one request may cost in memory and time, each answered with a 413 naming it.

Every limit is an environment variable read by the front and by the TorchServe workers (which
inherit ``sslzoo serve``'s environment); ``sslzoo serve`` sets ``SSLZOO_MAX_PIXELS`` from
``--max-pixels`` and ``SSLZOO_MAX_BODY_BYTES`` from ``--max-body-mb``.

=============================== ================ ========================================================
variable                        default          bounds
=============================== ================ ========================================================
``SSLZOO_MAX_BODY_BYTES``       104857600        request body (100 MiB), counted while it streams in
``SSLZOO_MAX_PIXELS``           50000000         pixels (H x W) of one image, read from its header
``SSLZOO_MAX_ASPECT_RATIO``     100              long side / short side of an image to segment
``SSLZOO_MAX_TILE_PIXELS``      2 x max pixels   tiles x tile_size² of one segmentation (tiled work)
``SSLZOO_EVAL_MAX_PIXELS``      100000000        pixels of all images of one evaluation request
``SSLZOO_ARCHIVE_MAX_MEMBERS``  2000             files in an evaluation zip
``SSLZOO_ARCHIVE_MAX_BYTES``    268435456        uncompressed size of the zip's files (from its directory)
=============================== ================ ========================================================

The tile budget is what bounds a thin image: a 1 x 49,000,000 strip has few pixels but needs
~255,000 tiles of 256², i.e. 16.7 G tile pixels; it is refused from its header in microseconds.
A square image at the pixel limit needs ~1.8 x its pixels of tile work with the zoo's 256 px
tiles and 64 px overlap, hence the default of twice the pixel limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from sslzoo.errors import ConfigError, TooLargeError

DEFAULT_MAX_BODY_BYTES = 100 * 1024**2
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_ASPECT_RATIO = 100.0
DEFAULT_EVAL_MAX_PIXELS = 100_000_000
DEFAULT_ARCHIVE_MAX_MEMBERS = 2000
DEFAULT_ARCHIVE_MAX_BYTES = 256 * 1024**2


def _env_number(name: str, default: float, integer: bool = True) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name} must be a positive {'integer' if integer else 'number'}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module docstring for their meaning and variables)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    max_tile_pixels: int = 2 * DEFAULT_MAX_PIXELS
    eval_max_pixels: int = DEFAULT_EVAL_MAX_PIXELS
    archive_max_members: int = DEFAULT_ARCHIVE_MAX_MEMBERS
    archive_max_bytes: int = DEFAULT_ARCHIVE_MAX_BYTES

    @classmethod
    def from_env(cls, max_pixels: int | None = None) -> Limits:
        """Limits from the environment; ``max_pixels`` (e.g. a model-store entry's) wins over the variable."""
        pixels = int(max_pixels or _env_number("SSLZOO_MAX_PIXELS", DEFAULT_MAX_PIXELS))
        return cls(
            max_body_bytes=int(_env_number("SSLZOO_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
            max_pixels=pixels,
            max_aspect_ratio=float(_env_number("SSLZOO_MAX_ASPECT_RATIO", DEFAULT_MAX_ASPECT_RATIO, integer=False)),
            max_tile_pixels=int(_env_number("SSLZOO_MAX_TILE_PIXELS", 2 * pixels)),
            eval_max_pixels=int(_env_number("SSLZOO_EVAL_MAX_PIXELS", DEFAULT_EVAL_MAX_PIXELS)),
            archive_max_members=int(_env_number("SSLZOO_ARCHIVE_MAX_MEMBERS", DEFAULT_ARCHIVE_MAX_MEMBERS)),
            archive_max_bytes=int(_env_number("SSLZOO_ARCHIVE_MAX_BYTES", DEFAULT_ARCHIVE_MAX_BYTES)),
        )


def tiles_along(length: int, size: int, overlap: int) -> int:
    """Windows along one axis of :func:`sslzoo.data.tiling.tile_grid`: 1 if ``length <= size``, else
    ``ceil((length - size) / (size - overlap)) + 1``."""
    if length <= size:
        return 1
    return math.ceil((length - size) / (size - overlap)) + 1


def check_segmentation_work(
    height: int, width: int, tile_size: int, tile_overlap: int, limits: Limits, name: str = "image"
) -> int:
    """Raise :class:`TooLargeError` when an image's aspect ratio or tiled work is over the limits; returns tiles.

    ``tile_overlap`` is the effective overlap (the segmenter uses ``min(overlap, size // 2)``).
    """
    ratio = max(height, width) / max(1, min(height, width))
    if ratio > limits.max_aspect_ratio:
        raise TooLargeError(
            f"{name}: {width}x{height} (WxH) has an aspect ratio of {ratio:,.0f}:1, over the limit of "
            f"{limits.max_aspect_ratio:g}:1 (SSLZOO_MAX_ASPECT_RATIO); crop it into pieces closer to square"
        )
    tiles = tiles_along(height, tile_size, tile_overlap) * tiles_along(width, tile_size, tile_overlap)
    work = tiles * tile_size * tile_size
    if work > limits.max_tile_pixels:
        raise TooLargeError(
            f"{name}: {width}x{height} (WxH) needs {tiles:,} tiles of {tile_size}x{tile_size} "
            f"({work:,} tile pixels), over the limit of {limits.max_tile_pixels:,} (SSLZOO_MAX_TILE_PIXELS); "
            "send a smaller image or crop it"
        )
    return tiles
