"""Inference post-processing of an instance model: a predicted distance map → instance labels.

The instance head of a U-Net regresses, per pixel, the distance to the border of its
object normalised to 1 at each object's centre (``sslzoo.data.targets``). Instances are
recovered by a seeded watershed on the negated, smoothed distance map:

1. ``d = gaussian(distance, sigma)``;
2. foreground ``F = d > foreground_threshold``;
3. seeds = connected components of ``d > seed_threshold`` (or, with ``h`` set, the
   h-maxima of ``d``: regional maxima at least ``h`` above their surroundings);
4. ``labels = watershed(-d, seeds, mask=F)``;
5. objects smaller than ``min_size`` pixels are removed; ids are made contiguous 1..N.

Options of the authors' post-processing (``DLIP/utils/post_processing/distmap2inst.py``):
``fill_holes`` fills holes of ``F`` before step 4; ``area_median_factors = (lo, hi)`` keeps
only objects with ``lo * median < area < hi * median`` (median over the objects of the image)
after step 5. :data:`FIXED_WATERSHED` is the authors' fixed setting (sigma 1, foreground 0.09,
seeds 0.4, hole filling, area filter 0.05-10 x median), used for study comparisons so that
post-processing is the same for every method (``finetune(watershed="fixed")``); the authors'
optional splitting of objects larger than 1.4 x median is not implemented (docs/fidelity.md).

Otherwise (``watershed="tuned"``) the parameters are chosen on training data only
(``sslzoo.downstream.watershed.tune_watershed``), never on the evaluated
images; :class:`~sslzoo.models.segmenter.Segmenter` stores and applies them.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from sslzoo.errors import DataError


class WatershedParams(BaseModel):
    """Post-processing parameters of :func:`distance_to_instances`."""

    sigma: float = Field(1.0, ge=0.0, description="Gaussian smoothing of the distance map (pixels)")
    foreground_threshold: float = Field(0.1, ge=0.0, lt=1.0, description="pixels above are foreground")
    seed_threshold: float = Field(0.5, gt=0.0, le=1.0, description="seeds: components above this value")
    h: float | None = Field(None, gt=0.0, description="use h-maxima seeds of this height instead")
    min_size: int = Field(10, ge=0, description="objects smaller than this (pixels) are removed")
    fill_holes: bool = Field(False, description="fill holes of the foreground mask before the watershed")
    area_median_factors: tuple[float, float] | None = Field(
        None, description="(lo, hi): keep objects with lo * median area < area < hi * median area"
    )


#: the authors' fixed post-processing (configs ds_monuseg.yaml: th_cell 0.09, th_seed 0.4, sigma_cell 1,
#: do_fill_holes, valid_area_median_factors [0.05, 10]); the same for every method of a study
FIXED_WATERSHED = WatershedParams(
    sigma=1.0,
    foreground_threshold=0.09,
    seed_threshold=0.4,
    min_size=0,
    fill_holes=True,
    area_median_factors=(0.05, 10.0),
)


def distance_to_instances(distance: np.ndarray, params: WatershedParams | None = None) -> np.ndarray:
    """Instance label map (int32, 0 background, 1..N) from a predicted distance map ``(H, W)``."""
    params = params or WatershedParams()
    distance = np.asarray(distance, dtype=np.float32)
    if distance.ndim != 2:
        raise DataError(f"distance map must be 2-D (H, W), got shape {distance.shape}")
    smooth = ndi.gaussian_filter(distance, params.sigma) if params.sigma > 0 else distance
    foreground = smooth > params.foreground_threshold
    if params.fill_holes:
        foreground = ndi.binary_fill_holes(foreground)
    if not foreground.any():
        return np.zeros(distance.shape, np.int32)
    if params.h is not None:
        seeds, _ = ndi.label(h_maxima(smooth, params.h) & foreground)
    else:
        seeds, _ = ndi.label(smooth > max(params.seed_threshold, params.foreground_threshold))
    labels = remove_small_and_relabel(watershed(-smooth, seeds, mask=foreground), params.min_size)
    if params.area_median_factors is not None and labels.max() > 0:
        areas = np.bincount(labels.ravel())[1:]
        lo, hi = params.area_median_factors
        median = float(np.median(areas))
        drop = np.flatnonzero((areas <= lo * median) | (areas >= hi * median)) + 1
        labels = remove_small_and_relabel(np.where(np.isin(labels, drop), 0, labels), 1)
    return labels


def remove_small_and_relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects with fewer than ``min_size`` pixels; renumber the rest 1..N (sorted by old id)."""
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())
    keep = areas >= max(min_size, 1)
    keep[0] = False
    new_ids = np.zeros(areas.shape[0], np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_ids[labels]
