"""U-Net assembly: an smp U-Net around an already-resolved encoder.

``build_unet(encoder, backbone, task)`` returns ``smp.Unet`` with one output channel: a foreground
logit (semantic task, sigmoid + Dice loss) or a distance-map regression (instance task,
smooth-L1 against ``sslzoo.data.targets.distance_map_target``). ``frozen=True`` stops
gradients into the encoder and keeps its batch-norm statistics fixed (eval mode). The encoder
(a pretext export, a zoo entry or a baseline) is resolved by the caller, normally with
``sslzoo.hub.load_encoder(init, backbone)``: models sit below the hub and do not resolve names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import segmentation_models_pytorch as smp
import torch
from torch import nn

from sslzoo.models.encoders import check_backbone, encoder_state_dict, load_encoder_state

Task = Literal["semantic", "instance"]


def build_unet(
    encoder: nn.Module | Mapping[str, torch.Tensor],
    backbone: str,
    task: Task = "semantic",
    frozen: bool = False,
    source: str = "<encoder>",
) -> smp.Unet:
    """U-Net (one output channel for ``task``) whose encoder weights are copied strictly from ``encoder``.

    ``encoder`` is an encoder module or its state dict (smp/torchvision key names); ``source`` names it in
    error messages.
    """
    check_backbone(backbone)
    state = encoder_state_dict(encoder) if isinstance(encoder, nn.Module) else dict(encoder)
    model = smp.Unet(backbone, encoder_weights=None, in_channels=3, classes=1, activation=None)
    load_encoder_state(model.encoder, state, source=source)
    if frozen:
        freeze_encoder(model)
    return model


def freeze_encoder(model: smp.Unet) -> None:
    """No gradients into the encoder; its batch-norm layers stay in eval mode even under ``model.train()``."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    model.encoder.eval()
    model.encoder.train = _stay_in_eval.__get__(model.encoder, nn.Module)


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement ``train()`` for a frozen encoder: it never leaves eval mode."""
    return nn.Module.train(self, False)
