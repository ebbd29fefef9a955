"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views.

ψ: temperature τ = 0.1 (the paper's setting), the positive not in NT-Xent's denominator (the authors'
``NTXentLossBiased``; ``positive_in_denominator=true`` for SimCLR's original), projection MLP
``feature_dim -> 1024 -> 128`` (2 layers, BN + ReLU), which gives Δθ ≈ 2.2 M for
ResNet-50 as in the paper's Table II.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from sslzoo.pretext.base import PretextConfig, PretextMethod
from sslzoo.pretext.heads import ProjectionMLP
from sslzoo.pretext.losses import nt_xent_loss
from sslzoo.pretext.registry import register_method


@register_method
class SimCLR(PretextMethod):
    """Contrast each image's two views against the other 2N − 2 views of the batch."""

    name: ClassVar[str] = "simclr"
    default_params: ClassVar[dict[str, Any]] = {
        "temperature": 0.1,
        "proj_hidden_dim": 1024,
        "proj_out_dim": 128,
        "positive_in_denominator": False,
    }
    psi: ClassVar[list[str]] = ["temperature", "proj_hidden_dim", "proj_out_dim", "positive_in_denominator"]
    paper_psi: ClassVar[list[str]] = ["temperature"]
    batch_note: ClassVar[str] = "large batch: negatives are the other 2N-2 views of the batch"
    notes: ClassVar[str] = "NT-Xent; 2-layer projection MLP"

    def __init__(self, config: PretextConfig):
        super().__init__(config)
        self.projector = ProjectionMLP(
            self.feature_dim, int(self.params["proj_hidden_dim"]), int(self.params["proj_out_dim"])
        )

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"projector": self.projector}

    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z1 = self.projector(self.embed(view1))
        z2 = self.projector(self.embed(view2))
        z1, z2 = self.gather_across_devices(z1, sync_grads=True), self.gather_across_devices(z2, sync_grads=True)
        loss = nt_xent_loss(z1, z2, float(self.params["temperature"]), bool(self.params["positive_in_denominator"]))
        return loss, {"nt_xent": loss.detach()}
