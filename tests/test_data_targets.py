"""Distance-map targets, relabelling, and the synthetic data generators."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sslzoo.data.synthetic import synthetic_lesion, synthetic_nuclei, synthetic_two_class_images
from sslzoo.data.targets import distance_map_target, relabel_contiguous
from sslzoo.errors import DataError


def _reference_distance_map(labels: np.ndarray) -> np.ndarray:
    """Slow reference: a full-image EDT per object, the image border counting as border."""
    out = np.zeros(labels.shape, dtype=np.float64)
    for k in np.unique(labels[labels > 0]):
        inside = np.pad(labels == k, 1)
        dist = ndimage.distance_transform_edt(inside)[1:-1, 1:-1]
        out[labels == k] = dist[labels == k] / dist.max()
    return out


def _touching_squares() -> np.ndarray:
    labels = np.zeros((20, 30), dtype=np.int64)
    labels[2:12, 2:12] = 4  # two 10x10 squares sharing an edge
    labels[2:12, 12:22] = 9
    labels[15:20, 25:30] = 2  # touches the image corner
    return labels


def test_distance_map_on_touching_squares() -> None:
    labels = _touching_squares()
    dmap = distance_map_target(labels)
    assert dmap.dtype == np.float32 and dmap.shape == labels.shape
    assert np.all(dmap[labels == 0] == 0)
    for k in (2, 4, 9):
        assert dmap[labels == k].max() == 1.0
        assert dmap[labels == k].min() > 0
    # the shared edge is a border for both squares: columns 11 and 12 sit at distance 1 of 5
    assert np.allclose(dmap[7, 11], 1 / 5) and np.allclose(dmap[7, 12], 1 / 5)
    # a single EDT on the union would have merged them into one bump
    union = ndimage.distance_transform_edt(np.pad(labels > 0, 1))[1:-1, 1:-1]
    assert union[7, 11] > 1
    assert np.allclose(dmap, _reference_distance_map(labels), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_map_matches_slow_reference_on_synthetic_nuclei(seed: int) -> None:
    _, labels = synthetic_nuclei(size=128, n=16, seed=seed, touching=True)
    dmap = distance_map_target(labels)
    assert np.allclose(dmap, _reference_distance_map(labels), atol=1e-6)
    assert np.all((dmap > 0) == (labels > 0))
    peaks = ndimage.maximum(dmap, labels, index=np.arange(1, labels.max() + 1))
    assert np.all(np.asarray(peaks) == 1.0)


def test_distance_map_handles_gaps_in_ids_and_bad_input() -> None:
    labels = np.zeros((8, 8), dtype=np.uint16)
    labels[1:4, 1:4] = 500
    assert distance_map_target(labels).max() == 1.0
    assert distance_map_target(np.zeros((4, 4), dtype=np.int32)).sum() == 0
    with pytest.raises(DataError, match="integer"):
        distance_map_target(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(DataError, match="2-D"):
        distance_map_target(np.ones((4, 4, 2), dtype=np.int64))


def test_relabel_contiguous_keeps_objects_and_order() -> None:
    labels = np.array([[0, 7, 7], [30, 0, 2], [30, 2, 0]], dtype=np.int32)
    out = relabel_contiguous(labels)
    assert out.dtype == np.int64
    assert np.array_equal(out, np.array([[0, 2, 2], [3, 0, 1], [3, 1, 0]]))
    with pytest.raises(DataError, match="negative"):
        relabel_contiguous(np.array([[-1, 0]]))


def test_synthetic_nuclei_deterministic_contiguous_and_touching() -> None:
    image, labels = synthetic_nuclei(size=128, n=12, seed=4)
    again_image, again_labels = synthetic_nuclei(size=128, n=12, seed=4)
    assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels)
    assert not np.array_equal(labels, synthetic_nuclei(size=128, n=12, seed=5)[1])
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and labels.dtype == np.int64
    ids = np.unique(labels)
    assert np.array_equal(ids, np.arange(labels.max() + 1)) and labels.max() == 12
    for k in ids[1:]:  # every object is one connected piece
        assert ndimage.label(labels == k)[1] == 1
    # H&E-like: nuclei darker and bluer than the stroma
    assert image[labels > 0].mean() < image[labels == 0].mean() - 50

    # touching pairs exist with touching=True and not without
    def touching_pairs(lab: np.ndarray) -> int:
        grown = ndimage.grey_dilation(lab, size=3)
        contact = (grown != lab) & (lab > 0)
        return len(set(zip(lab[contact].tolist(), grown[contact].tolist(), strict=True)))

    assert touching_pairs(labels) >= 4
    assert touching_pairs(synthetic_nuclei(size=128, n=12, seed=4, touching=False)[1]) == 0


def test_synthetic_lesion_and_two_class_images() -> None:
    image, mask = synthetic_lesion(size=96, seed=2)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert 0.02 < mask.mean() < 0.6 and ndimage.label(mask)[1] == 1
    assert image[mask == 1].mean() < image[mask == 0].mean() - 40  # lesion darker than skin
    assert np.array_equal(synthetic_lesion(96, 2)[0], image)

    images, labels = synthetic_two_class_images(n=10, size=32, seed=0)
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1] * 5
    assert np.array_equal(synthetic_two_class_images(n=10, size=32, seed=0)[0], images)
    # the classes differ in texture: gratings have more gradient energy than a few smooth blobs
    grey = images.mean(-1)
    energy = np.var(np.diff(grey, axis=1), axis=(1, 2)) + np.var(np.diff(grey, axis=2), axis=(1, 2))
    assert energy[labels == 1].min() > energy[labels == 0].max()
