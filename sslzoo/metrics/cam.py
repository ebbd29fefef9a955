"""Grad-CAM of a segmentation U-Net's encoder, and the CAM quality of CONTRACTS.md section 3.

The explained quantity is the sum of the predicted foreground logits inside the predicted foreground mask
(:class:`ForegroundLogitTarget`); gradients flow back to a target layer of the encoder, by default its last
stage (``encoder.layer4`` of an smp ResNet). Grad-CAM itself comes from ``pytorch-grad-cam``
(``pytorch_grad_cam.GradCAM``), which returns one map per image at the input size, min-max scaled to [0, 1].

CAM quality = sum(cam · mask) / sum(cam): the share of the CAM mass inside the ground-truth mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from sslzoo.errors import ConfigError, DataError


class ForegroundLogitTarget:
    """Grad-CAM target for segmentation: sum of the foreground logits over the predicted foreground pixels.

    For one sample's output (C, H, W): with one channel the predicted mask is ``logit > threshold`` (0.0 is
    probability 0.5 under a sigmoid); with several channels it is ``argmax == channel`` (softmax classes). The
    mask is taken from the output itself and not differentiated. When nothing is predicted as foreground, all
    pixels count, so the map still shows what would raise the foreground score.
    """

    def __init__(self, channel: int = 0, threshold: float = 0.0) -> None:
        self.channel = channel
        self.threshold = threshold

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if model_output.ndim == 2:
            model_output = model_output.unsqueeze(0)
        if not 0 <= self.channel < model_output.shape[0]:
            raise ConfigError(f"foreground channel {self.channel} is outside the model's {model_output.shape[0]}")
        logits = model_output[self.channel]
        with torch.no_grad():
            single = model_output.shape[0] == 1
            mask = logits > self.threshold if single else model_output.argmax(dim=0) == self.channel
            if not bool(mask.any()):
                mask = torch.ones_like(mask)
        return (logits * mask.to(logits.dtype)).sum()


def default_target_layer(model: nn.Module) -> nn.Module:
    """The last stage of ``model.encoder`` (``layer4`` .. ``layer1`` of a ResNet, the deepest present)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ConfigError(f"{type(model).__name__} has no 'encoder'; pass target_layer explicitly")
    for name in ("layer4", "layer3", "layer2", "layer1"):
        layer = getattr(encoder, name, None)
        if isinstance(layer, nn.Module):
            return layer
    raise ConfigError(f"cannot find the last stage of encoder {type(encoder).__name__}; pass target_layer")


def encoder_gradcam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module | None = None,
    channel: int = 0,
    threshold: float = 0.0,
) -> np.ndarray:
    """Grad-CAM maps (B, H, W) in [0, 1] for a batch of normalised images (B, C, H, W), one per image.

    Explains :class:`ForegroundLogitTarget` (``channel``, ``threshold``) at ``target_layer`` (default: the
    encoder's last stage). The model runs in eval mode; its train/eval mode is restored and the hooks of
    pytorch-grad-cam are removed afterwards.

    Frozen encoders (``requires_grad=False``, the paper's Fig. 5 setting) work: the pass runs under
    ``torch.enable_grad()`` on a copy of ``images`` that requires grad, so the target layer's activations
    are part of the autograd graph whatever the parameters' flags. No parameter flag is changed and frozen
    parameters receive no ``.grad``; the trainability of the model is the same afterwards.
    """
    from pytorch_grad_cam import GradCAM

    if images.ndim != 4:
        raise DataError(f"Grad-CAM expects a batch of images (B, C, H, W), got shape {tuple(images.shape)}")
    layer = target_layer if target_layer is not None else default_target_layer(model)
    modes = [(module, module.training) for module in model.modules()]
    maps = None
    inputs = images.detach().clone().requires_grad_(True)  # the graph reaches frozen layers through the input
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
            targets = [ForegroundLogitTarget(channel, threshold) for _ in range(images.shape[0])]
            maps = cam(input_tensor=inputs, targets=targets)
    finally:
        for module, mode in modes:  # per module: a frozen encoder may sit in another mode than its parent
            module.training = mode
    if maps is None:  # pytorch-grad-cam's context manager swallows IndexError (and prints it)
        raise DataError("Grad-CAM failed: the target layer produced no activations or gradients for this input")
    return np.asarray(maps, dtype=np.float32)


def cam_quality(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the CAM mass inside the ground-truth mask: ``sum(cam * (mask > 0)) / sum(cam)``; 0.0 when the CAM
    has no mass. ``cam`` must be non-negative and of the mask's shape (instance label maps count as foreground).
    """
    c = np.asarray(cam, dtype=np.float64)
    m = np.asarray(mask)
    if c.shape != m.shape:
        raise DataError(f"CAM of shape {c.shape} does not match the mask of shape {m.shape}; resize one of them")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise DataError("a CAM must hold finite non-negative values (Grad-CAM maps are in [0, 1])")
    total = float(c.sum())
    if total <= 0.0:
        return 0.0
    return float(c[m > 0].sum() / total)


def mean_cam_quality(cams: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | np.ndarray) -> float:
    """Mean of :func:`cam_quality` over images."""
    if len(cams) != len(masks) or len(cams) == 0:
        raise DataError(f"got {len(cams)} CAMs and {len(masks)} masks; pass one mask per CAM (at least one)")
    return float(np.mean([cam_quality(c, m) for c, m in zip(cams, masks, strict=True)]))


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The CAM as a jet heat map blended over ``image`` (H, W[, C], any dtype): uint8 RGB (H, W, 3) for figures."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from sslzoo.data.io import to_rgb_uint8

    rgb = to_rgb_uint8(np.asarray(image))
    heat: np.ndarray = np.asarray(cam, dtype=np.float32)
    if heat.ndim != 2:
        raise DataError(f"a CAM is one 2-D map, got shape {heat.shape}")
    if not 0.0 <= image_weight <= 1.0:
        raise ConfigError(f"image_weight must lie in [0, 1], got {image_weight}")
    if heat.shape != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    return show_cam_on_image(rgb.astype(np.float32) / 255.0, heat, use_rgb=True, image_weight=image_weight)
