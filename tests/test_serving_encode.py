"""Label map → PNG / JSON / GeoJSON, and output-format negotiation."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from skimage.draw import polygon2mask

from sslzoo.errors import ConfigError
from sslzoo.serving.encode import encode_output, encode_png, outer_ring, summarize, to_geojson
from sslzoo.serving.services import choose_format


@pytest.fixture
def instances() -> np.ndarray:
    labels = np.zeros((60, 80), np.int32)
    labels[5:15, 10:30] = 1  # 10 x 20 rectangle
    yy, xx = np.mgrid[:60, :80]
    labels[(yy - 40) ** 2 + (xx - 50) ** 2 <= 81] = 2  # disc of radius 9
    labels[50:52, 2:4] = 3  # tiny 2 x 2
    return labels


def test_png_semantic_is_8bit_0_255_and_instance_is_16bit(instances):
    semantic = Image.open(io.BytesIO(encode_png(instances > 0, "semantic")))
    assert semantic.mode == "L"
    array = np.asarray(semantic)
    assert set(np.unique(array)) == {0, 255}
    np.testing.assert_array_equal(array > 0, instances > 0)
    many = instances.copy()
    many[many == 3] = 1000
    instance = Image.open(io.BytesIO(encode_png(many, "instance")))
    assert instance.mode.startswith("I;16") or instance.mode == "I"
    np.testing.assert_array_equal(np.asarray(instance).astype(np.int64), many)


def test_json_summary_matches_regions(instances):
    summary = summarize(instances, "instance", "nuclei")
    assert (summary.height, summary.width, summary.count) == (60, 80, 3)
    assert summary.foreground_fraction == pytest.approx((instances > 0).mean())
    first = summary.instances[0]
    assert first.id == 1 and first.area == 200
    assert first.centroid == (9.5, 19.5)
    assert first.bbox == (5, 10, 15, 30)


def test_semantic_summary_counts_connected_components(instances):
    summary = summarize((instances > 0).astype(np.uint8), "semantic", "lesion")
    assert summary.task == "semantic" and summary.count == 3
    assert sorted(i.area for i in summary.instances) == sorted(int((instances == k).sum()) for k in (1, 2, 3))


def test_geojson_polygons_cover_each_object(instances):
    collection = to_geojson(instances, "instance")
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 3
    for feature in collection["features"]:
        props = feature["properties"]
        assert props["objectType"] == "detection" and props["classification"] == {"name": "Nucleus"}
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) >= 4
        # rasterise the polygon (pixel centres at +0.5) and compare with the object
        vertices = np.array([[y - 0.5, x - 0.5] for x, y in ring])
        drawn = polygon2mask(instances.shape, vertices)
        target = instances == props["id"]
        iou = (drawn & target).sum() / (drawn | target).sum()
        assert props["area"] == target.sum()
        assert iou > (0.6 if props["area"] < 10 else 0.85)
    lesion = to_geojson(instances > 0, "semantic")
    assert {f["properties"]["classification"]["name"] for f in lesion["features"]} == {"Lesion"}


def test_outer_ring_keeps_the_largest_piece_and_ignores_holes():
    mask = np.zeros((30, 30), bool)
    mask[2:20, 2:20] = True
    mask[8:12, 8:12] = False  # hole
    mask[25:27, 25:27] = True  # small second piece
    xs, ys = np.array(outer_ring(mask)).T
    assert xs.min() == pytest.approx(2.0, abs=0.5) and xs.max() == pytest.approx(20.0, abs=0.5)
    assert ys.max() < 21


def test_encode_output_content_types(instances):
    assert encode_output(instances, "instance", "m", "png")[1] == "image/png"
    body, content_type = encode_output(instances, "instance", "m", "geojson")
    assert content_type == "application/geo+json" and json.loads(body)["type"] == "FeatureCollection"
    body, content_type = encode_output(instances, "instance", "m", "json")
    assert content_type == "application/json" and json.loads(body)["count"] == 3
    with pytest.raises(ConfigError):
        encode_output(instances, "instance", "m", "svg")


@pytest.mark.parametrize(
    "accept, field, expected",
    [
        (None, None, "png"),
        ("*/*", None, "png"),
        ("application/json", None, "json"),
        ("application/geo+json", None, "geojson"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", None, "png"),
        ("image/png;q=0.5, application/json", None, "json"),
        ("application/json", "geojson", "geojson"),
        (None, "PNG", "png"),
    ],
)
def test_choose_format(accept, field, expected):
    assert choose_format(accept, field) == expected


@pytest.mark.parametrize("accept, field", [("text/html", None), (None, "svg"), ("application/json;q=0", None)])
def test_choose_format_refuses_what_it_cannot_produce(accept, field):
    with pytest.raises(ConfigError):
        choose_format(accept, field)
