"""Pretext losses against naive loop references, their invariances, EMA and the MoCo queue."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from sslzoo.pretext.losses import (
    BarlowTwinsLoss,
    NTXentLoss,
    barlow_twins_loss,
    byol_loss,
    info_nce_loss,
    nt_xent_loss,
    reconstruction_loss,
)
from sslzoo.pretext.momentum import FeatureQueue, clamp_queue_size, cosine_momentum, ema_update, momentum_copy


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float, positive_in_denominator: bool = False) -> float:
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        positive = (i + n) % n2
        skip = {i} if positive_in_denominator else {i, positive}
        denominator = sum(math.exp(_cos(z[i], z[k]) / tau) for k in range(n2) if k not in skip)
        total += -math.log(math.exp(_cos(z[i], z[positive]) / tau) / denominator)
    return total / n2


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> float:
    total = 0.0
    for i in range(q.shape[0]):
        logits = [_cos(q[i], k[i]) / tau] + [_cos(q[i], queue[j]) / tau for j in range(queue.shape[0])]
        total += -logits[0] + math.log(sum(math.exp(x) for x in logits))
    return total / q.shape[0]


def naive_barlow(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> float:
    n, d = z1.shape
    a = [[float(z1[s, i]) for i in range(d)] for s in range(n)]
    b = [[float(z2[s, i]) for i in range(d)] for s in range(n)]

    def standardised(x: list[list[float]], i: int) -> list[float]:
        column = [x[s][i] for s in range(n)]
        mean = sum(column) / n
        var = sum((v - mean) ** 2 for v in column) / n
        return [(v - mean) / math.sqrt(var + 1e-5) for v in column]

    sa = [standardised(a, i) for i in range(d)]
    sb = [standardised(b, j) for j in range(d)]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(sa[i][s] * sb[j][s] for s in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


def test_nt_xent_matches_naive_loop():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    for tau in (0.1, 0.5):
        # default: the authors' NTXentLossBiased, positive not in the denominator
        assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(naive_nt_xent(z1, z2, tau), rel=1e-4)
        original = nt_xent_loss(z1, z2, tau, positive_in_denominator=True).item()
        assert original == pytest.approx(naive_nt_xent(z1, z2, tau, positive_in_denominator=True), rel=1e-4)
        assert original > nt_xent_loss(z1, z2, tau).item()  # a larger denominator
    assert NTXentLoss()(z1, z2).item() == pytest.approx(naive_nt_xent(z1, z2, 0.1), rel=1e-4)


def test_nt_xent_is_symmetric_in_views_and_rewards_alignment():
    torch.manual_seed(1)
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    assert nt_xent_loss(z1, z2).item() == pytest.approx(nt_xent_loss(z2, z1).item(), rel=1e-6)
    aligned = nt_xent_loss(z1, z1 + 0.01 * torch.randn_like(z1)).item()
    assert aligned < nt_xent_loss(z1, z2).item()
    with pytest.raises(ValueError):
        nt_xent_loss(z1, z2[:4])


def test_info_nce_matches_naive_loop_and_empty_queue():
    torch.manual_seed(2)
    q, k, queue = torch.randn(4, 6), torch.randn(4, 6), torch.randn(9, 6)
    assert info_nce_loss(q, k, queue, 0.2).item() == pytest.approx(naive_info_nce(q, k, queue, 0.2), rel=1e-4)
    # with no negatives the positive is the only class: zero loss
    assert info_nce_loss(q, k, torch.empty(0, 6), 0.2).item() == pytest.approx(0.0, abs=1e-6)


def test_byol_loss_is_normalised_mse_and_stops_target_gradient():
    torch.manual_seed(3)
    p = torch.randn(6, 5, requires_grad=True)
    z = torch.randn(6, 5, requires_grad=True)
    pd, zd = p.detach(), z.detach()
    naive = sum(float(((pd[i] / pd[i].norm() - zd[i] / zd[i].norm()) ** 2).sum()) for i in range(6)) / 6
    loss = byol_loss(p, z)
    assert loss.item() == pytest.approx(naive, rel=1e-5)
    loss.backward()
    assert z.grad is None and p.grad is not None
    assert byol_loss(z.detach() * 3.0, z.detach()).item() == pytest.approx(0.0, abs=1e-6)  # scale invariant


def test_barlow_twins_matches_naive_loop():
    torch.manual_seed(4)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    total, invariance, redundancy = barlow_twins_loss(z1, z2, 5e-3)
    assert total.item() == pytest.approx(naive_barlow(z1, z2, 5e-3), rel=1e-4)
    assert total.item() == pytest.approx(invariance.item() + 5e-3 * redundancy.item(), rel=1e-6)
    assert BarlowTwinsLoss(0.1)(z1, z2).item() == pytest.approx(naive_barlow(z1, z2, 0.1), rel=1e-4)


def test_barlow_twins_is_zero_for_identical_decorrelated_features():
    # columns of a Hadamard matrix (minus the constant one): zero mean, unit variance, orthogonal
    h = torch.tensor([[1.0]])
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    z = h[:, 1:] * 2.5 + 7.0  # scale and shift: standardisation removes both
    assert barlow_twins_loss(z, z)[0].item() == pytest.approx(0.0, abs=1e-3)
    correlated = torch.cat([z[:, :1], z[:, :1], z[:, 2:]], dim=1)  # two identical features
    assert barlow_twins_loss(correlated, correlated)[0].item() > 1e-3


def test_reconstruction_loss_is_smooth_l1_by_default_or_mse():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0)
    assert reconstruction_loss(a, b).item() == pytest.approx(1.5)  # |d| - 0.5 for |d| >= 1
    assert reconstruction_loss(a, torch.full_like(a, 0.5)).item() == pytest.approx(0.125)  # d^2 / 2 below 1
    assert reconstruction_loss(a, b, "mse").item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        reconstruction_loss(a, b, "l2")


def test_ema_update_formula_and_buffers():
    torch.manual_seed(5)
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    online.train()(torch.randn(8, 3))  # changes running statistics
    before = [p.clone() for p in target.parameters()]
    ema_update(online, target, 0.9)
    for old, new, src in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * src)
    torch.testing.assert_close(target[1].running_mean, online[1].running_mean)
    ema_update(online, target, 0.0)  # m = 0 copies
    for new, src in zip(target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, src)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    values = [cosine_momentum(0.99, p / 10) for p in range(11)]
    assert values == sorted(values)


def test_queue_is_fifo_and_wraps():
    queue = FeatureQueue(size=5, dim=2)
    assert queue.features().shape == (5, 2) and int(queue.filled) == 0
    torch.testing.assert_close(queue.features().norm(dim=1), torch.ones(5))  # random unit vectors at start
    first = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    queue.enqueue(first)
    torch.testing.assert_close(queue.features()[:3], torch.nn.functional.normalize(first, dim=1))
    assert int(queue.filled) == 3
    second = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    queue.enqueue(second)  # fills slots 3, 4 then overwrites the oldest (slot 0)
    keys = queue.features()
    assert keys.shape == (5, 2)
    torch.testing.assert_close(keys[0], torch.tensor([-1.0, 0.0]))
    torch.testing.assert_close(keys[1], torch.nn.functional.normalize(first[1], dim=0))
    torch.testing.assert_close(keys[3:], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert int(queue.pointer) == 1 and int(queue.filled) == 5
    state = queue.state_dict()  # checkpointed as buffers
    assert {"keys", "pointer", "filled"} <= set(state)


def test_queue_clamp_to_samples_per_epoch(caplog):
    with caplog.at_level(logging.INFO, logger="sslzoo.pretext.momentum"):
        assert clamp_queue_size(65536, 120) == 120
    assert "clamped to 120" in caplog.text
    assert clamp_queue_size(64, 120) == 64
    assert clamp_queue_size(64, None) == 64
