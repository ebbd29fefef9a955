"""Barlow Twins (Zbontar et al. 2021): drive the cross-correlation of two views' projections to I.

ψ: λ = 5e-3; projector of 3 linear layers ``feature_dim -> 2048 -> 2048 -> 2048``
(BN + ReLU between). The original uses 8192-wide layers (Δθ ≈ 151 M for ResNet-50);
2048 wide gives Δθ ≈ 12.6 M, the paper's Table II value.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from sslzoo.pretext.base import PretextConfig, PretextMethod
from sslzoo.pretext.heads import ProjectionMLP
from sslzoo.pretext.losses import barlow_twins_loss
from sslzoo.pretext.registry import register_method


@register_method
class BarlowTwins(PretextMethod):
    """Invariance (diagonal -> 1) + λ · redundancy reduction (off-diagonal -> 0)."""

    name: ClassVar[str] = "barlowtwins"
    default_params: ClassVar[dict[str, Any]] = {
        "lambd": 5e-3,
        "proj_hidden_dim": 2048,
        "proj_out_dim": 2048,
        "proj_layers": 3,
    }
    psi: ClassVar[list[str]] = ["lambd", "proj_hidden_dim", "proj_out_dim", "proj_layers"]
    paper_psi: ClassVar[list[str]] = ["lambd"]
    batch_note: ClassVar[str] = "batch statistics: needs batches >> 1 for a stable correlation matrix"
    notes: ClassVar[str] = "cross-correlation to identity; 3-layer projector"

    def __init__(self, config: PretextConfig):
        super().__init__(config)
        self.projector = ProjectionMLP(
            self.feature_dim,
            int(self.params["proj_hidden_dim"]),
            int(self.params["proj_out_dim"]),
            num_layers=int(self.params["proj_layers"]),
        )

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"projector": self.projector}

    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z1 = self.projector(self.embed(view1))
        z2 = self.projector(self.embed(view2))
        loss, invariance, redundancy = barlow_twins_loss(z1, z2, float(self.params["lambd"]))
        return loss, {"invariance": invariance.detach(), "redundancy": redundancy.detach()}
