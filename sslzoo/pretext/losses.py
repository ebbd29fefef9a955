"""Pretext losses (pure functions on embeddings, plus thin ``nn.Module`` wrappers).

- NT-Xent (SimCLR): for 2N embeddings ``z`` (L2-normalised), sim = z zᵀ / τ with the
  diagonal removed; loss = mean over all 2N anchors of
  ``-log(exp(sim[i, pos(i)]) / Σ_{j ∉ {i, pos(i)}} exp(sim[i, j]))`` — the authors' variant
  (``NTXentLossBiased`` of their ``ntxent_loss.py``: the positive is NOT in the denominator);
  ``positive_in_denominator=True`` gives SimCLR's original ``-log softmax(sim)[i, pos(i)]``.
  pos(i) is the other view of the same image.
- InfoNCE with a queue (MoCo): logits = ``[q·k₊, q·Q₁ … q·Q_K] / τ``, target index 0.
- BYOL normalised MSE: ``‖p/‖p‖ − z/‖z‖‖² = 2 − 2 cos(p, z)``, mean over the batch.
- Barlow Twins: standardise each feature over the batch, C = z₁ᵀ z₂ / N;
  loss = Σᵢ (1 − Cᵢᵢ)² + λ Σ_{i≠j} Cᵢⱼ².
- Reconstruction (autoencoder): smooth-L1 (the authors' ``SmoothL1Loss``) or mean squared error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1, positive_in_denominator: bool = False) -> Tensor:
    """NT-Xent of SimCLR on two batches of embeddings ``(N, D)`` (normalised here); see the module docstring."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (N, D) tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    if positive_in_denominator:
        return F.cross_entropy(sim, positives)
    rows = torch.arange(2 * n, device=z.device)
    positive = sim[rows, positives]
    negatives = sim.index_put((rows, positives), torch.tensor(float("-inf"), device=z.device, dtype=sim.dtype))
    return (torch.logsumexp(negatives, dim=1) - positive).mean()


def info_nce_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE: positive ``key`` per query ``(N, D)``, negatives ``queue`` ``(K, D)``; all normalised here."""
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ F.normalize(queue, dim=1).t() if queue.numel() else q.new_zeros(q.shape[0], 0)
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Normalised MSE ``2 − 2 cos(p, z)``, mean over the batch; no gradient flows into ``target``."""
    p = F.normalize(prediction, dim=1)
    z = F.normalize(target.detach(), dim=1)
    return (2.0 - 2.0 * (p * z).sum(dim=1)).mean()


def standardize(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit (biased) variance per feature over the batch, like ``BatchNorm1d(affine=False)``."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 5e-3) -> tuple[Tensor, Tensor, Tensor]:
    """Barlow Twins: ``(total, invariance term, redundancy term)`` on embeddings ``(N, D)``."""
    n = z1.shape[0]
    c = standardize(z1).t() @ standardize(z2) / n
    diagonal = torch.diagonal(c)
    invariance = (1.0 - diagonal).pow(2).sum()
    redundancy = c.pow(2).sum() - diagonal.pow(2).sum()
    return invariance + lambd * redundancy, invariance, redundancy


def reconstruction_loss(reconstruction: Tensor, target: Tensor, kind: str = "smooth_l1") -> Tensor:
    """Smooth-L1 (``kind="smooth_l1"``, β = 1, the authors') or mean squared error (``"mse"``), mean over pixels."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(reconstruction, target)
    if kind == "mse":
        return F.mse_loss(reconstruction, target)
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose smooth_l1 or mse")


class NTXentLoss(nn.Module):
    """:func:`nt_xent_loss` with a fixed temperature (default 0.1, the paper's SimCLR setting)."""

    def __init__(self, temperature: float = 0.1, positive_in_denominator: bool = False):
        super().__init__()
        self.temperature = temperature
        self.positive_in_denominator = positive_in_denominator

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, self.temperature, self.positive_in_denominator)


class BarlowTwinsLoss(nn.Module):
    """:func:`barlow_twins_loss` with a fixed λ (default 5e-3)."""

    def __init__(self, lambd: float = 5e-3):
        super().__init__()
        self.lambd = lambd

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, self.lambd)[0]
