"""Autoencoder: a U-Net without skip connections reconstructs its input.

The decoder sees only the last encoder stage (stride 32) and upsamples it through
five smp ``UnetDecoderBlock`` s (no skip inputs) to full resolution, followed by a
3x3 convolution to RGB. Loss: smooth-L1 between the reconstruction and the input view, optimiser
Adam (lr = ``PretextConfig.lr``, cosine annealing) as in the authors' UnetAE (cfg_unet_ae.yaml:
SmoothL1Loss, Adam); ``loss=mse`` / ``optimizer=sgd`` give the shared SGD setup with MSE.
Δθ = the decoder.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sslzoo.pretext.base import PretextConfig, PretextMethod
from sslzoo.pretext.losses import reconstruction_loss
from sslzoo.pretext.registry import register_method


class SkiplessUnetDecoder(nn.Module):
    """U-Net decoder blocks fed only by the deepest feature map: each block doubles the resolution."""

    def __init__(self, in_channels: int, decoder_channels: list[int], out_channels: int = 3):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock

        widths = [in_channels, *decoder_channels]
        self.blocks = nn.ModuleList(
            UnetDecoderBlock(c_in, 0, c_out) for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, kernel_size=3, padding=1)

    def forward(self, deepest: Tensor) -> Tensor:
        x = deepest
        for block in self.blocks:
            x = block(x, 2 * x.shape[-2], 2 * x.shape[-1])
        return self.head(x)


@register_method
class Autoencoder(PretextMethod):
    """Reconstruct each view from the stride-32 features (MSE); both views form one batch."""

    name: ClassVar[str] = "autoencoder"
    default_params: ClassVar[dict[str, Any]] = {
        "decoder_channels": [256, 128, 64, 32, 16],
        "loss": "smooth_l1",
        "optimizer": "adam",
    }
    psi: ClassVar[list[str]] = ["decoder_channels", "loss", "optimizer"]
    paper_psi: ClassVar[list[str]] = []
    batch_note: ClassVar[str] = "none (per-sample loss)"
    notes: ClassVar[str] = "U-Net without skip connections; smooth-L1 reconstruction of the input view, Adam"

    def __init__(self, config: PretextConfig):
        super().__init__(config)
        channels = [int(c) for c in self.params["decoder_channels"]]
        if len(channels) != 5:
            from sslzoo.errors import ConfigError

            raise ConfigError(f"decoder_channels needs 5 widths (stride 32 -> 1), got {channels}")
        self.decoder = SkiplessUnetDecoder(self.feature_dim, channels)
        if self.params["loss"] not in ("smooth_l1", "mse") or self.params["optimizer"] not in ("adam", "sgd"):
            from sslzoo.errors import ConfigError

            raise ConfigError(
                f"autoencoder: loss must be smooth_l1 or mse and optimizer adam or sgd, got "
                f"{self.params['loss']!r} / {self.params['optimizer']!r}"
            )

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"decoder": self.decoder}

    def reconstruct(self, images: Tensor) -> Tensor:
        """Decode the last encoder stage back to an image of the input's size."""
        out = self.decoder(self.encoder(images)[-1])
        if out.shape[-2:] != images.shape[-2:]:
            out = nn.functional.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        images = torch.cat([view1, view2], dim=0)
        loss = reconstruction_loss(self.reconstruct(images), images, str(self.params["loss"]))
        return loss, {str(self.params["loss"]): loss.detach()}

    def configure_optimizers(self) -> Any:
        """Adam(lr) with the shared cosine annealing (the authors' UnetAE), or the shared SGD setup."""
        if self.params["optimizer"] == "sgd":
            return super().configure_optimizers()
        optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.config.lr)
        return self.with_cosine_schedule(optimizer)
