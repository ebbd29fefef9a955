"""U-Net assembly: an smp U-Net whose encoder comes from any pretext export or baseline.

``build_unet(init, task)`` returns ``smp.Unet`` with one output channel: a foreground
logit (semantic task, sigmoid + Dice loss) or a distance-map regression (instance task,
smooth-L1 against ``sslzoo.data.targets.distance_map_target``). ``frozen=True`` stops
gradients into the encoder (``requires_grad=False``). ``frozen_bn`` says what its batch norm does:
``"train"`` (default, the authors' code: only ``requires_grad=False``, so batch norm normalises with
batch statistics and updates its running statistics while training) or ``"eval"`` (running statistics
fixed, the encoder stays in eval mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
from torch import nn

from sslzoo.errors import ConfigError
from sslzoo.models.encoders import EncoderConfig, encoder_state_dict, load_encoder_state, resolve_encoder
from sslzoo.vocabulary import FROZEN_BN_MODES, FrozenBN, Task

#: decoder widths: smp's default, and the authors' (``decoder_filters`` of their ds_*.yaml)
SMP_DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)
AUTHORS_DECODER_CHANNELS: tuple[int, ...] = (512, 256, 128, 64, 32)


def build_unet(
    init: str = "random",
    backbone: str = "resnet50",
    task: Task = "semantic",
    frozen: bool = False,
    frozen_bn: FrozenBN = "train",
    decoder_channels: Sequence[int] = SMP_DECODER_CHANNELS,
) -> tuple[smp.Unet, EncoderConfig]:
    """U-Net whose encoder is initialised from ``init`` (``random`` | ``imagenet`` | folder | zoo name)."""
    encoder, config = resolve_encoder(init, backbone)
    model = smp.Unet(
        config.backbone,
        encoder_weights=None,
        in_channels=3,
        classes=1,
        activation=None,
        decoder_channels=tuple(int(c) for c in decoder_channels),
    )
    load_encoder_state(model.encoder, encoder_state_dict(encoder), source=str(init))
    if frozen:
        freeze_encoder(model, frozen_bn)
    return model, config


def freeze_encoder(model: smp.Unet, frozen_bn: FrozenBN = "train") -> None:
    """No gradients into the encoder. ``frozen_bn="train"``: nothing else (batch norm follows ``model.train()``);
    ``"eval"``: its batch-norm layers stay in eval mode even under ``model.train()``."""
    if frozen_bn not in FROZEN_BN_MODES:
        raise ConfigError(f"frozen_bn must be one of {', '.join(FROZEN_BN_MODES)}, got {frozen_bn!r}")
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    if frozen_bn == "train":
        return
    model.encoder.eval()
    model.encoder.train = _stay_in_eval.__get__(model.encoder, nn.Module)


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement ``train()`` for a frozen encoder: it never leaves eval mode."""
    return nn.Module.train(self, False)
