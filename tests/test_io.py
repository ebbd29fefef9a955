import numpy as np
import pytest
import tifffile
from PIL import Image

from sslzoo.data.io import read_image, read_label_map, write_label_map
from sslzoo.errors import DataError


def test_label_map_roundtrip_8_and_16_bit(tmp_path):
    small = np.arange(12, dtype=np.int64).reshape(3, 4)
    big = small * 1000
    for arr in (small, big):
        p = write_label_map(tmp_path / "l.png", arr)
        np.testing.assert_array_equal(read_label_map(p), arr)
    assert Image.open(tmp_path / "l.png").mode.startswith("I")  # 16-bit for ids > 255


def test_float_tiff_with_fractions_is_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4), 0.5, dtype=np.float32))
    with pytest.raises(DataError, match="not integer"):
        read_label_map(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "w.tif", np.full((4, 4), 3.0, dtype=np.float32))
    assert read_label_map(tmp_path / "w.tif").max() == 3


def test_images_become_rgb_uint8(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 200
    Image.fromarray(rgba).save(tmp_path / "a.png")
    g, a = read_image(tmp_path / "g.png"), read_image(tmp_path / "a.png")
    assert g.shape == a.shape == (4, 4, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g[..., 2], grey)
    assert a[0, 0].tolist() == [0, 200, 0]


def test_garbage_and_missing_files_give_clear_errors(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode"):
        read_image(tmp_path / "x.png")
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(DataError, match="cannot decode"):
        read_image(b"\x89PNG\r\n\x1a\n truncated")


def test_compressed_tiff_reads_and_falls_back_to_pillow(tmp_path, monkeypatch):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "lzw.tif", rgb, compression="lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), rgb)

    def no_codec(*args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile, "imread", no_codec)
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), rgb)
