"""The fast post-processing against skimage, the reference: ``postprocess.h_maxima_seeds`` against ``h_maxima``,
``postprocess.seeded_watershed`` against ``skimage.segmentation.watershed``.

``distance_to_instances`` used ``skimage.morphology.h_maxima`` (a grey reconstruction of the whole image,
~85 % of the post-processing time) until issue 16; the reference below is that code, kept only here.
Synthetic fields (always run) cover plateaus, ties, negative values, hole-filled foregrounds and the
background path case; the real cases (MoNuSeg, skipped without ../shared) compare whole instance maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from sslzoo.metrics.segmentation import aji_plus
from sslzoo.models.postprocess import (
    WatershedParams,
    distance_to_instances,
    h_maxima_seeds,
    remove_small_and_relabel,
    seeded_watershed,
)

#: the ``nuclei`` default's post-processing
NUCLEI = WatershedParams(sigma=1.0, foreground_threshold=0.1, seed_threshold=0.5, h=0.2, min_size=10)


def reference_instances(distance: np.ndarray, params: WatershedParams) -> np.ndarray:
    """``distance_to_instances`` as it was before issue 16 (h-maxima branch, no area filter)."""
    smooth = ndi.gaussian_filter(np.asarray(distance, np.float32), params.sigma)
    foreground = smooth > params.foreground_threshold
    if params.fill_holes:
        foreground = ndi.binary_fill_holes(foreground)
    seeds, _ = ndi.label(h_maxima(smooth, params.h) & foreground)
    return remove_small_and_relabel(watershed(-smooth, seeds, mask=foreground), params.min_size)


def _field(rng: np.random.Generator, trial: int) -> np.ndarray:
    shape = (int(rng.integers(8, 70)), int(rng.integers(8, 70)))
    field = ndi.gaussian_filter(rng.random(shape).astype(np.float32), rng.uniform(0.5, 4.0))
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    if trial % 3 == 0:
        field = np.round(field * rng.integers(3, 20)) / 10  # plateaus and exact ties
    if trial % 5 == 0:
        field = field - 0.3  # values below zero
    return field.astype(np.float32)


def test_seeds_equal_skimage_h_maxima_on_random_fields():
    rng = np.random.default_rng(16)
    for trial in range(60):
        field = _field(rng, trial)
        h, threshold = float(rng.uniform(0.02, 0.5)), float(rng.uniform(-0.2, 0.6))
        foreground = field > threshold
        if trial % 4 == 1:
            foreground = ndi.binary_fill_holes(foreground)
        expected = h_maxima(field, h).astype(bool) & foreground
        got = h_maxima_seeds(field, h, foreground, threshold)
        assert got.dtype == bool
        assert np.array_equal(got, expected), f"trial {trial}: h={h:.3f} threshold={threshold:.3f}"


def test_a_peak_is_removed_over_a_background_path_and_kept_when_the_path_dips():
    # two foreground blobs (above 0.1) joined by a background ridge at 0.08: the low peak (0.25) reaches the
    # high one (1.0) over the ridge, which stays above 0.25 - h = 0.05, so it is no h-maximum; with the ridge
    # at 0.02 (below 0.05) it is one. Only the check outside the foreground sees this.
    yy, xx = np.mgrid[:40, :120]
    high = np.clip(1.0 - np.hypot(yy - 20, xx - 20) / 12, 0, None)
    low = 0.25 * np.clip(1.0 - np.hypot(yy - 20, xx - 100) / 8, 0, None)
    for ridge, peaks in ((0.08, 1), (0.02, 2)):
        field = np.maximum(np.maximum(high, low), np.where(np.abs(yy - 20) <= 1, ridge, 0.0)).astype(np.float32)
        foreground = field > 0.1
        assert ndi.label(foreground)[1] == 2
        expected = h_maxima(field, 0.2).astype(bool) & foreground
        got = h_maxima_seeds(field, 0.2, foreground, 0.1)
        assert np.array_equal(got, expected) and ndi.label(got)[1] == peaks


def test_no_seed_when_h_exceeds_the_range():
    field = np.linspace(0, 0.3, 100, dtype=np.float32).reshape(10, 10)
    assert not h_maxima_seeds(field, 0.5, field > 0.1, 0.1).any()
    assert distance_to_instances(field, NUCLEI.model_copy(update={"h": 0.5})).max() == 0


def test_seeded_watershed_equals_skimage_on_random_fields():
    """Plateaus (ties in the heap), components with 0, 1 and several seeds, seeds outside the mask, split seeds."""
    rng = np.random.default_rng(13)
    crowded = 0
    for trial in range(80):
        field = _field(rng, trial)
        mask = field > float(rng.uniform(0.1, 0.5))
        if trial % 4 == 2:
            mask = ndi.binary_fill_holes(mask)
        seeds, _ = ndi.label((field > float(rng.uniform(0.5, 0.9))) | (rng.random(field.shape) > 0.995))
        if trial % 7 == 0:
            seeds[seeds % 3 == 0] = 1  # one label on several separate seeds
        expected = watershed(-field, seeds, mask=mask)
        got = seeded_watershed(-field, seeds, mask)
        assert got.dtype == np.int32
        assert np.array_equal(got, expected), f"trial {trial}"
        components, count = ndi.label(mask)
        crowded += sum(len(np.unique(seeds[(components == k) & (seeds > 0)])) > 1 for k in range(1, count + 1))
    assert crowded > 20  # the flooding branch ran, not only the one-seed shortcut


def test_seeded_watershed_without_seeds_or_foreground_is_empty():
    field = np.random.default_rng(0).random((12, 9)).astype(np.float32)
    assert not seeded_watershed(-field, np.zeros(field.shape, np.int32), field > 0.5).any()
    assert not seeded_watershed(-field, ndi.label(field > 0.7)[0], np.zeros(field.shape, bool)).any()


def _monuseg(shared_data: Path) -> Path:
    folder = shared_data / "monuseg" / "train"
    if not (folder / "masks").is_dir():
        pytest.skip(f"no MoNuSeg masks in {folder}")
    return folder


@pytest.mark.shared_data
def test_instances_equal_the_reference_on_monuseg_distance_maps(shared_data: Path):
    """Ground-truth distance maps of real MoNuSeg nuclei, with smooth noise like a network's output."""
    from sslzoo.data.io import read_label_map
    from sslzoo.data.targets import distance_map_target

    rng = np.random.default_rng(0)
    for path in sorted((_monuseg(shared_data) / "masks").glob("*.png"))[:3]:
        distance = distance_map_target(read_label_map(path))
        noise = ndi.gaussian_filter(rng.normal(0, 0.15, distance.shape), 2.0).astype(np.float32)
        distance = np.clip(distance + noise, 0, None)
        expected, got = reference_instances(distance, NUCLEI), distance_to_instances(distance, NUCLEI)
        assert expected.max() > 100
        assert np.array_equal(got, expected) or aji_plus(got, expected) >= 0.99, path.name


@pytest.mark.shared_data
def test_instances_equal_the_reference_on_the_nuclei_models_output(shared_data: Path):
    from sslzoo.data.io import read_image
    from sslzoo.hub.resolve import load_segmenter

    image_path = sorted((_monuseg(shared_data) / "images").glob("*.png"))[0]
    segmenter = load_segmenter("nuclei")
    distance = segmenter.predict_map(read_image(image_path)[:400, :400])
    params = segmenter.config.watershed
    assert params.h is not None
    expected, got = reference_instances(distance, params), distance_to_instances(distance, params)
    assert expected.max() > 40
    assert np.array_equal(got, expected)
