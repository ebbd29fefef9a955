import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from sslzoo.errors import DataError, NotFoundError
from sslzoo.models.segmenter import Segmenter, SegmenterConfig


def _segmenter(task):
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=1)
    return Segmenter(model, SegmenterConfig(task=task, backbone="resnet18", tile_size=64, tile_overlap=16))


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_predict_keeps_input_size_and_roundtrips_through_files(tmp_path, task):
    seg = _segmenter(task)
    image = np.random.default_rng(0).integers(0, 255, (70, 150, 3), dtype=np.uint8)  # not a tile multiple
    out_map = seg.predict_map(image)
    labels = seg.postprocess(out_map)
    assert out_map.shape == labels.shape == (70, 150)
    assert labels.dtype == np.int32
    if task == "semantic":
        assert out_map.min() >= 0.0 and out_map.max() <= 1.0 and set(np.unique(labels)) <= {0, 1}
    seg.save_pretrained(tmp_path / "seg")
    again = Segmenter.from_pretrained(tmp_path / "seg")
    assert again.config == seg.config
    np.testing.assert_allclose(again.predict_map(image), out_map, atol=1e-5)


def test_tiled_prediction_equals_whole_image_prediction_inside_a_tile():
    seg = _segmenter("semantic")
    seg.config.tile_overlap = 0
    image = np.random.default_rng(1).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    full = seg.predict_map(image)
    left = seg.predict_map(np.ascontiguousarray(image[:, :64]))
    np.testing.assert_allclose(full[:, :64], left, atol=1e-5)


def test_bad_inputs():
    seg = _segmenter("semantic")
    with pytest.raises(DataError, match="uint8 RGB"):
        seg.predict(np.zeros((10, 10), np.uint8))
    with pytest.raises(NotFoundError):
        Segmenter.from_pretrained("/nonexistent")


def test_resize_to_runs_the_model_on_the_squeezed_image_and_returns_the_input_size():
    import cv2

    seg = _segmenter("semantic")
    seg.config.resize_to = 64
    image = np.random.default_rng(2).integers(0, 255, (90, 200, 3), dtype=np.uint8)
    out_map = seg.predict_map(image)
    assert out_map.shape == (90, 200) and seg.predict(image).shape == (90, 200)
    squeezed = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(seg.predict_tiles(squeezed), (200, 90), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out_map, expected, atol=1e-5)
    # without resize_to the same model sees a different (unsqueezed) image
    seg.config.resize_to = None
    assert not np.allclose(seg.predict_map(image), out_map, atol=1e-3)
