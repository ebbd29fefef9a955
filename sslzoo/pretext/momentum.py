"""Momentum encoders and the MoCo queue.

- ``ema_update``: θ_target ← m·θ_target + (1 − m)·θ_online for every parameter;
  buffers (BatchNorm running statistics) are copied.
- ``cosine_momentum`` (BYOL): m(p) = 1 − (1 − m_base)·(cos(π p) + 1)/2 for progress
  p ∈ [0, 1], i.e. m_base at the start and 1 at the end.
- ``FeatureQueue``: a FIFO ring buffer of the last K keys (MoCo negatives); K is
  clamped to the samples seen per epoch by ``clamp_queue_size``.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def momentum_copy(module: ModuleT) -> ModuleT:
    """A frozen deep copy of ``module`` (no gradients), to be updated by :func:`ema_update`."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online; buffers are copied from ``online``."""
    for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
        p_target.mul_(m).add_(p_online.detach(), alpha=1.0 - m)
    for b_online, b_target in zip(online.buffers(), target.buffers(), strict=True):
        b_target.copy_(b_online)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL schedule: ``1 − (1 − base)(cos(π·progress) + 1)/2`` (``base`` at 0, 1.0 at 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def clamp_queue_size(requested: int, samples_per_epoch: int | None) -> int:
    """``min(requested, samples_per_epoch)``; logs when it clamps (CONTRACTS.md sec. 5)."""
    if samples_per_epoch is not None and requested > samples_per_epoch:
        log.info("queue length %d clamped to %d, the samples seen per epoch", requested, samples_per_epoch)
        return int(samples_per_epoch)
    if samples_per_epoch is None:
        log.warning("queue length %d: samples per epoch unknown, not clamped", requested)
    return int(requested)


class FeatureQueue(nn.Module):
    keys: Tensor
    pointer: Tensor
    filled: Tensor

    """FIFO queue of ``size`` L2-normalised keys of dimension ``dim`` (buffers, so checkpointed).

    As in MoCo it starts filled with random unit vectors, so the first steps already
    have negatives; ``enqueue`` overwrites the oldest entries (ring order), and
    ``filled`` counts how many slots hold real keys.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.size, self.dim = int(size), int(dim)
        self.register_buffer("keys", F.normalize(torch.randn(self.size, self.dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` ``(B, dim)`` after the newest entry, wrapping around (the oldest are dropped)."""
        keys = keys.detach()
        if keys.shape[0] > self.size:
            keys = keys[-self.size :]
        b = keys.shape[0]
        start = int(self.pointer)
        index = (torch.arange(b, device=self.keys.device) + start) % self.size
        self.keys[index] = F.normalize(keys.to(self.keys.dtype), dim=1)
        self.pointer.fill_((start + b) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + b))

    def features(self) -> Tensor:
        """All ``size`` keys ``(size, dim)`` in ring order (random unit vectors where none was written yet)."""
        return self.keys
