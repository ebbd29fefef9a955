"""MoNuSeg Aperio XML annotations -> instance label maps.

An Aperio XML file holds ``Annotations/Annotation/Regions/Region/Vertices/Vertex``
elements; every ``Region`` is one nucleus and its vertices' ``X``/``Y`` attributes
are column/row pixel coordinates.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from skimage.draw import polygon as fill_polygon

from sslzoo.errors import DataError


def read_monuseg_polygons(xml_path: str | Path) -> list[np.ndarray]:
    """Polygons of an Aperio XML file in document order, each a float array ``(n_vertices, 2)`` of (row, col)."""
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise DataError(f"{xml_path}: no such annotation file; MoNuSeg expects Annotations/<image id>.xml")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise DataError(
            f"{xml_path}: not well-formed XML ({exc}); re-download the annotation file, it may be truncated"
        ) from exc
    polygons: list[np.ndarray] = []
    for index, region in enumerate(root.iter("Region"), start=1):
        points = []
        for vertex in region.iter("Vertex"):
            try:
                points.append((float(vertex.attrib["Y"]), float(vertex.attrib["X"])))
            except (KeyError, ValueError) as exc:
                raise DataError(
                    f"{xml_path}: Region #{index} has a Vertex without numeric X and Y attributes "
                    f"({ET.tostring(vertex, encoding='unicode').strip()}); fix or remove that vertex"
                ) from exc
        polygons.append(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    return polygons


def relabel_in_order(labels: np.ndarray) -> np.ndarray:
    """Renumber the non-zero ids of ``labels`` to 1..N keeping their order; ids with no pixels vanish."""
    labels = np.asarray(labels, dtype=np.int64)
    top = int(labels.max(initial=0))
    if top == 0:
        return labels
    if top <= 4 * labels.size + 1024:  # a lookup table is cheaper than sorting
        present = np.bincount(labels.ravel(), minlength=top + 1)[1:] > 0
        if present.all():
            return labels
        lookup = np.zeros(top + 1, dtype=np.int64)
        lookup[1:][present] = np.arange(1, int(present.sum()) + 1)
        return lookup[labels]
    ids = np.unique(labels)
    ids = ids[ids != 0]
    out = np.zeros_like(labels)
    foreground = labels != 0
    out[foreground] = np.searchsorted(ids, labels[foreground]) + 1
    return out


def polygon_area(points: np.ndarray) -> float:
    """Absolute shoelace area of a polygon ``(n, 2)``; 0 for fewer than 3 vertices."""
    if len(points) < 3:
        return 0.0
    y, x = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def rasterize_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill polygon k (1-based) with id k, later polygons overwriting earlier ones, then relabel 1..N.

    Pixels whose centre lies inside a polygon (``skimage.draw.polygon``) are filled; polygons are
    clipped to ``shape``. Degenerate polygons (fewer than 3 vertices or zero area) and fully overwritten
    polygons leave no id.
    """
    height, width = (int(shape[0]), int(shape[1]))
    labels = np.zeros((height, width), dtype=np.int64)
    for k, points in enumerate(polygons, start=1):
        if polygon_area(points) == 0.0:
            continue  # skimage would still mark the vertex pixels of a line or point
        rows, cols = fill_polygon(points[:, 0], points[:, 1], shape=(height, width))
        labels[rows, cols] = k
    return relabel_in_order(labels)


def rasterize_monuseg_xml(xml_path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Instance map ``int64 (H, W)`` of a MoNuSeg Aperio XML: ids 1..N in XML order, later regions on top."""
    return rasterize_polygons(read_monuseg_polygons(xml_path), shape)
