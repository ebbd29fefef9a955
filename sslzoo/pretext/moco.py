"""MoCo v2 (Chen et al. 2020): InfoNCE of a query against its key and a queue of past keys.

ψ: key-encoder momentum m = 0.999, queue length K = 65536 clamped to the samples
seen per epoch (CONTRACTS.md sec. 5; the clamp is logged), temperature τ = 0.07 (the authors'
``softmax_temperature`` of moco_v2.py; MoCo v2's paper uses 0.2),
MLP head ``feature_dim -> 2048 -> 128`` (Linear-ReLU-Linear, MoCo v2). Δθ counts
both heads and the key encoder (the queue is a buffer, not parameters).
Shuffle-BN is not used; on several GPUs keys are all-gathered before queueing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sslzoo.pretext.base import PretextConfig, PretextMethod
from sslzoo.pretext.heads import ProjectionMLP
from sslzoo.pretext.losses import info_nce_loss
from sslzoo.pretext.momentum import FeatureQueue, clamp_queue_size, ema_update, momentum_copy
from sslzoo.pretext.registry import register_method


@register_method
class MoCo(PretextMethod):
    """Query = encoder + head on view 1; key = momentum encoder + head on view 2."""

    name: ClassVar[str] = "moco"
    default_params: ClassVar[dict[str, Any]] = {
        "momentum": 0.999,
        "queue_size": 65536,
        "temperature": 0.07,
        "head_hidden_dim": 2048,
        "head_out_dim": 128,
    }
    psi: ClassVar[list[str]] = ["momentum", "queue_size", "temperature", "head_hidden_dim", "head_out_dim"]
    paper_psi: ClassVar[list[str]] = ["momentum", "queue_size"]
    batch_note: ClassVar[str] = "small batch OK: negatives come from the queue (K <= samples per epoch)"
    notes: ClassVar[str] = "v2: momentum key encoder, FIFO queue, MLP head, InfoNCE"

    def __init__(self, config: PretextConfig):
        super().__init__(config)
        out_dim = int(self.params["head_out_dim"])
        self.head = ProjectionMLP(self.feature_dim, int(self.params["head_hidden_dim"]), out_dim, batch_norm=False)
        self.key_encoder = momentum_copy(self.encoder)
        self.key_head = momentum_copy(self.head)
        self.queue_size = clamp_queue_size(int(self.params["queue_size"]), config.samples_per_epoch)
        self.queue = FeatureQueue(self.queue_size, out_dim)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"head": self.head, "key_encoder": self.key_encoder, "key_head": self.key_head}

    @torch.no_grad()
    def keys(self, images: Tensor) -> Tensor:
        return self.key_head(self.key_encoder(images)[-1].mean(dim=(2, 3)))

    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        query = self.head(self.embed(view1))
        key = self.keys(view2)
        loss = info_nce_loss(query, key, self.queue.features().clone(), float(self.params["temperature"]))
        self.queue.enqueue(self.gather_across_devices(key))
        return loss, {"info_nce": loss.detach()}

    def after_optimizer_step(self) -> None:
        m = float(self.params["momentum"])
        ema_update(self.encoder, self.key_encoder, m)
        ema_update(self.head, self.key_head, m)
