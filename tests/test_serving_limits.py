"""Work limits per request (sslzoo.serving.limits) and bounded, truthful answers of the services and adapter.

Each "Found" item of the serving-hardening issue is reproduced: thin images amplified into huge tile
stacks, zip members read before validation, no per-request pixel budget, probability masks silently
scored as binary, unbounded error bodies, a JSON-body hint that never fired.
"""

from __future__ import annotations

import io
import json
import struct
import time
import zipfile
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from sslzoo.data.tiling import tile_grid
from sslzoo.errors import ConfigError, DataError, TooLargeError
from sslzoo.serving.adapter import MAX_MESSAGE, error_body, field_list, image_of
from sslzoo.serving.limits import Limits, check_segmentation_work, tiles_along
from sslzoo.serving.services import EvaluationService, SegmentationService, binary_mask, choose_format


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG announcing width x height (grey, 8 bit): what a thin-strip attack sends."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class FakeSegmenter:
    """Records whether predict ran; the config carries the tiling the limits are computed from."""

    def __init__(self, tile_size: int = 256, tile_overlap: int = 64, task: str = "instance") -> None:
        self.config = SimpleNamespace(tile_size=tile_size, tile_overlap=tile_overlap, resize_to=None, task=task)
        self.calls = 0

    def predict(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.zeros(image.shape[:2], np.int32)


@pytest.mark.parametrize("length", [1, 100, 256, 257, 448, 449, 1000, 49_000])
def test_tile_count_matches_the_tiling_grid(length):
    grid = tile_grid(length, 300, size=256, overlap=64)
    assert tiles_along(length, 256, 64) * tiles_along(300, 256, 64) == len(grid)


def test_a_thin_strip_is_a_quick_413_not_a_huge_allocation():
    segmenter = FakeSegmenter()
    service = SegmentationService("nuclei", segmenter)
    for width in (49_000_000, 1_000_000, 100_000):
        start = time.perf_counter()
        with pytest.raises(TooLargeError, match="aspect ratio") as info:
            service.segment_bytes(_png_header(width, 1))
        assert time.perf_counter() - start < 1.0
        assert "SSLZOO_MAX_ASPECT_RATIO" in str(info.value)
    assert segmenter.calls == 0
    # within the aspect ratio but over the tile budget: refused from the header too
    limits = Limits(max_pixels=10**9, max_tile_pixels=50 * 256 * 256)
    with pytest.raises(TooLargeError, match="SSLZOO_MAX_TILE_PIXELS") as info:
        check_segmentation_work(2000, 2000, 256, 64, limits)
    assert "121 tiles" in str(info.value)
    assert check_segmentation_work(1000, 1000, 256, 64, Limits()) == 25


def test_a_square_image_at_the_pixel_limit_fits_the_default_tile_budget():
    side = int(Limits().max_pixels ** 0.5)
    assert check_segmentation_work(side, side, 256, 64, Limits()) > 1000


def test_limits_are_settable_by_environment(monkeypatch):
    monkeypatch.setenv("SSLZOO_MAX_ASPECT_RATIO", "3")
    monkeypatch.setenv("SSLZOO_EVAL_MAX_PIXELS", "1000")
    service = SegmentationService("nuclei", FakeSegmenter())
    with pytest.raises(TooLargeError, match="3:1"):
        service.segment_bytes(_png(np.zeros((10, 40, 3), np.uint8)))
    assert service.segment_bytes(_png(np.zeros((10, 30, 3), np.uint8))).content_type == "image/png"
    assert EvaluationService().limits.eval_max_pixels == 1000
    monkeypatch.setenv("SSLZOO_MAX_TILE_PIXELS", "-1")
    with pytest.raises(ConfigError, match="SSLZOO_MAX_TILE_PIXELS"):
        Limits.from_env()


def test_evaluation_has_a_total_pixel_budget_checked_on_the_headers(monkeypatch):
    monkeypatch.setenv("SSLZOO_EVAL_MAX_PIXELS", "5000")
    mask = _png(np.zeros((40, 40), np.uint8))  # 1,600 pixels each: 4 images = 6,400 > 5,000
    fields = {"task": b"semantic", "prediction_1": mask, "mask_1": mask, "prediction_2": mask, "mask_2": mask}
    with pytest.raises(TooLargeError, match="SSLZOO_EVAL_MAX_PIXELS") as info:
        EvaluationService().evaluate_fields(fields)
    assert "6,400 pixels in 4 images" in str(info.value)
    del fields["prediction_2"], fields["mask_2"]
    assert EvaluationService().evaluate_fields(fields).n_images == 1


def test_zip_members_are_checked_from_the_directory_before_any_is_read(monkeypatch):
    monkeypatch.setenv("SSLZOO_ARCHIVE_MAX_BYTES", "100000")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("masks/a.png", b"\0" * 80_000)
        z.writestr("predictions/a.png", b"\0" * 80_000)
    assert len(archive.getvalue()) < 2000  # a small zip that expands a lot

    def refuse(*args, **kwargs):
        raise AssertionError("a member was read before the sizes were checked")

    monkeypatch.setattr(zipfile.ZipFile, "read", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)
    with pytest.raises(TooLargeError, match="160,000 bytes, over the limit of 100,000") as info:
        EvaluationService().evaluate_archive(archive.getvalue(), task="semantic")
    assert "SSLZOO_ARCHIVE_MAX_BYTES" in str(info.value)
    monkeypatch.setenv("SSLZOO_ARCHIVE_MAX_MEMBERS", "1")
    with pytest.raises(TooLargeError, match="SSLZOO_ARCHIVE_MAX_MEMBERS"):
        EvaluationService().evaluate_archive(archive.getvalue(), task="semantic")


@pytest.mark.parametrize("scale", [1, 255])
def test_semantic_masks_take_0_1_or_0_255(scale):
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = scale
    pred = np.zeros((20, 20), np.uint8)
    pred[5:15, 5:10] = 255  # the other convention: still the same binary mask
    result = EvaluationService().evaluate_fields({"task": b"semantic", "prediction_1": _png(pred), "mask_1": _png(gt)})
    assert result.per_image[0]["dice"] == pytest.approx(2 * 50 / (100 + 50))


def test_a_probability_mask_is_a_400_that_says_how_to_threshold():
    probability = np.linspace(0, 255, 400).reshape(20, 20).astype(np.uint8)
    gt = _png((probability > 128).astype(np.uint8))
    with pytest.raises(DataError, match="binary, 0/1 or 0/255") as info:
        EvaluationService().evaluate_fields({"task": b"semantic", "prediction_1": _png(probability), "mask_1": gt})
    assert "prediction_1" in str(info.value) and "threshold" in str(info.value)
    with pytest.raises(DataError, match="mask_x"):
        binary_mask(np.array([[0, 1], [2, 0]]), "mask_x")
    with pytest.raises(DataError):
        binary_mask(np.array([[1, 255]]), "mask_y")  # mixed conventions
    assert binary_mask(np.array([[0, 255]]), "m").tolist() == [[0, 1]]


def test_instance_label_maps_are_not_forced_binary():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6], labels[10:15, 10:15] = 1, 7
    result = EvaluationService().evaluate_fields(
        {"task": b"instance", "prediction_1": _png(labels), "mask_1": _png(labels)}
    )
    assert result.per_image[0]["aji"] == pytest.approx(1.0)


def test_error_bodies_never_echo_unbounded_input():
    row = {f"field_{i:05d}": b"x" for i in range(20_000)}
    with pytest.raises(DataError) as info:
        image_of(row, {})
    assert len(str(info.value)) < 1000 and "and 19990 more" in str(info.value)
    assert field_list({}) == "none"
    with pytest.raises(ConfigError) as info:
        choose_format(None, "x" * 100_000)
    assert len(str(info.value)) < 300
    with pytest.raises(ConfigError) as info:
        choose_format("text/html" * 10_000)
    assert len(str(info.value)) < 300
    status, body = error_body(DataError("y" * 100_000))
    assert status == 400 and len(json.loads(body)["message"]) < MAX_MESSAGE + 100


@pytest.mark.parametrize(
    "body, headers",
    [
        (b'{"image": "aGVsbG8="}', {"content-type": "application/json"}),
        (b"  [1, 2, 3]", {"content-type": "application/octet-stream"}),
        (b'{"image": "..."}', {}),
    ],
)
def test_a_json_body_gets_the_json_hint(body, headers):
    with pytest.raises(DataError, match="the body is JSON"):
        image_of({"body": body}, headers)


def test_a_png_body_is_not_mistaken_for_json():
    png = _png(np.zeros((4, 4), np.uint8))
    assert image_of({"body": png}, {"content-type": "image/png"}) == png
