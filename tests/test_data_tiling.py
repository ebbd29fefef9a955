"""Tiling: the grid covers the image, extract → stitch round-trips, overlaps average."""

from __future__ import annotations

import numpy as np
import pytest

from sslzoo.data.tiling import Tile, extract_tiles, pad_to, stitch_tiles, tile_grid
from sslzoo.errors import ConfigError, DataError

SHAPES = [(1000, 1000), (300, 520), (100, 60), (256, 256), (257, 511), (40, 700)]


@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_grid_covers_every_pixel_and_stays_inside(height: int, width: int) -> None:
    grid = tile_grid(height, width, size=256, overlap=32)
    cover = np.zeros((height, width), dtype=int)
    for t in grid:
        assert t.y >= 0 and t.x >= 0 and t.y + t.h <= height and t.x + t.w <= width
        assert t.h == min(256, height) and t.w == min(256, width)
        cover[t.y : t.y + t.h, t.x : t.x + t.w] += 1
    assert cover.min() >= 1
    # the last row and column of tiles end flush with the border
    assert max(t.y + t.h for t in grid) == height and max(t.x + t.w for t in grid) == width


def test_grid_counts_and_overlap() -> None:
    assert len(tile_grid(1000, 1000, 256, overlap=0)) == 16
    assert len(tile_grid(256, 256, 256, overlap=0)) == 1
    assert tile_grid(100, 60, 256) == [Tile(0, 0, 100, 60)]
    ys = sorted({t.y for t in tile_grid(1000, 1000, 256, overlap=32)})
    assert ys == [0, 224, 448, 672, 744]
    steps = np.diff(ys)
    assert np.all(256 - steps >= 32)  # neighbours overlap by at least `overlap`


@pytest.mark.parametrize(("height", "width"), SHAPES)
@pytest.mark.parametrize("channels", [None, 3])
def test_extract_then_stitch_round_trips_exactly(height: int, width: int, channels: int | None) -> None:
    rng = np.random.default_rng(height * 7 + width)
    shape = (height, width) if channels is None else (height, width, channels)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    tiles, grid = extract_tiles(image, size=256, overlap=32)
    assert tiles.shape == (len(grid), 256, 256, *shape[2:])
    for blend in ("linear", "mean"):
        assert np.array_equal(stitch_tiles(tiles, grid, height, width, blend=blend), image)
    as_float = stitch_tiles(tiles.astype(np.float32) / 255, grid, height, width)
    assert as_float.dtype == np.float32
    assert np.array_equal(as_float, image.astype(np.float32) / 255)


def test_small_image_is_reflect_padded() -> None:
    image = np.arange(5 * 4, dtype=np.int32).reshape(5, 4)
    tiles, grid = extract_tiles(image, size=8, overlap=2)
    assert grid == [Tile(0, 0, 5, 4)] and tiles.shape == (1, 8, 8)
    assert np.array_equal(tiles[0][:5, :4], image)
    assert np.array_equal(tiles[0][5:, :4], image[[3, 2, 1]])  # mirrored without repeating the edge
    assert pad_to(np.ones((1, 1, 3)), 4, 4).shape == (4, 4, 3)


def test_mean_blend_averages_overlaps() -> None:
    height, width = 10, 16
    grid = tile_grid(height, width, size=10, overlap=4)  # columns start at 0 and 6
    assert [t.x for t in grid] == [0, 6]
    tiles = np.stack([np.full((10, 10), 2.0), np.full((10, 10), 6.0)])
    out = stitch_tiles(tiles, grid, height, width, blend="mean")
    assert np.all(out[:, :6] == 2.0) and np.all(out[:, 10:] == 6.0)
    assert np.all(out[:, 6:10] == 4.0)


def test_linear_blend_moves_from_one_tile_to_the_next() -> None:
    grid = tile_grid(10, 16, size=10, overlap=4)
    tiles = np.stack([np.full((10, 10), 0.0), np.full((10, 10), 1.0)])
    out = stitch_tiles(tiles, grid, 10, 16, blend="linear")
    row = out[5]
    assert np.all(row[:6] == 0.0) and np.all(row[10:] == 1.0)
    overlap = row[6:10]
    assert np.all(np.diff(overlap) > 0) and np.all((overlap > 0) & (overlap < 1))
    assert np.allclose(overlap + overlap[::-1], 1.0)  # symmetric ramps


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        tile_grid(100, 100, size=64, overlap=64)
    with pytest.raises(DataError, match="grid"):
        stitch_tiles(np.zeros((2, 8, 8)), [Tile(0, 0, 8, 8)], 8, 8)
    with pytest.raises(DataError, match="cover"):
        stitch_tiles(np.zeros((1, 8, 8)), [Tile(0, 0, 8, 8)], 8, 12)
    with pytest.raises(ConfigError, match="blend"):
        stitch_tiles(np.zeros((1, 8, 8)), [Tile(0, 0, 8, 8)], 8, 8, blend="max")  # type: ignore[arg-type]
