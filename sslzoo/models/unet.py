"""U-Net assembly: an smp U-Net around an already-resolved encoder.

``build_unet(encoder, backbone, task)`` returns ``smp.Unet`` with one output channel: a foreground
logit (semantic task, sigmoid + Dice loss) or a distance-map regression (instance task,
smooth-L1 against ``sslzoo.data.targets.distance_map_target``). ``frozen=True`` stops
gradients into the encoder (``requires_grad=False``). ``frozen_bn`` says what its batch norm does:
``"train"`` (default, the authors' code: only ``requires_grad=False``, so batch norm normalises with
batch statistics and updates its running statistics while training) or ``"eval"`` (running statistics
fixed, the encoder stays in eval mode).
The encoder (a pretext export, a zoo entry or a baseline) is resolved by the caller, normally with
``sslzoo.hub.load_encoder(init, backbone)``: models sit below the hub and do not resolve names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import segmentation_models_pytorch as smp
import torch
from torch import nn

from sslzoo.errors import ConfigError
from sslzoo.models.encoders import check_backbone, encoder_state_dict, load_encoder_state
from sslzoo.vocabulary import FROZEN_BN_MODES, FrozenBN, Task

#: decoder widths: smp's default, and the authors' (``decoder_filters`` of their ds_*.yaml)
SMP_DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)
AUTHORS_DECODER_CHANNELS: tuple[int, ...] = (512, 256, 128, 64, 32)


def build_unet(
    encoder: nn.Module | Mapping[str, torch.Tensor],
    backbone: str,
    task: Task = "semantic",
    frozen: bool = False,
    source: str = "<encoder>",
    frozen_bn: FrozenBN = "train",
    decoder_channels: Sequence[int] = SMP_DECODER_CHANNELS,
) -> smp.Unet:
    """U-Net (one output channel for ``task``) whose encoder weights are copied strictly from ``encoder``.

    ``encoder`` is an encoder module or its state dict (smp/torchvision key names); ``source`` names it in
    error messages; ``frozen_bn`` and ``decoder_channels`` as in the module docstring.
    """
    check_backbone(backbone)
    state = encoder_state_dict(encoder) if isinstance(encoder, nn.Module) else dict(encoder)
    model = smp.Unet(
        backbone,
        encoder_weights=None,
        in_channels=3,
        classes=1,
        activation=None,
        decoder_channels=tuple(int(c) for c in decoder_channels),
    )
    load_encoder_state(model.encoder, state, source=source)
    if frozen:
        freeze_encoder(model, frozen_bn)
    return model


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
