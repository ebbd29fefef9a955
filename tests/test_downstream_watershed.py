import numpy as np
import pytest
from scipy import ndimage as ndi

from sslzoo.downstream.watershed import tune_watershed
from sslzoo.errors import DataError
from sslzoo.models.postprocess import FIXED_WATERSHED, WatershedParams, distance_to_instances, remove_small_and_relabel


def _disks(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int64)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (labels == 0)] = i
    return labels


def _normalised_distance(labels):
    out = np.zeros(labels.shape, np.float32)
    for i in range(1, labels.max() + 1):
        d = ndi.distance_transform_edt(labels == i)
        out[labels == i] = d[labels == i] / d.max()
    return out


def test_touching_disks_are_separated():
    # two disks of radius 12 whose centres are 22 px apart overlap: one blob in a binary mask
    labels = _disks((64, 80), [(32, 28), (32, 50)], 12)
    assert ndi.label(labels > 0)[1] == 1  # the binary mask cannot separate them
    pred = distance_to_instances(_normalised_distance(labels), WatershedParams(sigma=1.0))
    assert pred.max() == 2
    for i in (1, 2):  # each predicted object lies (almost) entirely in one true disk
        overlap = np.bincount(labels[pred == i], minlength=3)[1:]
        assert overlap.max() / overlap.sum() > 0.95


def test_h_maxima_seeds_and_empty_map():
    labels = _disks((64, 96), [(32, 20), (32, 42), (32, 75)], 11)
    pred = distance_to_instances(_normalised_distance(labels), WatershedParams(h=0.1))
    assert pred.max() == 3
    assert distance_to_instances(np.zeros((16, 16))).max() == 0


def test_small_objects_removed_and_ids_contiguous():
    labels = np.zeros((10, 10), np.int64)
    labels[0:5, 0:5] = 7
    labels[8, 8] = 3
    out = remove_small_and_relabel(labels, min_size=5)
    assert set(np.unique(out)) == {0, 1}
    assert (out == 1).sum() == 25


def test_bad_input_and_tuning_picks_a_separating_setting():
    with pytest.raises(DataError):
        distance_to_instances(np.zeros((2, 3, 4)))
    labels = _disks((64, 80), [(32, 28), (32, 50)], 12)
    dist = _normalised_distance(labels)

    def count_score(pred, gt):  # 1 when the object count is right
        return float(pred.max() == gt.max())

    space = [WatershedParams(seed_threshold=0.05, foreground_threshold=0.01), WatershedParams(seed_threshold=0.6)]
    best, score = tune_watershed([dist], [labels], count_score, space)
    assert score == 1.0 and best.seed_threshold == 0.6


def test_fixed_setting_is_the_authors_and_fills_holes_and_filters_by_median_area():
    assert (FIXED_WATERSHED.sigma, FIXED_WATERSHED.foreground_threshold, FIXED_WATERSHED.seed_threshold) == (
        1.0,
        0.09,
        0.4,
    )
    assert FIXED_WATERSHED.fill_holes and FIXED_WATERSHED.area_median_factors == (0.05, 10.0)
    # five disks of radius 8, one tiny speck (area < 0.05 x median) and one disk with a hole in its prediction
    labels = _disks((96, 160), [(20, 20), (20, 60), (20, 100), (20, 140), (70, 20)], 8)
    distance = _normalised_distance(labels)
    distance[70, 100] = distance[71, 100] = 1.0  # a 2-pixel speck
    ring = _disks((96, 160), [(70, 140)], 12)
    distance[ring > 0] = 0.6
    distance[66:75, 136:145] = 0.0  # hole inside the ring
    plain = WatershedParams(sigma=0.0, foreground_threshold=0.09, seed_threshold=0.4, min_size=0)
    fixed = FIXED_WATERSHED.model_copy(update={"sigma": 0.0})
    with_speck = distance_to_instances(distance, plain)
    assert with_speck.max() == 7 and (with_speck[66:75, 136:145] == 0).all()
    out = distance_to_instances(distance, fixed)
    assert out.max() == 6  # the speck is filtered (area <= 0.05 x median), the other six objects stay
    assert out[70, 100] == 0
    assert (out[66:75, 136:145] > 0).all()  # the hole is filled
    assert set(np.unique(out)) == set(range(7))  # ids contiguous
