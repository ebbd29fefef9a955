"""Label map → response bodies: PNG, JSON summary, GeoJSON (CONTRACTS.md section 2).

- PNG: semantic → 8-bit, 0 background / 255 foreground; instance → 16-bit label map (0, 1..N).
- JSON: :class:`~sslzoo.serving.schemas.SegmentationSummary`; semantic masks are split into
  8-connected components, each reported like an instance.
- GeoJSON: a FeatureCollection, one Polygon per object in pixel coordinates ``[x, y]`` whose
  origin is the top-left corner of the top-left pixel (pixel ``(r, c)`` covers ``[c, c+1] x
  [r, r+1]``, QuPath's convention). The ring is the object's outer boundary traced by marching
  squares (``skimage.measure.find_contours`` at level 0.5 on the object's mask); holes are not
  kept, and an object made of several pieces is drawn by its largest piece.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from sslzoo.errors import TooLargeError
from sslzoo.serving.schemas import CONTENT_TYPES, InstanceSummary, SegmentationSummary

#: QuPath classification name per task.
CLASS_NAMES: dict[str, str] = {"instance": "Nucleus", "semantic": "Lesion"}


def objects_of(labels: np.ndarray, task: str) -> np.ndarray:
    """Object ids: the label map itself (instance) or 8-connected components of the foreground (semantic)."""
    from skimage.measure import label

    labels = np.asarray(labels)
    if task == "semantic":
        return label(labels > 0, connectivity=2).astype(np.int32)
    return labels.astype(np.int32, copy=False)


def encode_png(labels: np.ndarray, task: str) -> bytes:
    """PNG bytes: semantic 8-bit 0/255; instance 16-bit ids (at most 65535 objects)."""
    from PIL import Image

    labels = np.asarray(labels)
    if task == "semantic":
        array = np.where(labels > 0, 255, 0).astype(np.uint8)
    else:
        top = int(labels.max(initial=0))
        if top > 65535:
            raise TooLargeError(
                f"{top} objects do not fit a 16-bit PNG label map; ask for JSON or GeoJSON output instead"
            )
        array = labels.astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def summarize(labels: np.ndarray, task: str, model: str) -> SegmentationSummary:
    """Counts, foreground fraction and per-object area / centroid ``[y, x]`` / bbox ``[y0, x0, y1, x1)``."""
    from skimage.measure import regionprops

    labels = np.asarray(labels)
    objects = objects_of(labels, task)
    instances = [
        InstanceSummary(
            id=int(region.label),
            area=int(region.area),
            centroid=(round(float(region.centroid[0]), 2), round(float(region.centroid[1]), 2)),
            bbox=tuple(int(v) for v in region.bbox),
        )
        for region in regionprops(objects)
    ]
    height, width = labels.shape[:2]
    return SegmentationSummary(
        model=model,
        task=task,
        height=int(height),
        width=int(width),
        count=len(instances),
        foreground_fraction=float((labels > 0).mean()) if labels.size else 0.0,
        instances=instances,
    )


def outer_ring(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[list[float]]:
    """Closed outer boundary ``[[x, y], ...]`` of a boolean mask (largest piece), pixel-corner coordinates."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        return []

    # the outer boundary of the largest piece encloses the largest area (shoelace formula)
    def enclosed(c: np.ndarray) -> float:
        return 0.5 * abs(float(np.dot(c[:-1, 0], c[1:, 1]) - np.dot(c[1:, 0], c[:-1, 1])))

    # dropping (near-)collinear points shrinks the ring without moving its boundary
    contour = approximate_polygon(max(contours, key=enclosed), tolerance=0.01)
    # padded index p ↔ pixel index p - 1; pixel centre c ↔ corner coordinate c + 0.5
    ys = contour[:, 0] - 1 + 0.5 + offset[0]
    xs = contour[:, 1] - 1 + 0.5 + offset[1]
    ring = [[round(float(x), 2), round(float(y), 2)] for x, y in zip(xs, ys, strict=True)]
    if ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return ring


def to_geojson(labels: np.ndarray, task: str) -> dict[str, Any]:
    """GeoJSON FeatureCollection: one Polygon per object with QuPath detection properties."""
    from skimage.measure import regionprops

    name = CLASS_NAMES.get(task, "Object")
    features = []
    for region in regionprops(objects_of(labels, task)):
        ring = outer_ring(region.image, offset=(int(region.bbox[0]), int(region.bbox[1])))
        if len(ring) < 4:
            continue
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": name},
                    "id": int(region.label),
                    "area": int(region.area),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def encode_output(labels: np.ndarray, task: str, model: str, fmt: str) -> tuple[bytes, str]:
    """Body and content type for ``fmt`` (``png`` | ``json`` | ``geojson``)."""
    if fmt == "png":
        body = encode_png(labels, task)
    elif fmt == "json":
        body = summarize(labels, task, model).model_dump_json().encode()
    elif fmt == "geojson":
        body = json.dumps(to_geojson(labels, task), separators=(",", ":")).encode()
    else:
        from sslzoo.errors import ConfigError

        raise ConfigError(f"unknown output format {fmt!r}; choose png, json or geojson")
    return body, CONTENT_TYPES[fmt]
