"""The two seed branches of the instance post-processing, each on a case only it solves.

- threshold seeds: two touching nuclei on a rippled distance map (connected components of the
  foreground merge them; a watershed without markers splits them into many pieces);
- h-maxima seeds (``h``, used by the ``nuclei`` default model): two nuclei whose saddle lies above
  the seed threshold and a dim nucleus whose peak lies below it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import watershed

import sslzoo
from sslzoo.metrics.segmentation import aji_plus
from sslzoo.models.postprocess import WatershedParams, distance_to_instances

SHAPE = (64, 96)


def _bump(cy: float, cx: float, radius: float, height: float = 1.0) -> np.ndarray:
    """A cone of ``height`` at (cy, cx) falling to 0 at ``radius``."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return height * np.clip(1.0 - np.hypot(yy - cy, xx - cx) / radius, 0.0, None)


def _touching_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two touching disks (radius 14, centres 24 px apart) with their normalised distance map."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels = np.zeros(SHAPE, np.int64)
    for i, cx in enumerate((36, 60), start=1):
        labels[(np.hypot(yy - 32, xx - cx) <= 14) & (labels == 0)] = i
    distance = np.zeros(SHAPE, np.float32)
    for i in (1, 2):
        d = ndi.distance_transform_edt(labels == i)
        distance[labels == i] = d[labels == i] / d.max()
    return labels, distance


def test_threshold_seeds_split_touching_nuclei_on_a_rippled_map():
    labels, distance = _touching_pair()
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    ripple = 0.04 * np.sin(xx / 1.3) * np.cos(yy / 1.7)  # many small local maxima inside each nucleus
    rippled = np.where(labels > 0, np.clip(distance + ripple, 0.0, 1.0), 0.0).astype(np.float32)
    params = WatershedParams(sigma=0.0, foreground_threshold=0.05, seed_threshold=0.5, min_size=5)
    pred = distance_to_instances(rippled, params)
    assert pred.max() == 2 and aji_plus(pred, labels) > 0.9

    # neither the foreground's components nor a watershed without seeds gets this right
    foreground = rippled > 0.05
    components, count = ndi.label(foreground)
    assert count == 1
    unseeded = watershed(-rippled, mask=foreground)
    assert unseeded.max() > 2 and aji_plus(unseeded, labels) < 0.75  # measured: 4 pieces, 0.62


def _h_case() -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping nuclei whose saddle lies at 0.7 (above the 0.5 seed threshold), a dim one peaking at 0.4.

    Cones of height 1 and radius 20 centred 12 px apart cross at 1 - 6/20 = 0.7; the ground truth splits
    them at the crossing (nearest centre), where the watershed of the cones splits them too.
    """
    left, right, dim = _bump(32, 30, 20), _bump(32, 42, 20), _bump(32, 80, 9, height=0.4)
    distance = np.maximum(np.maximum(left, right), dim)
    labels = np.zeros(SHAPE, np.int64)
    labels[(left > 0.05) & (left >= right)] = 1
    labels[(right > 0.05) & (right > left)] = 2
    labels[dim > 0.05] = 3
    return labels, distance.astype(np.float32)


def test_h_maxima_seeds_solve_what_threshold_seeds_cannot():
    labels, distance = _h_case()
    default = WatershedParams(sigma=1.0, foreground_threshold=0.1, seed_threshold=0.5, h=0.2, min_size=10)
    pred = distance_to_instances(distance, default)
    assert pred.max() == 3 and aji_plus(pred, labels) > 0.85

    # the same parameters without h: the pair shares one seed and the dim nucleus gets none
    threshold_only = distance_to_instances(distance, default.model_copy(update={"h": None}))
    assert threshold_only.max() == 1 and aji_plus(threshold_only, labels) < 0.6


def test_h_ignores_ripples_lower_than_h():
    labels, distance = _touching_pair()
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    ripple = 0.04 * np.sin(xx / 1.3) * np.cos(yy / 1.7)
    rippled = np.where(labels > 0, np.clip(distance + ripple, 0.0, 1.0), 0.0).astype(np.float32)
    pred = distance_to_instances(rippled, WatershedParams(sigma=0.0, foreground_threshold=0.05, h=0.2, min_size=5))
    assert pred.max() == 2 and aji_plus(pred, labels) > 0.9


def test_the_nuclei_default_model_uses_the_h_maxima_branch():
    path = Path(sslzoo.__file__).parent / "zoo" / "densecl-resnet18-monuseg-instance" / "segmenter.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    stored = json.loads(path.read_text())["watershed"]
    assert stored["h"] is not None and stored["h"] > 0
    labels, distance = _h_case()
    pred = distance_to_instances(distance, WatershedParams(**stored))
    assert pred.max() == 3


def test_an_object_of_exactly_min_size_is_kept_and_mismatched_tuning_input_refused():
    from sslzoo.downstream.watershed import tune_watershed
    from sslzoo.errors import DataError
    from sslzoo.models.postprocess import remove_small_and_relabel

    labels = np.zeros((8, 8), np.int64)
    labels[0, :5] = 4  # 5 pixels
    labels[7, :4] = 9  # 4 pixels
    out = remove_small_and_relabel(labels, min_size=5)
    assert out.max() == 1 and (out == 1).sum() == 5
    with pytest.raises(DataError):
        tune_watershed([np.zeros((8, 8))], [labels, labels], lambda p, g: 0.0)
