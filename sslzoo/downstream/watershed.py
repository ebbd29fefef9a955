"""Watershed tuning: choose the instance post-processing parameters on training data.

The post-processing itself (seeded watershed on the smoothed distance map, small-object removal,
relabelling) is inference and lives in :mod:`sslzoo.models.postprocess`. :func:`tune_watershed` picks
the :class:`~sslzoo.models.postprocess.WatershedParams` maximising a score over TRAINING images only,
never over the evaluated images.

:data:`~sslzoo.models.postprocess.FIXED_WATERSHED` is the authors' fixed setting, used by default
(``finetune(watershed="fixed")``) so that post-processing is the same for every method.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from sslzoo.errors import DataError
from sslzoo.models.postprocess import WatershedParams, distance_to_instances


def default_search_space() -> list[WatershedParams]:
    """The grid :func:`tune_watershed` searches by default (36 settings)."""
    grid = itertools.product((0.0, 1.0), (0.1, 0.2, 0.3), (0.3, 0.5, 0.7), (10,), (None,))
    extra = [
        WatershedParams(sigma=1.0, foreground_threshold=f, seed_threshold=0.5, h=h)
        for f in (0.1, 0.2)
        for h in (0.05, 0.1, 0.2)
    ]
    base = [
        WatershedParams(sigma=s, foreground_threshold=f, seed_threshold=t, min_size=m, h=h) for s, f, t, m, h in grid
    ]
    return base + extra


def tune_watershed(
    distances: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], float],
    search_space: Sequence[WatershedParams] | None = None,
) -> tuple[WatershedParams, float]:
    """Pick the parameters maximising the mean ``score(pred, gt)`` over training images.

    ``distances`` are the network's predictions on TRAINING tiles, ``labels`` their
    ground-truth instance maps; ``score`` is e.g. ``sslzoo.metrics.segmentation.aji_plus``.
    Returns the best parameters and their mean score (first best on ties).
    """
    if len(distances) != len(labels) or not distances:
        raise DataError("tune_watershed needs the same, non-zero number of distance maps and label maps")
    best, best_score = None, -np.inf
    for params in search_space or default_search_space():
        mean = float(
            np.mean([score(distance_to_instances(d, params), g) for d, g in zip(distances, labels, strict=True)])
        )
        if mean > best_score:
            best, best_score = params, mean
    assert best is not None
    return best, best_score
