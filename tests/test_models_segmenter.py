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


def test_an_image_that_fits_inference_tile_runs_whole_in_one_padded_pass():
    seg = _segmenter("instance")
    shapes = []
    seg.model.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    image = np.random.default_rng(3).integers(0, 255, (70, 150, 3), dtype=np.uint8)
    out_map = seg.predict_map(image)
    assert shapes == [(1, 3, 96, 160)]  # one pass, each side reflect-padded to a multiple of 32
    from sslzoo.data.tiling import pad_to
    from sslzoo.data.transforms import normalize_to_tensor

    with torch.no_grad():
        direct = seg.model(normalize_to_tensor(pad_to(image, 96, 160))[None])[0, 0, :70, :150].clamp(min=0)
    np.testing.assert_allclose(out_map, direct.numpy(), atol=1e-5)


def test_a_larger_image_runs_in_overlapping_windows_of_inference_tile():
    from sslzoo.data.tiling import tile_grid

    seg = _segmenter("instance")
    seg.config.inference_tile = 64
    shapes = []
    seg.model.register_forward_hook(lambda module, args, out: shapes.extend([tuple(args[0].shape[1:])] * len(args[0])))
    image = np.random.default_rng(4).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    out_map = seg.predict_map(image)
    assert out_map.shape == (100, 150)
    assert shapes == [(3, 64, 64)] * len(tile_grid(100, 150, 64, 16))
    assert seg.window_geometry(100, 150) == (64, 16) and seg.window_geometry(64, 40) == (64, 0)


def test_tiled_prediction_equals_whole_image_prediction_inside_a_tile():
    seg = _segmenter("semantic")
    seg.config.tile_overlap = 0
    seg.config.inference_tile = 64  # windows of 64 px: the left window is the left half
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
