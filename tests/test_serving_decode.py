"""Decoding untrusted request bytes: formats, modes, pixel limit (header checked first), broken input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from sslzoo.errors import DataError, TooLargeError
from sslzoo.serving.decode import check_pixels, decode_image, decode_label_map, header_pixels, sniff_format


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buffer, array, **kwargs)
    else:
        Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose IHDR announces width x height, followed by one tiny compressed row: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_lossless_rgb_round_trip(rgb, fmt):
    decoded = decode_image(_encode(rgb, fmt))
    assert decoded.dtype == np.uint8 and decoded.shape == (37, 53, 3)
    np.testing.assert_array_equal(decoded, rgb)


def test_jpeg_decodes_close_to_the_original(rgb):
    smooth = np.repeat(np.linspace(0, 255, 53, dtype=np.uint8)[None, :, None], 37, 0).repeat(3, 2)
    decoded = decode_image(_encode(smooth, "JPEG", quality=95))
    assert decoded.shape == (37, 53, 3)
    assert np.abs(decoded.astype(int) - smooth.astype(int)).mean() < 3


def test_rgba_drops_alpha_and_grey_is_replicated(rgb):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode_image(_encode(rgba, "PNG")), rgb)
    grey = rgb[..., 0]
    decoded = decode_image(_encode(grey, "PNG"))
    assert decoded.shape == (37, 53, 3)
    np.testing.assert_array_equal(decoded[..., 2], grey)


def test_16bit_tiff_is_rescaled_to_8bit():
    deep = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    decoded = decode_image(_encode(deep, "TIFF"))
    assert decoded.dtype == np.uint8 and int(decoded.max()) == round(int(deep.max()) * 255 / 65535)


def test_large_image_decodes(rgb):
    big = np.zeros((1000, 1000, 3), np.uint8)
    big[::7] = 200
    assert decode_image(_encode(big, "PNG")).shape == (1000, 1000, 3)


def test_header_is_read_without_decoding(rgb):
    assert header_pixels(_encode(rgb, "PNG"))[1] == (37, 53)
    assert header_pixels(_encode(rgb, "JPEG"))[1] == (37, 53)
    assert header_pixels(_encode(rgb, "TIFF"))[0] == 37 * 53
    assert sniff_format(b"GIF89a....") is None


def test_png_bomb_is_refused_before_decoding():
    bomb = _png_header_only(60_000, 60_000)
    assert len(bomb) < 200
    with pytest.raises(TooLargeError, match="exceed the limit") as info:
        decode_image(bomb)
    assert info.value.http_status == 413


def test_pixel_limit_is_configurable(rgb, monkeypatch):
    data = _encode(rgb, "PNG")
    with pytest.raises(TooLargeError):
        decode_image(data, max_pixels=37 * 53 - 1)
    assert decode_image(data, max_pixels=37 * 53).shape == (37, 53, 3)
    monkeypatch.setenv("SSLZOO_MAX_PIXELS", "100")
    with pytest.raises(TooLargeError, match="SSLZOO_MAX_PIXELS"):
        check_pixels(data)


def test_tiff_and_jpeg_bombs_are_refused():
    # a TIFF that declares a 20000 x 20000 uint8 page but stores almost nothing (compressed zeros)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((20_000, 20_000), np.uint8), compression="zlib", tile=(1024, 1024))
    with pytest.raises(TooLargeError):
        decode_image(buffer.getvalue(), max_pixels=10_000_000)
    # a JPEG whose SOF0 segment claims 65000 x 65000
    jpeg = bytearray(_encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    with pytest.raises(TooLargeError):
        decode_image(bytes(jpeg))


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "empty body"),
        (b"this is not an image at all", "not a PNG, JPEG or TIFF"),
        (b"GIF89a\x01\x00\x01\x00", "not a PNG, JPEG or TIFF"),
        (b"\x89PNG\r\n\x1a\n\x00", "truncated PNG header"),
        ("text", "expected binary image data"),
    ],
)
def test_bad_payloads_are_data_errors(payload, message):
    with pytest.raises(DataError, match=message) as info:
        decode_image(payload)
    assert info.value.http_status == 400


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_truncated_files_are_data_errors(rgb, fmt):
    data = _encode(rgb, fmt)
    with pytest.raises(DataError, match="image"):
        decode_image(data[: len(data) // 2])


def test_label_maps_keep_16bit_ids_and_refuse_colour():
    labels = np.zeros((40, 50), np.uint16)
    labels[5:10, 5:10] = 300
    labels[20:30, 20:40] = 2
    decoded = decode_label_map(_encode(labels, "PNG"), name="mask_1")
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, labels)
    colour = np.random.default_rng(1).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="mask_1.*one channel"):
        decode_label_map(_encode(colour, "PNG"), name="mask_1")
    with pytest.raises(DataError, match="not integer"):
        decode_label_map(_encode(np.full((4, 4), 0.5, np.float32), "TIFF"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_a_viewer(rgb, orientation):
    """The decoded image equals what Pillow's exif_transpose (what viewers do) shows, for every EXIF orientation."""
    from PIL import ImageOps

    small = np.ascontiguousarray(rgb[:20, :30])
    for fmt in ("PNG", "JPEG"):
        im = Image.fromarray(small)
        exif = im.getexif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        im.save(buffer, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
        data = buffer.getvalue()
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        decoded = decode_image(data)
        assert decoded.shape == expected.shape and np.array_equal(decoded, expected), (fmt, orientation)
    if orientation in (5, 6, 7, 8):
        assert decoded.shape[:2] == (30, 20)


def test_cmyk_jpeg_decodes_to_the_right_colours(rgb):
    """A CMYK JPEG (as print workflows and some scanners write) must not be read as RGB + alpha."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG", quality=95)
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "CMYK"
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - rgb).mean() < 4


def test_label_maps_are_not_reoriented():
    labels = np.zeros((10, 20), np.uint8)
    labels[2:4, 3:9] = 1
    im = Image.fromarray(labels)
    exif = im.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", exif=exif.tobytes())
    assert np.array_equal(decode_label_map(buffer.getvalue()), labels)


# ------------------------------------------------------------------ pinned by the mutation run (docs/mutation.md)
def test_every_error_names_the_field_it_is_about(rgb, monkeypatch):
    """A multipart request has several files: the message must say which one was wrong (``name``)."""
    cases = [
        (lambda: decode_image("text", name="scan.png"), DataError, "scan.png: expected binary image data, got str"),
        (lambda: decode_image(b"", name="scan.png"), DataError, "scan.png: empty body; send a PNG, JPEG or TIFF"),
        (
            lambda: decode_image(b"BM....", name="scan.bmp"),
            DataError,
            r"scan.bmp: not a PNG, JPEG or TIFF file \(starts with b'BM....'\)",
        ),
        (
            lambda: decode_label_map(_encode(rgb, "PNG"), max_pixels=10, name="mask.png"),
            TooLargeError,
            "mask.png: 1,961 pixels",
        ),
        (
            lambda: decode_image(_png_header_only(0, 5), name="zero.png"),
            DataError,
            r"zero.png: the header announces an empty image \(shape \(5, 0\)\)",
        ),
        (lambda: decode_image(_encode(rgb, "PNG")[:23], name="cut.png"), DataError, "cut.png: truncated PNG header"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    with pytest.raises(DataError, match=r"x.tif: TIFF without image data"):
        header_pixels(b"II*\x00" + b"\xff" * 12, name="x.tif")
    with pytest.raises(DataError, match=r"x.tif: cannot read the TIFF header \(suspicious number of tags"):
        header_pixels(b"II*\x00\x08\x00\x00\x00\xff\xff", name="x.tif")


def test_header_pixels_are_width_times_height_for_each_format_and_tiff_layout():
    wide = np.zeros((3, 70, 5), np.uint8)  # a TIFF stored channels-first: 3 planes of 70 x 5
    assert header_pixels(_encode(wide, "TIFF")) == (70 * 5, (3, 70, 5))
    for shape in [(70, 5, 1), (70, 5, 2), (70, 5, 3), (70, 5, 4), (2, 70, 5), (4, 70, 5)]:
        assert header_pixels(_encode(np.zeros(shape, np.uint8), "TIFF"))[0] == 70 * 5, shape
    assert header_pixels(_encode(np.zeros((6, 70, 5), np.uint8), "TIFF"))[0] == 6 * 70 * 5  # 6: not a channel axis
    assert header_pixels(_encode(np.zeros((70, 5), np.uint8), "TIFF"))[0] == 350
    for fmt in ("PNG", "JPEG"):
        assert header_pixels(_encode(np.zeros((70, 5, 3), np.uint8), fmt)) == (350, (70, 5)), fmt
    exact = _png_header_only(7, 3)[:24]  # the 8-byte magic + IHDR up to width/height: enough for the header
    assert header_pixels(exact) == (21, (3, 7))
    assert header_pixels(_png_header_only(3_000_000_000, 1)[:24])[0] == 3_000_000_000  # unsigned 32-bit width
    assert sniff_format(_encode(np.zeros((4, 4, 3), np.uint8), "JPEG")) == "jpeg"
    assert sniff_format(_encode(np.zeros((4, 4), np.uint8), "TIFF")) == "tiff"


def test_pixel_limit_variable_accepts_1_and_refuses_0_and_words(monkeypatch):
    from sslzoo.errors import ConfigError
    from sslzoo.serving.decode import max_pixels_from_env

    monkeypatch.setenv("SSLZOO_MAX_PIXELS", "1")
    assert max_pixels_from_env() == 1
    for bad in ("0", "-5", "lots"):
        monkeypatch.setenv("SSLZOO_MAX_PIXELS", bad)
        with pytest.raises(ConfigError, match=f"SSLZOO_MAX_PIXELS must be a positive integer, got '{bad}'"):
            max_pixels_from_env()
    monkeypatch.setenv("SSLZOO_MAX_PIXELS", "20")
    with pytest.raises(TooLargeError):
        decode_label_map(_encode(np.zeros((5, 5), np.uint8), "PNG"))  # the variable applies to masks too
    assert decode_label_map(_encode(np.zeros((4, 5), np.uint8), "PNG")).shape == (4, 5)


def test_an_out_of_range_exif_orientation_is_ignored(rgb):
    im = Image.fromarray(np.ascontiguousarray(rgb[:20, :30]))
    exif = im.getexif()
    exif[0x0112] = 9  # not an EXIF orientation
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", exif=exif.tobytes())
    assert np.array_equal(decode_image(buffer.getvalue()), rgb[:20, :30])


def test_default_field_names_and_decoder_failures_are_in_the_message(rgb):
    with pytest.raises(DataError, match=r"^image: empty body"):
        decode_image(b"")
    with pytest.raises(DataError, match=r"^mask: empty body"):
        decode_label_map(b"")
    with pytest.raises(DataError, match=r"^image: not a PNG"):
        check_pixels(b"nope")
    with pytest.raises(DataError, match=r"^image: not a PNG"):
        header_pixels(b"nope")
    png = _encode(rgb, "PNG")
    cut = png[: len(png) // 2]  # header intact, pixel data cut: the decoder itself fails
    with pytest.raises(DataError, match=r"^half.png: cannot decode as PNG, JPEG or TIFF \(image file is truncated\)"):
        decode_image(cut, name="half.png")
    with pytest.raises(DataError, match=r"^m.png: a label map must have one channel") as info:
        decode_label_map(_encode(rgb, "PNG"), name="m.png")
    assert "<bytes>" not in str(info.value)


def test_bytearray_bodies_invalid_orientation_0_and_pillow_unreadable_tiffs(rgb):
    png = _encode(rgb, "PNG")
    assert np.array_equal(decode_image(bytearray(png)), rgb) and np.array_equal(decode_image(memoryview(png)), rgb)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 0  # invalid: treated as "upright", not as a mirror
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", exif=exif.tobytes())
    assert np.array_equal(decode_image(buffer.getvalue()), rgb)
    # a float32 RGB TIFF: Pillow cannot open it (so no orientation is read); tifffile decodes it, not mirrored
    from sslzoo.data.io import read_image

    data = _encode(rgb.astype(np.float32) / 255, "TIFF")
    assert np.array_equal(decode_image(data), read_image(data))


def test_a_pillow_decompression_bomb_error_keeps_the_field_name():
    jpeg = bytearray(_encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    with pytest.raises(TooLargeError, match=r"^big.jpg: .*(pixels|decompression bomb)"):
        header_pixels(bytes(jpeg), name="big.jpg")
