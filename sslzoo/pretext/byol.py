"""BYOL (Grill et al. 2020): an online network predicts an EMA target network's projection.

ψ: target momentum τ from ``tau_base`` = 0.996 to 1 (cosine over the run), projector
``feature_dim -> 4096 -> 256``, predictor ``256 -> 4096 -> 256``; loss = symmetric
normalised MSE (``2 − 2 cos``) summed over both view orders. Δθ counts the
projector, predictor and the target copies of backbone and projector.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from sslzoo.pretext.base import PretextConfig, PretextMethod
from sslzoo.pretext.heads import PredictionMLP, ProjectionMLP
from sslzoo.pretext.losses import byol_loss
from sslzoo.pretext.momentum import cosine_momentum, ema_update, momentum_copy
from sslzoo.pretext.registry import register_method


@register_method
class BYOL(PretextMethod):
    """Online encoder + projector + predictor; target = EMA of encoder + projector."""

    name: ClassVar[str] = "byol"
    default_params: ClassVar[dict[str, Any]] = {
        "tau_base": 0.996,
        "proj_hidden_dim": 4096,
        "proj_out_dim": 256,
        "pred_hidden_dim": 4096,
    }
    psi: ClassVar[list[str]] = ["tau_base", "proj_hidden_dim", "proj_out_dim", "pred_hidden_dim"]
    paper_psi: ClassVar[list[str]] = ["tau_base"]
    batch_note: ClassVar[str] = "no negatives; BatchNorm in the heads needs batches > 1"
    notes: ClassVar[str] = "EMA target (tau 0.996->1 cosine); symmetric normalised MSE"

    def __init__(self, config: PretextConfig):
        super().__init__(config)
        out_dim = int(self.params["proj_out_dim"])
        self.projector = ProjectionMLP(self.feature_dim, int(self.params["proj_hidden_dim"]), out_dim)
        self.predictor = PredictionMLP(out_dim, int(self.params["pred_hidden_dim"]), out_dim)
        self.target_encoder = momentum_copy(self.encoder)
        self.target_projector = momentum_copy(self.projector)
        self.current_tau = float(self.params["tau_base"])

    def extra_modules(self) -> dict[str, nn.Module]:
        return {
            "projector": self.projector,
            "predictor": self.predictor,
            "target_encoder": self.target_encoder,
            "target_projector": self.target_projector,
        }

    def target_projection(self, images: Tensor) -> Tensor:
        return self.target_projector(self.target_encoder(images)[-1].mean(dim=(2, 3))).detach()

    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p1 = self.predictor(self.projector(self.embed(view1)))
        p2 = self.predictor(self.projector(self.embed(view2)))
        t1, t2 = self.target_projection(view1), self.target_projection(view2)
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return loss, {"normalised_mse": loss.detach(), "tau": loss.new_tensor(self.current_tau)}

    def after_optimizer_step(self) -> None:
        self.current_tau = cosine_momentum(float(self.params["tau_base"]), self.training_progress)
        ema_update(self.encoder, self.target_encoder, self.current_tau)
        ema_update(self.projector, self.target_projector, self.current_tau)
