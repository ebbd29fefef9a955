"""U-Net assembly: an smp U-Net whose encoder comes from any pretext export or baseline.

``build_unet(init, task)`` returns ``smp.Unet`` with one output channel: a foreground
logit (semantic task, sigmoid + Dice loss) or a distance-map regression (instance task,
smooth-L1 against ``sslzoo.data.targets.distance_map_target``). ``frozen=True`` stops
gradients into the encoder and keeps its batch-norm statistics fixed (eval mode).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from sslzoo.models.encoders import EncoderConfig, encoder_state_dict, load_encoder_state, resolve_encoder
from sslzoo.vocabulary import Task


def build_unet(
    init: str = "random", backbone: str = "resnet50", task: Task = "semantic", frozen: bool = False
) -> tuple[smp.Unet, EncoderConfig]:
    """U-Net whose encoder is initialised from ``init`` (``random`` | ``imagenet`` | folder | zoo name)."""
    encoder, config = resolve_encoder(init, backbone)
    model = smp.Unet(config.backbone, encoder_weights=None, in_channels=3, classes=1, activation=None)
    load_encoder_state(model.encoder, encoder_state_dict(encoder), source=str(init))
    if frozen:
        freeze_encoder(model)
    return model, config


def freeze_encoder(model: smp.Unet) -> None:
    """No gradients into the encoder; its batch-norm layers stay in eval mode even under ``model.train()``."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    model.encoder.eval()
    model.encoder.train = _stay_in_eval.__get__(model.encoder, nn.Module)  # type: ignore[method-assign]


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement ``train()`` for a frozen encoder: it never leaves eval mode."""
    return nn.Module.train(self, False)
