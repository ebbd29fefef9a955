"""DenseCL (Wang et al., "Dense Contrastive Learning for Self-Supervised Visual Pre-Training", CVPR 2021).

MoCo v2 (:class:`sslzoo.pretext.moco.MoCo`: momentum key encoder m = 0.999, MLP head, queue,
τ = 0.07 as in the authors' dense_cl.py) plus a dense branch:

- a 1x1-conv MLP on the last stage gives an S×S grid of 128-d vectors per view;
- location i of view 1 is paired with the location j of view 2 whose *backbone* feature is the most
  cosine-similar (:func:`~sslzoo.pretext.dense_losses.match_locations`);
- negatives come from a second queue holding the spatial mean of each key's dense grid;
- loss ``(1 - λ)·L_global + λ·L_dense`` with λ = 0.5.

The dense head has a momentum copy too; both queues are clamped to the samples per epoch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo.pretext.base import PretextConfig
from sslzoo.pretext.dense_losses import DenseProjectionHead, dense_info_nce, match_locations
from sslzoo.pretext.losses import info_nce_loss
from sslzoo.pretext.moco import MoCo
from sslzoo.pretext.momentum import FeatureQueue, ema_update, momentum_copy
from sslzoo.pretext.registry import register_method


@register_method
class DenseCL(MoCo):
    """DenseCL on an smp ResNet: MoCo v2 global InfoNCE + dense InfoNCE over backbone correspondences."""

    name: ClassVar[str] = "densecl"
    default_params: ClassVar[dict[str, Any]] = {
        **MoCo.default_params,
        "dense_weight": 0.5,
        "grid_size": 0,  # 0: the native grid of the last stage (input/32); S > 0: adaptive pooling to S×S
    }
    psi: ClassVar[list[str]] = [*MoCo.psi, "dense_weight", "grid_size"]
    paper_psi: ClassVar[list[str]] = [*MoCo.paper_psi, "dense_weight"]
    batch_note: ClassVar[str] = "small batch OK: negatives come from two queues (global, dense; K <= samples per epoch)"
    notes: ClassVar[str] = "MoCo v2 + 1x1-conv dense head; positives by backbone-feature correspondence"

    def __init__(self, config: PretextConfig):
        super().__init__(config)
        hidden, out = int(self.params["head_hidden_dim"]), int(self.params["head_out_dim"])
        grid = int(self.params["grid_size"]) or None
        self.dense_head = DenseProjectionHead(self.feature_dim, hidden, out, grid_size=grid)
        self.key_dense_head = momentum_copy(self.dense_head)
        self.dense_queue = FeatureQueue(self.queue_size, out)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {**super().extra_modules(), "dense_head": self.dense_head, "key_dense_head": self.key_dense_head}

    @staticmethod
    def _branch(features: Tensor, head: nn.Module, dense_head: DenseProjectionHead) -> dict[str, Tensor]:
        """Global embedding, dense grid (N, D, S²), its spatial mean and the backbone grid (N, C, S²)."""
        dense, dense_mean = dense_head(features)
        return {
            "global": head(features.mean(dim=(2, 3))),
            "dense": F.normalize(dense, dim=1),
            "dense_mean": F.normalize(dense_mean, dim=1),
            "backbone": dense_head.pool_grid(features).flatten(2),
        }

    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(1 - λ)·InfoNCE(q, k, global queue) + λ·mean_i InfoNCE(q_i, k_c(i), dense queue)``."""
        temperature = float(self.params["temperature"])
        query = self._branch(self.encoder(view1)[-1], self.head, self.dense_head)
        with torch.no_grad():
            key = self._branch(self.key_encoder(view2)[-1], self.key_head, self.key_dense_head)
            match = match_locations(query["backbone"].detach(), key["backbone"])
        # clone: the queues are overwritten in place below while autograd still holds these negatives
        global_negatives = self.queue.features().clone()
        dense_negatives = self.dense_queue.features().clone()
        global_loss = info_nce_loss(query["global"], key["global"], global_negatives, temperature)
        dense_loss = dense_info_nce(query["dense"], key["dense"], match, dense_negatives, temperature)
        weight = float(self.params["dense_weight"])
        loss = (1.0 - weight) * global_loss + weight * dense_loss
        if self.training:
            self.queue.enqueue(self.gather_across_devices(key["global"]))
            self.dense_queue.enqueue(self.gather_across_devices(key["dense_mean"]))
        return loss, {"global": global_loss.detach(), "dense": dense_loss.detach()}

    def after_optimizer_step(self) -> None:
        """EMA ``θ_k ← m·θ_k + (1 - m)·θ_q`` for the backbone, the global head and the dense head."""
        super().after_optimizer_step()
        ema_update(self.dense_head, self.key_dense_head, float(self.params["momentum"]))
