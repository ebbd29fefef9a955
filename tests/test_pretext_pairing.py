"""View pairing of every two-view pretext method, on constructed inputs with a known loss.

The networks of a method are replaced by stand-ins whose output is the input itself (an "image"
is then an (N, D, 1, 1) or (N, D, H, W) tensor of chosen vectors), so the right pairing of views
gives a loss computed here by hand, and the wrong pairings (keys from the query's own view,
same-view BYOL targets, one view embedded twice, a Barlow Twins correlation of a view with itself)
give another, also written down. DetCo's global branches are checked with forward hooks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sslzoo.pretext.base import PretextConfig
from sslzoo.pretext.dense_losses import jigsaw_patches
from sslzoo.pretext.losses import info_nce_loss
from sslzoo.pretext.momentum import FeatureQueue
from sslzoo.pretext.registry import build_method

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, D = 4, 12


class Passthrough(nn.Module):
    """Stands in for an encoder: every stage's output is the input; records what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> list[Tensor]:
        self.seen.append(x.detach().clone())
        return [x] * 6


class GridHead(nn.Module):
    """Stands in for DenseCL's dense head: the grid itself, flattened, and its spatial mean."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.flatten(2)
        return flat, flat.mean(dim=2)

    def pool_grid(self, x: Tensor) -> Tensor:
        return x


def _method(name: str, **params):
    torch.manual_seed(0)
    config = PretextConfig(
        method=name, backbone="resnet18", input_size=32, batch_size=N, samples_per_epoch=N, params=params
    )
    return build_method(config).eval()


def _unit(*indices: int, dim: int = D) -> Tensor:
    v = torch.zeros(dim)
    for i in indices:
        v[i] = 1.0
    return v / v.norm()


def _views() -> tuple[Tensor, Tensor]:
    """view1[i] = e_i, view2[i] = (e_i + e_{i+N})/√2: cos(v1_i, v2_i) = 1/√2, every other pair orthogonal."""
    v1 = torch.stack([_unit(i) for i in range(N)])[:, :, None, None]
    v2 = torch.stack([_unit(i, i + N) for i in range(N)])[:, :, None, None]
    return v1, v2


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ SimCLR
def test_simclr_embeds_both_views_and_pairs_them():
    method = _method("simclr", temperature=1.0)
    method.encoder, method.projector = Passthrough(), nn.Identity()
    v1, v2 = _views()
    loss, _ = method.training_loss(v1, v2)
    # every anchor: positive cos 1/√2, the 2N-2 others orthogonal (τ = 1); the authors' NT-Xent keeps the
    # positive out of the denominator: -s_pos + log(sum over the 2N-2 negatives of exp(0))
    expected = math.log(2 * N - 2) - 1 / math.sqrt(2)
    one_view_twice = math.log(2 * N - 2) - 1.0
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert abs(expected - one_view_twice) > 0.2
    seen = method.encoder.seen
    assert len(seen) == 2 and any(_same(s, v1) for s in seen) and any(_same(s, v2) for s in seen)


# ------------------------------------------------------------------------------------------------ MoCo
def _orthogonal_queue() -> FeatureQueue:
    """A queue of N negatives orthogonal to every constructed view: e_{2N}, ..., e_{3N-1}."""
    queue = FeatureQueue(N, D)
    queue.enqueue(torch.stack([_unit(2 * N + i) for i in range(N)]))
    return queue


def _moco_with_passthrough(name: str = "moco", **params):
    method = _method(name, temperature=1.0, queue_size=N, **params)
    method.encoder, method.key_encoder = Passthrough(), Passthrough()
    method.head, method.key_head = nn.Identity(), nn.Identity()
    method.queue = _orthogonal_queue()
    return method


def test_moco_query_from_view1_key_from_view2_by_the_key_encoder():
    method = _moco_with_passthrough()
    v1, v2 = _views()
    loss, _ = method.training_loss(v1, v2)
    expected = math.log(1 + N * math.exp(-1 / math.sqrt(2)))  # positive cos 1/√2, K = N orthogonal negatives
    key_from_own_view = math.log(1 + N * math.exp(-1.0))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert abs(expected - key_from_own_view) > 0.15
    assert [_same(s, v1) for s in method.encoder.seen] == [True]
    assert [_same(s, v2) for s in method.key_encoder.seen] == [True]
    # the keys of view 2 (normalised) replaced the queue
    assert torch.allclose(method.queue.features(), v2.flatten(1), atol=1e-6)


# ------------------------------------------------------------------------------------------------ BYOL
def test_byol_predicts_the_other_views_target_in_both_orders():
    method = _method("byol")
    method.encoder, method.target_encoder = Passthrough(), Passthrough()
    method.projector, method.target_projector = nn.Identity(), nn.Identity()
    scale = torch.ones(D)
    scale[N : 2 * N] = 3.0  # the predictor stretches the e_{i+N} half: p(v2_i) = (e_i + 3 e_{i+N})/√2
    method.predictor = _Scale(scale)
    v1, v2 = _views()
    loss, _ = method.training_loss(v1, v2)

    def nmse(p: Tensor, z: Tensor) -> float:
        return float(2 - 2 * torch.nn.functional.cosine_similarity(p, z, dim=1).mean())

    p1, p2 = (scale * v1.flatten(1)), (scale * v2.flatten(1))
    t1, t2 = v1.flatten(1), v2.flatten(1)
    expected = nmse(p1, t2) + nmse(p2, t1)  # 2 - 2/√2 + 2 - 2·(1/√2)/(√10/√2)... by hand below
    assert expected == pytest.approx((2 - 2 / math.sqrt(2)) + (2 - 2 / math.sqrt(10)), abs=1e-6)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    same_view = nmse(p1, t1) + nmse(p2, t2)
    one_order = 2 * nmse(p1, t2)
    assert min(abs(expected - same_view), abs(expected - one_order)) > 0.1
    seen = method.target_encoder.seen
    assert len(seen) == 2 and any(_same(s, v1) for s in seen) and any(_same(s, v2) for s in seen)
    # symmetric in the views: swapping them gives the same loss
    assert method.training_loss(v2, v1)[0].item() == pytest.approx(expected, abs=1e-5)


class _Scale(nn.Module):
    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


# ------------------------------------------------------------------------------------------------ Barlow Twins
def _barlow_reference(z1: np.ndarray, z2: np.ndarray, lambd: float) -> float:
    def std(z: np.ndarray) -> np.ndarray:
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

    c = std(z1).T @ std(z2) / z1.shape[0]
    off = c - np.diag(np.diag(c))
    return float(((1 - np.diag(c)) ** 2).sum() + lambd * (off**2).sum())


def test_barlow_twins_correlates_view1_with_view2():
    method = _method("barlowtwins", lambd=0.5)
    method.encoder, method.projector = Passthrough(), nn.Identity()
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((16, 5))
    z2 = z1.copy()
    z2[:, :2] *= -1  # two features anti-correlated between the views: invariance ≈ 2 · 2² = 8
    as_image = lambda z: torch.tensor(z, dtype=torch.float32)[:, :, None, None]  # noqa: E731
    loss, terms = method.training_loss(as_image(z1), as_image(z2))
    expected = _barlow_reference(z1, z2, 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert terms["invariance"].item() == pytest.approx(8.0, rel=1e-3)
    assert abs(expected - _barlow_reference(z1, z1, 0.5)) > 7.0  # a view with itself: invariance ≈ 0


# ------------------------------------------------------------------------------------------------ DenseCL
def test_densecl_global_and_dense_pairing_on_constructed_grids():
    """Global: pooled view 1 vs pooled view 2; dense: each location of view 1 vs its best match in view 2."""
    lam = 0.2
    method = _moco_with_passthrough("densecl", dense_weight=lam)
    method.dense_head, method.key_dense_head = GridHead(), GridHead()
    method.dense_queue = _orthogonal_queue()
    # one image, 2x2 grid: location i of view 1 is e_i; view 2 holds e_{σ(i)} at location σ⁻¹... i.e. the
    # location of view 2 holding e_i is σ(i) with σ = (1, 2, 3, 0), and slightly rotated toward e_{i+N}
    sigma = [1, 2, 3, 0]
    q = torch.stack([_unit(i) for i in range(4)], dim=1).reshape(1, D, 2, 2)
    k = torch.zeros(1, D, 4)
    for i, j in enumerate(sigma):
        k[0, :, j] = 0.8 * _unit(i) + 0.6 * _unit(i + N)
    k = k.reshape(1, D, 2, 2)
    loss, terms = method.training_loss(q, k)

    # dense: each query's positive has cos 0.8 with it; the 4 dense negatives are orthogonal (τ = 1)
    dense = math.log(1 + 4 * math.exp(-0.8))
    # global: mean of view 1 vs mean of view 2, cos = 0.8 again; global negatives orthogonal
    glob = math.log(1 + 4 * math.exp(-0.8))
    assert terms["dense"].item() == pytest.approx(dense, abs=1e-5)
    assert terms["global"].item() == pytest.approx(glob, abs=1e-5)
    assert loss.item() == pytest.approx((1 - lam) * glob + lam * dense, abs=1e-5)
    # the identity correspondence would pair e_i with a vector orthogonal to it: positive cos 0
    identity = math.log(1 + 4 * math.exp(0.0))
    assert abs(identity - dense) > 0.5
    assert [_same(s, q) for s in method.encoder.seen] == [True]
    assert [_same(s, k) for s in method.key_encoder.seen] == [True]


# ------------------------------------------------------------------------------------------------ DetCo
def test_detco_global_branches_query_view1_keys_view2():
    torch.manual_seed(0)
    params = {"head_hidden_dim": 32, "head_out_dim": 8, "patch_dim": 8, "queue_size": 8, "temperature": 0.5}
    config = PretextConfig(method="detco", backbone="resnet18", input_size=48, batch_size=2, samples_per_epoch=8)
    method = build_method(config.model_copy(update={"params": params})).eval()
    seen: dict[str, list[Tensor]] = {"encoder": [], "key_encoder": []}
    for name in seen:
        getattr(method, name).register_forward_pre_hook(lambda m, args, name=name: seen[name].append(args[0]))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    v1, v2 = torch.randn(2, 3, 48, 48, generator=g1), torch.randn(2, 3, 48, 48, generator=g2)
    queues = [q.features().clone() for q in method.global_queues]
    with torch.no_grad():
        _, terms = method.training_loss(v1, v2)

    def contains(batches: list[Tensor], x: Tensor) -> bool:
        return any(_same(b, x) for b in batches)

    patches1, patches2 = jigsaw_patches(v1).flatten(0, 1), jigsaw_patches(v2).flatten(0, 1)
    assert contains(seen["encoder"], v1) and contains(seen["encoder"], patches1)
    assert contains(seen["key_encoder"], v2) and contains(seen["key_encoder"], patches2)
    assert not contains(seen["encoder"], v2) and not contains(seen["key_encoder"], v1)

    # the logged global term is Σ_s w_s InfoNCE(g_q(view 1), g_k(view 2), global queue s)
    with torch.no_grad():
        f1, f2 = method.encoder(v1), method.key_encoder(v2)
        expected = sum(
            w * info_nce_loss(gq(f1[s].mean((2, 3))), gk(f2[s].mean((2, 3))), queue, 0.5)
            for w, s, gq, gk, queue in zip(
                method.stage_weights, (2, 3, 4, 5), method.global_heads, method.key_global_heads, queues, strict=True
            )
        )
        own_view = sum(
            w * info_nce_loss(gq(f1[s].mean((2, 3))), gk(method.key_encoder(v1)[s].mean((2, 3))), queue, 0.5)
            for w, s, gq, gk, queue in zip(
                method.stage_weights, (2, 3, 4, 5), method.global_heads, method.key_global_heads, queues, strict=True
            )
        )
    assert terms["global"].item() == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(own_view)) > 1e-3
