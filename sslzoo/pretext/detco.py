"""DetCo (Xie et al., "DetCo: Unsupervised Contrastive Learning for Object Detection", ICCV 2021).

MoCo v2 with multi-level supervision and global↔local contrast. DetCo's own pretraining code was never
released; the heads follow the paper's authors' re-implementation (lrettenberger/ssl_image_seg,
``detco_resnet.py``); the remaining choices and their costs are written down in ``docs/detco.md``.

At each ResNet stage s ∈ {2, 3, 4, 5} (smp encoder outputs 2..5):

- global representation: the stage's pooled feature map → MLP ``C_s → C_s → 128``;
- local representation: the view cut into its 3x3 jigsaw tiles
  (:func:`~sslzoo.pretext.dense_losses.jigsaw_patches`), each tile encoded on its own, pooled,
  the 9 pooled features concatenated → MLP ``9·C_s → 9·C_s → 128``.
  These are the published heads (the authors' ``detco_resnet.py``; Δθ ≈ 947 M for ResNet-50, the
  paper's Table II +946.5 M). ``head_hidden_dim=2048, patch_dim=128`` gives the compact variant
  (global ``C_s → 2048 → 128``; per-tile ``Linear(C_s → 128)``, concatenated → ``1152 → 2048 → 128``;
  Δθ 63.3 M);
- three InfoNCE terms (τ = 0.07, the authors'), each against its own queue:
  global↔global, local↔local, local→global (local query, global key and global queue);
- loss ``Σ_s w_s (L_gg + L_ll + L_lg)`` with ``w = (0.1, 0.4, 0.7, 1.0)`` for stages 2..5.

Queries come from view 1 through the encoder and heads, keys from view 2 through momentum copies
(m = 0.999, EMA after each optimiser step). Queues are clamped to the samples per epoch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo.errors import ConfigError
from sslzoo.pretext.base import PretextConfig, PretextMethod
from sslzoo.pretext.dense_losses import LocalProjectionHead, detco_stage_losses, jigsaw_patches
from sslzoo.pretext.heads import ProjectionMLP
from sslzoo.pretext.momentum import FeatureQueue, clamp_queue_size, ema_update, momentum_copy
from sslzoo.pretext.registry import register_method

#: smp encoder outputs used as DetCo's levels: ResNet stages 2..5 (layer1..layer4).
STAGES: tuple[int, ...] = (2, 3, 4, 5)
TERMS: tuple[str, ...] = ("global", "local", "local_global")


@register_method
class DetCo(PretextMethod):
    """Multi-level global/local MoCo v2: 3 InfoNCE terms x 4 stages, 8 queues."""

    name: ClassVar[str] = "detco"
    default_params: ClassVar[dict[str, Any]] = {
        "momentum": 0.999,  # of the key (momentum) encoder; the optimiser's momentum is PretextConfig.momentum
        "queue_size": 65536,
        "temperature": 0.07,
        "head_hidden_dim": 0,  # 0: each head's input width (published: C -> C -> 128, 9C -> 9C -> 128)
        "head_out_dim": 128,
        "patch_dim": 0,  # 0: tiles concatenated as pooled (published); D > 0: per-tile Linear(C -> D) first
        "grid": 3,  # jigsaw grid: grid x grid tiles per view
        "patch_size": 0,  # 0: tiles keep their size (input // grid); P > 0: tiles resized to P x P
        "stage_weights": [0.1, 0.4, 0.7, 1.0],  # w_s for stages 2, 3, 4, 5
    }
    psi: ClassVar[list[str]] = [
        "momentum",
        "queue_size",
        "temperature",
        "stage_weights",
        "grid",
        "head_hidden_dim",
        "patch_dim",
    ]
    paper_psi: ClassVar[list[str]] = ["momentum", "queue_size"]
    batch_note: ClassVar[str] = (
        "small batch OK: negatives from 8 queues (K <= samples per epoch); each view is also encoded as "
        "grid² tiles (9x the images per forward)"
    )
    notes: ClassVar[str] = (
        "stages 2-5, published heads (global C-C-128, local 9C-9C-128 on 3x3 jigsaw tiles), g-g, l-l, l-g "
        "InfoNCE (docs/detco.md)"
    )

    def __init__(self, config: PretextConfig):
        super().__init__(config)
        p = self.params
        self.stage_weights = self._check_stage_weights(p["stage_weights"])
        if int(p["grid"]) < 1:
            raise ConfigError(f"detco: grid must be >= 1, got {p['grid']}")
        hidden, out = int(p["head_hidden_dim"]), int(p["head_out_dim"])
        out_channels: Any = self.encoder.out_channels
        channels = [int(out_channels[s]) for s in STAGES]
        self.global_heads = nn.ModuleList(ProjectionMLP(c, hidden or c, out, batch_norm=False) for c in channels)
        self.local_heads = nn.ModuleList(
            LocalProjectionHead(c, int(p["grid"]) ** 2, int(p["patch_dim"]), hidden, out) for c in channels
        )
        self.key_encoder = momentum_copy(self.encoder)
        self.key_global_heads: nn.ModuleList = momentum_copy(self.global_heads)
        self.key_local_heads: nn.ModuleList = momentum_copy(self.local_heads)
        self.queue_size = clamp_queue_size(int(p["queue_size"]), config.samples_per_epoch)
        self.global_queues: list[FeatureQueue] = nn.ModuleList(FeatureQueue(self.queue_size, out) for _ in STAGES)  # type: ignore[assignment]
        self.local_queues: list[FeatureQueue] = nn.ModuleList(FeatureQueue(self.queue_size, out) for _ in STAGES)  # type: ignore[assignment]

    @staticmethod
    def _check_stage_weights(value: Any) -> list[float]:
        try:
            weights = [float(w) for w in value]
        except (TypeError, ValueError):
            weights = []
        if len(weights) != len(STAGES) or any(w < 0 for w in weights):
            raise ConfigError(
                f"detco: stage_weights must be {len(STAGES)} non-negative numbers (stages 2..5), got {value!r}; "
                "e.g. --param stage_weights=[0.1,0.4,0.7,1.0]"
            )
        return weights

    def extra_modules(self) -> dict[str, nn.Module]:
        return {
            "global_heads": self.global_heads,
            "local_heads": self.local_heads,
            "key_encoder": self.key_encoder,
            "key_global_heads": self.key_global_heads,
            "key_local_heads": self.key_local_heads,
        }

    def representations(
        self, images: Tensor, encoder: nn.Module, global_heads: nn.ModuleList, local_heads: nn.ModuleList
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per stage 2..5: global (N, D) and local (N, D) representations of ``images`` (N, 3, H, W)."""
        grid = int(self.params["grid"])
        patches = jigsaw_patches(images, grid, int(self.params["patch_size"]) or None)
        n, tiles = patches.shape[:2]
        image_features = encoder(images)
        patch_features = encoder(patches.flatten(0, 1))
        global_reps, local_reps = [], []
        for head_index, stage in enumerate(STAGES):
            global_reps.append(global_heads[head_index](image_features[stage].mean(dim=(2, 3))))
            pooled = patch_features[stage].mean(dim=(2, 3)).reshape(n, tiles, -1)
            local_reps.append(local_heads[head_index](pooled))
        return global_reps, local_reps

    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``Σ_s w_s (InfoNCE(g_q, g_k) + InfoNCE(l_q, l_k) + InfoNCE(l_q, g_k))`` over stages 2..5."""
        temperature = float(self.params["temperature"])
        query_global, query_local = self.representations(view1, self.encoder, self.global_heads, self.local_heads)
        with torch.no_grad():
            key_global, key_local = self.representations(
                view2, self.key_encoder, self.key_global_heads, self.key_local_heads
            )
            key_global = [F.normalize(k, dim=1) for k in key_global]
            key_local = [F.normalize(k, dim=1) for k in key_local]
        loss = view1.new_zeros(())
        logged: dict[str, Tensor] = {term: view1.new_zeros(()) for term in TERMS}
        for i, stage in enumerate(STAGES):
            # clone: the queues are overwritten in place below while autograd still holds these negatives
            terms = detco_stage_losses(
                query_global[i],
                query_local[i],
                key_global[i],
                key_local[i],
                self.global_queues[i].features().clone(),
                self.local_queues[i].features().clone(),
                temperature,
            )
            stage_loss: Tensor = sum(terms.values(), view1.new_zeros(()))
            loss = loss + self.stage_weights[i] * stage_loss
            logged[f"stage{stage}"] = stage_loss.detach()
            for term, value in terms.items():
                logged[term] = logged[term] + self.stage_weights[i] * value.detach()
        if self.training:
            for i in range(len(STAGES)):
                self.global_queues[i].enqueue(self.gather_across_devices(key_global[i]))
                self.local_queues[i].enqueue(self.gather_across_devices(key_local[i]))
        return loss, logged

    def after_optimizer_step(self) -> None:
        """EMA ``θ_k ← m·θ_k + (1 - m)·θ_q`` for the backbone and all heads."""
        m = float(self.params["momentum"])
        ema_update(self.encoder, self.key_encoder, m)
        ema_update(self.global_heads, self.key_global_heads, m)
        ema_update(self.local_heads, self.key_local_heads, m)
