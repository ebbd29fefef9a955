"""Inference post-processing of an instance model: a predicted distance map → instance labels.

The instance head of a U-Net regresses, per pixel, the distance to the border of its
object normalised to 1 at each object's centre (``sslzoo.data.targets``). Instances are
recovered by a seeded watershed on the negated, smoothed distance map:

1. ``d = gaussian(distance, sigma)``;
2. foreground ``F = d > foreground_threshold``;
3. seeds = connected components of ``d > seed_threshold`` (or, with ``h`` set, the
   h-maxima of ``d``: regional maxima at least ``h`` above their surroundings, exactly
   ``skimage.morphology.h_maxima(d, h) & F`` but computed by :func:`h_maxima_seeds` from the
   foreground's regions of steepest ascent in ~1/10 of the time, issue 16);
4. ``labels = watershed(-d, seeds, mask=F)``, exactly, but computed by :func:`seeded_watershed` one
   foreground component at a time (a component holding one seed is that seed's object without flooding;
   2-4x faster on MoNuSeg, issue 16);
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
from skimage.morphology import local_maxima
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
        seeds, _ = ndi.label(h_maxima_seeds(smooth, params.h, foreground, params.foreground_threshold))
    else:
        seeds, _ = ndi.label(smooth > max(params.seed_threshold, params.foreground_threshold))
    labels = remove_small_and_relabel(seeded_watershed(-smooth, seeds, foreground), params.min_size)
    if params.area_median_factors is not None and labels.max() > 0:
        areas = np.bincount(labels.ravel())[1:]
        lo, hi = params.area_median_factors
        median = float(np.median(areas))
        drop = np.flatnonzero((areas <= lo * median) | (areas >= hi * median)) + 1
        labels = remove_small_and_relabel(np.where(np.isin(labels, drop), 0, labels), 1)
    return labels


def seeded_watershed(image: np.ndarray, seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(image, seeds, mask=mask)`` (4-connected), label for label.

    The flood never crosses the background, so each 4-connected component of ``mask`` is flooded on its own:
    a component without a seed stays 0, one whose seed pixels all carry one label becomes that label, and only
    components with two or more labels are flooded, by skimage on their bounding box. The heap order inside a
    component (value, then insertion order) does not depend on the other components, so ties break as in the
    whole-image call. skimage has no per-component shortcut; this is ours (tests/test_postprocess_hmaxima.py
    checks it against skimage on random fields with plateaus and on real distance maps).
    """
    mask = np.asarray(mask, dtype=bool)
    seeds = np.where(mask, seeds, 0).astype(np.int32, copy=False)
    components, count = ndi.label(mask)
    seeded = seeds > 0
    if count == 0 or not seeded.any():
        return np.zeros(mask.shape, np.int32)
    base = int(seeds.max()) + 1
    pairs = np.unique(components[seeded].astype(np.int64) * base + seeds[seeded])
    owner, label = pairs // base, (pairs % base).astype(np.int32)
    labels_per_component = np.bincount(owner, minlength=count + 1)
    single = labels_per_component[owner] == 1
    lookup = np.zeros(count + 1, np.int32)
    lookup[owner[single]] = label[single]
    labels = lookup[components]
    crowded = np.flatnonzero(labels_per_component > 1)
    if crowded.size:
        boxes = ndi.find_objects(components)
        for k in crowded:
            box = boxes[k - 1]
            inside = components[box] == k
            flooded = watershed(image[box], np.where(inside, seeds[box], 0), mask=inside)
            labels[box][inside] = flooded[inside]
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


#: 8-connectivity: the neighbourhood of ``skimage.morphology.h_maxima`` (its reconstruction's default footprint)
EIGHT = np.ones((3, 3), bool)
#: ``h_maxima`` lowers ``image - h`` by this much per unit of ``|image|`` so that rounding never lifts it (float32)
_RESOLUTION = np.float32(2) * np.finfo(np.float32).resolution
#: half of the 8-neighbourhood: every adjacent pixel pair once
_HALF_NEIGHBOURHOOD = ((0, 1), (1, 0), (1, 1), (1, -1))


def _shifted(values: np.ndarray | np.floating | float, h: np.float32) -> np.ndarray:
    """``image - h - resolution`` exactly as ``h_maxima`` computes it in float32."""
    values = np.asarray(values, np.float32)
    return values - h - _RESOLUTION * np.abs(values)


def _passes(labels: np.ndarray, values: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    """Pairs of adjacent (8-connected) regions of ``labels`` (0 ignored) with the strongest pass between them.

    The pass of two adjacent pixels is the lower of their values; the result lists, for every pair of
    regions ``(a, b)`` with ``a < b``, the highest pass over their adjacent pixels, sorted by decreasing pass.
    """
    height, width = labels.shape
    padded = np.zeros((height + 2, width + 2), labels.dtype)  # a zero border: no pair leaves the image
    padded[1:-1, 1:-1] = labels
    flat = padded.ravel()
    level = np.zeros(flat.shape, values.dtype)
    level.reshape(height + 2, width + 2)[1:-1, 1:-1] = values
    here = np.flatnonzero(flat)
    mine, my_level = flat[here], level[here]
    lows, highs, passes = [], [], []
    for dy, dx in _HALF_NEIGHBOURHOOD:
        there = here + (dy * (width + 2) + dx)
        theirs = flat[there]
        where = (theirs != mine) & (theirs > 0)
        la, lb = mine[where], theirs[where]
        lows.append(np.minimum(la, lb))
        highs.append(np.maximum(la, lb))
        passes.append(np.minimum(my_level[where], level[there[where]]))
    low, high, value = np.concatenate(lows), np.concatenate(highs), np.concatenate(passes)
    order = np.lexsort((-value, high, low))  # per pair, the strongest pass first
    low, high, value = low[order], high[order], value[order]
    first = np.ones(len(low), bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    low, high, value = low[first], high[first], value[first]
    order = np.argsort(-value, kind="stable")
    return low[order].tolist(), high[order].tolist(), value[order].tolist()


def _reaches_higher(smooth: np.ndarray, at: tuple[int, int], level: np.float32, removes) -> bool:
    """Whether ``removes(top)`` holds for the top of the 8-connected component of ``smooth > level`` at ``at``.

    Grown window by window: a component found inside a window is part of the whole one, so a top that
    removes settles the answer; a component that does not touch the window's inner border is the whole one.
    """
    height, width = smooth.shape
    y, x = at
    radius = 32
    while True:
        y0, x0 = max(0, y - radius), max(0, x - radius)
        y1, x1 = min(height, y + radius + 1), min(width, x + radius + 1)
        crop = smooth[y0:y1, x0:x1]
        labels, _ = ndi.label(crop > level, structure=EIGHT)
        component = labels == labels[y - y0, x - x0]
        if removes(crop[component].max()):
            return True
        touches = (
            (y0 > 0 and component[0].any())
            or (x0 > 0 and component[:, 0].any())
            or (y1 < height and component[-1].any())
            or (x1 < width and component[:, -1].any())
        )
        if not touches:
            return False
        radius *= 2


def _ascent_regions(smooth: np.ndarray, domain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``domain`` into regions of steepest ascent: labels ``(H, W)`` (0 outside) and each region's top pixel.

    Every pixel points to its highest 4-neighbour inside ``domain`` when that one is strictly higher; a
    pixel with none is a top. Following the pointers climbs to a top over ever higher pixels, so every
    pixel of a region is joined to its top by a path that never dips below the pixel itself.
    """
    height, width = smooth.shape
    stride = width + 2
    padded = np.full((height + 2, stride), -np.inf, np.float32)  # outside the domain: never climbed to
    padded[1:-1, 1:-1] = np.where(domain, smooth, -np.inf)
    flat = padded.ravel()
    inside = np.flatnonzero(flat > -np.inf)  # padded indices of the domain's pixels, row-major
    best, target = flat[inside], inside
    for step in (-stride, stride, -1, 1):
        neighbour = flat[inside + step]
        higher = neighbour > best
        best = np.where(higher, neighbour, best)
        target = np.where(higher, inside + step, target)
    position = np.zeros(flat.shape, np.int32)
    position[inside] = np.arange(len(inside), dtype=np.int32)
    pointer = position[target]
    while True:
        jumped = pointer[pointer]
        if np.array_equal(jumped, pointer):
            break
        pointer = jumped
    tops = np.flatnonzero(pointer == np.arange(len(inside)))
    region = np.zeros(len(inside), np.int32)
    region[tops] = np.arange(1, len(tops) + 1, dtype=np.int32)
    labels = np.zeros((height + 2, stride), np.int32)
    labels.ravel()[inside] = region[pointer]
    top_y, top_x = np.divmod(inside[tops], stride)
    return labels[1:-1, 1:-1], (top_y - 1) * width + (top_x - 1)


def h_maxima_seeds(smooth: np.ndarray, h: float, foreground: np.ndarray, threshold: float) -> np.ndarray:
    """``skimage.morphology.h_maxima(smooth, h) & foreground`` without reconstructing the whole image.

    A pixel is an h-maximum when every pixel higher than it is reachable only over paths that dip to
    ``value - h`` or lower (8-connected), so only regional maxima qualify. ``foreground`` must hold every
    pixel above ``threshold``. Steps:

    1. the foreground is split into regions of steepest ascent (:func:`_ascent_regions`); as every pixel
       joins its region's top without dipping below itself, the best path between two tops crosses
       regions at their strongest passes (the highest ``min`` of two 8-adjacent pixels in two regions);
    2. passes in decreasing order merge regions (union-find); a regional maximum is removed when its
       region first meets one whose top, lowered by ``h``, and the pass both lie above ``value - h``
       (the float32 arithmetic of ``h_maxima``'s reconstruction);
    3. a maximum left standing with ``value - h`` below ``threshold`` could still reach a higher one
       through the background: the component of ``smooth > value - h`` around it is checked directly.
    """
    smooth = np.asarray(smooth, np.float32)
    h32 = np.float32(h)
    if float(np.ptp(smooth)) < h:  # as h_maxima: no maximum stands h above the rest
        return np.zeros(smooth.shape, bool)
    plateaus = local_maxima(smooth, connectivity=1, allow_borders=True).view(bool) & foreground
    if not plateaus.any():
        return plateaus
    regions, top_pixels = _ascent_regions(smooth, foreground)
    count = len(top_pixels)
    peak = np.concatenate([np.zeros(1, np.float32), smooth.ravel()[top_pixels]])
    shifted = _shifted(peak, h32)
    candidate = np.concatenate([[False], plateaus.ravel()[top_pixels]])
    parent = list(range(count + 1))
    top = peak.tolist()  # the highest peak of each merged region (kept at its root)
    top_shifted = shifted.tolist()
    # the maxima of each merged region that a later, weaker pass could still remove
    open_maxima: list[list[int]] = [[k] if candidate[k] else [] for k in range(count + 1)]
    alive = candidate.copy()

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b, value in zip(*_passes(regions, smooth), strict=True):
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        still_open: list[int] = []
        for side, other in ((ra, rb), (rb, ra)):
            reach = np.float32(min(top_shifted[other], value))
            for k in open_maxima[side]:
                if peak[k] - max(shifted[k], reach) < h32:
                    alive[k] = False
                elif peak[k] - np.float32(value) < h32:
                    still_open.append(k)
        if top[rb] > top[ra]:
            top[ra], top_shifted[ra] = top[rb], top_shifted[rb]
        parent[rb] = ra
        open_maxima[ra], open_maxima[rb] = still_open, []
    lowest, highest = float(smooth.min()), float(smooth.max())
    for k in np.flatnonzero(alive).tolist():
        level = np.float32(peak[k] - h32)
        if level >= threshold:  # its component of smooth > peak - h lies inside the foreground
            continue

        def removes(value: float, k: int = k) -> bool:
            return bool(peak[k] - max(shifted[k], _shifted(value, h32)) < h32)

        if level < lowest:  # the component is the whole image
            alive[k] = not removes(highest)
        else:
            y, x = divmod(int(top_pixels[k - 1]), smooth.shape[1])
            alive[k] = not _reaches_higher(smooth, (y, x), level, removes)
    return alive[regions] & plateaus
