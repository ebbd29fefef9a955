"""Regression targets for nuclei instance segmentation.

The instance head regresses, per object, the Euclidean distance of each pixel to the
object's border, normalised so that every object peaks at exactly 1 (CONTRACTS.md
section 5); seeded watershed turns the prediction back into instances.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from sslzoo.errors import DataError


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"expected a 2-D label map (H, W), got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"label map must hold integer object ids (0 = background), got dtype {labels.dtype}; "
            "read it with sslzoo.data.io.read_label_map"
        )
    if labels.size and labels.min() < 0:
        raise DataError("label map has negative values; ids must be 0 (background) or positive")
    return labels


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Map the object ids to ``1..N`` in increasing order of the original id; 0 stays background.

    Returns an ``int64`` array of the same shape (``skimage.segmentation.relabel_sequential``).
    """
    labels = _check_labels(labels)
    relabelled, _, _ = relabel_sequential(labels.astype(np.int64, copy=False))
    return relabelled.astype(np.int64, copy=False)


def distance_map_target(labels: np.ndarray) -> np.ndarray:
    """Per-object normalised distance-to-border map, ``float32`` of the labels' shape.

    For a pixel p of object k: ``d(p) = EDT_k(p) / max_{q in k} EDT_k(q)``, where ``EDT_k`` is the
    Euclidean distance to the nearest pixel that is not in k (background, another object, or
    outside the image). Each object therefore peaks at exactly 1, every object pixel is > 0
    (at least ``1 / max``) and background is 0; touching objects stay separate because a
    neighbour's pixel counts as border. Computed on each object's bounding box grown by one
    pixel (``scipy.ndimage.find_objects``), never on a full-size image per object.
    """
    labels = _check_labels(labels)
    out = np.zeros(labels.shape, dtype=np.float32)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        crop = labels[box] == index
        # one pixel of "not this object" all round: outside the bbox is never the object
        dist = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
        peak = dist.max()
        target = out[box]
        target[crop] = (dist[crop] / peak).astype(np.float32)
    return out
