"""Grad-CAM of a U-Net encoder, the foreground target, CAM quality and the overlay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslzoo.errors import DataError
from sslzoo.metrics.cam import (
    ForegroundLogitTarget,
    cam_quality,
    default_target_layer,
    encoder_gradcam,
    mean_cam_quality,
    overlay,
)


def test_cam_quality_is_one_inside_zero_outside_and_the_mass_share_between():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    inside = np.zeros((8, 8), np.float32)
    inside[3:5, 3:5] = 0.7
    outside = np.zeros((8, 8), np.float32)
    outside[0, :] = 1.0
    assert cam_quality(inside, mask) == 1.0
    assert cam_quality(outside, mask) == 0.0
    assert cam_quality(np.ones((8, 8)), mask) == pytest.approx(16 / 64)
    half = inside + outside * (inside.sum() / outside.sum())  # equal mass inside and outside
    assert cam_quality(half, mask) == pytest.approx(0.5)
    labels = np.zeros((8, 8), np.int64)  # an instance label map counts all objects as foreground
    labels[2:4, 2:6], labels[4:6, 2:6] = 3, 7
    assert cam_quality(inside, labels) == 1.0
    assert mean_cam_quality([inside, outside], [mask, mask]) == pytest.approx(0.5)


def test_cam_quality_edge_cases():
    assert cam_quality(np.zeros((4, 4)), np.ones((4, 4))) == 0.0  # no mass
    with pytest.raises(DataError, match="does not match"):
        cam_quality(np.ones((4, 4)), np.ones((5, 4)))
    with pytest.raises(DataError, match="non-negative"):
        cam_quality(-np.ones((4, 4)), np.ones((4, 4)))


def test_foreground_target_sums_logits_inside_the_predicted_mask():
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]], requires_grad=True)  # (1, 2, 2)
    value = ForegroundLogitTarget()(logits)
    assert value.item() == pytest.approx(2.5)
    value.backward()
    assert logits.grad.tolist() == [[[1.0, 0.0], [1.0, 0.0]]]
    # nothing predicted: every pixel counts
    assert ForegroundLogitTarget()(torch.full((1, 2, 2), -1.0)).item() == pytest.approx(-4.0)
    # softmax classes: channel 1 where it wins the argmax
    two = torch.tensor([[[0.0, 5.0]], [[1.0, 2.0]]])  # (2, 1, 2)
    assert ForegroundLogitTarget(channel=1)(two).item() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def unet():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1)


def test_gradcam_on_a_resnet18_unet_returns_input_sized_maps_and_cleans_up(unet):
    assert default_target_layer(unet) is unet.encoder.layer4
    unet.train()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    maps = encoder_gradcam(unet, images)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert np.all(maps >= 0.0) and np.all(maps <= 1.0 + 1e-6)
    assert maps.max() > 0.0
    assert unet.training  # mode restored
    assert all(len(m._forward_hooks) == 0 for m in unet.modules())
    # an earlier target layer gives a different (finer) map of the same size
    finer = encoder_gradcam(unet, images[:1], target_layer=unet.encoder.layer2)
    assert finer.shape == (1, 64, 64) and not np.allclose(finer[0], maps[0])


def test_gradcam_works_on_a_frozen_encoder_and_leaves_it_frozen():
    """Issue 12, defect 2: Fig. 5 explains frozen encoders; no gradient reaches a frozen layer4 unless the CAM pass
    enables it. Afterwards the encoder is as frozen as before (no requires_grad, no .grad, same mode)."""
    from sslzoo.models.encoders import create_encoder
    from sslzoo.models.unet import build_unet

    torch.manual_seed(0)
    model = build_unet(create_encoder("resnet18"), "resnet18", "semantic", frozen=True)
    model.train()
    modes = {name: m.training for name, m in model.named_modules()}
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    assert not any(p.requires_grad for p in model.encoder.parameters())
    images = torch.randn(2, 3, 64, 64)
    maps = encoder_gradcam(model, images)
    assert maps.shape == (2, 64, 64) and maps.max() > 0.0 and float(maps.std()) > 0.0
    assert {name: p.requires_grad for name, p in model.named_parameters()} == trainable
    assert all(p.grad is None for p in model.encoder.parameters())
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert not images.requires_grad and images.grad is None
    with torch.no_grad():  # also when the caller disabled autograd
        assert encoder_gradcam(model, images[:1]).shape == (1, 64, 64)


def test_gradcam_localises_the_channel_that_drives_the_foreground():
    """Channel 0 sees red, channel 1 green; only channel 0 drives the foreground logit: the CAM mass must lie on
    the red square and none on the green one."""

    class RedDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.nn.Module()
            self.encoder.layer4 = torch.nn.Conv2d(3, 2, 1, bias=False)
            with torch.no_grad():
                self.encoder.layer4.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = torch.relu(self.encoder.layer4(x))
            return 2.0 * features[:, :1] - 1.0  # foreground logit > 0 exactly on red pixels

    image = torch.zeros(1, 3, 16, 16)
    image[0, 0, 2:7, 2:7] = 1.0  # red square
    image[0, 1, 9:14, 9:14] = 1.0  # green square
    red, green = np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)
    red[2:7, 2:7], green[9:14, 9:14] = 1, 1
    cam = encoder_gradcam(RedDetector(), image)[0]
    assert cam.shape == (16, 16)
    assert cam_quality(cam, red) == pytest.approx(1.0)
    assert cam_quality(cam, green) == 0.0


def test_overlay_returns_uint8_rgb_of_the_image_size():
    image = np.full((20, 30, 3), 128, np.uint8)
    cam = np.zeros((10, 15), np.float32)
    cam[:, :5] = 1.0  # resized to the image
    out = overlay(image, cam)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[:, 0], out[:, -1])  # hot and cold sides differ
    grey = overlay(np.full((20, 30), 0.5), np.zeros((20, 30)))  # grey float image
    assert grey.shape == (20, 30, 3)
    with pytest.raises(DataError):
        overlay(image, np.zeros((2, 10, 15)))
