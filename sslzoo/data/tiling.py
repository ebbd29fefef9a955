"""Large images into square tiles and predictions back into one image.

A tile grid covers every pixel of an ``H x W`` image with ``size x size`` windows whose
starts advance by ``stride = size - overlap``; the last window along each axis is moved
back to end flush with the border, so no tile reaches outside the image. An axis shorter
than ``size`` gets one window covering it (``h`` or ``w`` < ``size``); :func:`extract_tiles`
then reflect-pads that window to ``size`` (:func:`pad_to`).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from sslzoo.errors import ConfigError, DataError


class Tile(NamedTuple):
    """One window of a grid: rows ``y:y+h``, columns ``x:x+w`` of the image."""

    y: int
    x: int
    h: int
    w: int


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: 0, stride, 2*stride, ..., with the last flush at ``length - size``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return starts


def _check_geometry(height: int, width: int, size: int, overlap: int) -> None:
    if height < 1 or width < 1:
        raise DataError(f"cannot tile an empty image of {height}x{width} pixels")
    if size < 1:
        raise ConfigError(f"tile size must be a positive number of pixels, got {size}")
    if not 0 <= overlap < size:
        raise ConfigError(f"tile overlap must lie in 0..{size - 1} (below the tile size {size}), got {overlap}")


def tile_grid(height: int, width: int, size: int = 256, overlap: int = 32) -> list[Tile]:
    """Row-major grid of tiles covering an ``height x width`` image.

    Starts along an axis of length L are ``0, s, 2s, ...`` (``s = size - overlap``) while they
    leave room for a full tile, then ``L - size``; neighbouring tiles overlap by at least
    ``overlap`` pixels. An axis with ``L <= size`` has one tile of extent ``L``.
    A 1000x1000 image with ``size=256, overlap=0`` gives 4 x 4 = 16 tiles.
    """
    _check_geometry(height, width, size, overlap)
    stride = size - overlap
    rows = _starts(height, size, stride)
    cols = _starts(width, size, stride)
    h, w = min(height, size), min(width, size)
    return [Tile(y, x, h, w) for y in rows for x in cols]


#: ``np.pad`` modes :func:`pad_to` uses: mirrored borders for images, zeros for label maps.
PadMode = Literal["reflect", "constant", "edge", "symmetric"]


def pad_to(image: np.ndarray, height: int, width: int, mode: PadMode = "reflect") -> np.ndarray:
    """Pad ``image`` (H, W[, C]) at the bottom and right to at least ``height x width``.

    ``mode`` is any :func:`numpy.pad` mode (``reflect`` mirrors without repeating the edge
    pixel; numpy reflects repeatedly when the pad exceeds the image, and repeats a single row). An image that is
    already large enough is returned unchanged (no copy).
    """
    pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if pad_h == 0 and pad_w == 0:
        return image
    widths: list[tuple[int, int]] = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode=mode)


def extract_tiles(image: np.ndarray, size: int = 256, overlap: int = 32) -> tuple[np.ndarray, list[Tile]]:
    """Cut ``image`` (H, W[, C]) into tiles of shape ``(N, size, size[, C])`` along :func:`tile_grid`.

    Tiles of an image smaller than ``size`` are reflect-padded at the bottom/right; the grid
    keeps the unpadded extent (``Tile.h``, ``Tile.w``) so :func:`stitch_tiles` can crop it again.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise DataError(f"expected an image of shape (H, W) or (H, W, C), got shape {image.shape}")
    grid = tile_grid(image.shape[0], image.shape[1], size, overlap)
    padded = pad_to(image, size, size)
    tiles = np.stack([padded[t.y : t.y + size, t.x : t.x + size] for t in grid])
    return tiles, grid


def blend_window(h: int, w: int, ramp_y: int, ramp_x: int) -> np.ndarray:
    """Separable weight window ``(h, w)``: 1 in the centre, falling linearly towards the edges.

    Weight of row i: ``min(1, (min(i, h-1-i) + 1) / (ramp_y + 1))``, columns alike with ``ramp_x``;
    the window is the outer product. Every weight is > 0, so a pixel covered by one tile keeps its value.
    """

    def axis(n: int, ramp: int) -> np.ndarray:
        i = np.arange(n)
        return np.minimum(1.0, (np.minimum(i, n - 1 - i) + 1.0) / (ramp + 1.0))

    return np.outer(axis(h, ramp_y), axis(w, ramp_x))


def _grid_overlap(starts: list[int], extent: int) -> int:
    """Overlap of the first two windows along one axis (0 for a single window)."""
    return max(0, extent - (starts[1] - starts[0])) if len(starts) > 1 else 0


def stitch_tiles(
    tiles: np.ndarray,
    grid: list[Tile],
    height: int,
    width: int,
    blend: Literal["linear", "mean"] = "linear",
) -> np.ndarray:
    """Weighted average of overlapping tile predictions ``(N, S, S[, C])`` into ``(height, width[, C])``.

    ``out[p] = sum_k w_k(p) * tile_k(p) / sum_k w_k(p)`` over the tiles k covering pixel p, with
    ``w_k = 1`` (``mean``) or the :func:`blend_window` whose ramps are as wide as the overlap of
    the grid's first two rows/columns (``linear``), which hides seams. Only the ``Tile.h x Tile.w``
    part of each tile is used (padding is dropped). Accumulation is in float64; the result has the
    tiles' dtype (integers are rounded), so a tile-wise identity round-trips exactly for integer and
    float32 data (float64 data to within one unit in the last place).
    """
    tiles = np.asarray(tiles)
    if blend not in ("linear", "mean"):
        raise ConfigError(f"unknown blend {blend!r}; choose 'linear' or 'mean'")
    if len(tiles) != len(grid):
        raise DataError(f"got {len(tiles)} tiles for a grid of {len(grid)}; pass the grid from extract_tiles")
    if not grid:
        raise DataError("cannot stitch an empty list of tiles")
    if tiles.ndim not in (3, 4):
        raise DataError(f"expected tiles of shape (N, S, S) or (N, S, S, C), got {tiles.shape}")
    extra = tiles.shape[3:]
    total = np.zeros((height, width, *extra), dtype=np.float64)
    weight = np.zeros((height, width), dtype=np.float64)
    ramp_y = _grid_overlap(sorted({t.y for t in grid}), grid[0].h)
    ramp_x = _grid_overlap(sorted({t.x for t in grid}), grid[0].w)
    windows: dict[tuple[int, int], np.ndarray] = {}
    for tile, tile_grid_entry in zip(tiles, grid, strict=True):
        y, x, h, w = tile_grid_entry
        if h > tile.shape[0] or w > tile.shape[1]:
            raise DataError(f"tile {tile_grid_entry} is larger than the tiles given ({tile.shape[:2]})")
        if y < 0 or x < 0 or y + h > height or x + w > width:
            raise DataError(f"tile {tile_grid_entry} reaches outside the {height}x{width} image")
        win: np.ndarray | None
        if blend == "mean":
            win = np.ones((h, w))
        else:
            win = windows.get((h, w))
            if win is None:
                win = windows[(h, w)] = blend_window(h, w, ramp_y, ramp_x)
        part = tile[:h, :w].astype(np.float64)
        total[y : y + h, x : x + w] += part * win.reshape(win.shape + (1,) * len(extra))
        weight[y : y + h, x : x + w] += win
    if np.any(weight == 0):
        raise DataError("the tiles do not cover every pixel of the image; pass the grid from tile_grid")
    out = total / weight.reshape(weight.shape + (1,) * len(extra))
    if np.issubdtype(tiles.dtype, np.integer) or tiles.dtype == bool:
        out = np.rint(out)
    return out.astype(tiles.dtype)
