import numpy as np
import pytest
from scipy import ndimage as ndi

from sslzoo.downstream.watershed import tune_watershed
from sslzoo.errors import DataError
from sslzoo.models.postprocess import WatershedParams, distance_to_instances, remove_small_and_relabel


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
