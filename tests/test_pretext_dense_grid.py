"""DenseCL's dense branch on a real grid: hand-derived correspondences and the λ-weighted loss at 128 px.

At 128 px resnet18's last stage is a 4x4 grid (16 locations), so the correspondence is not the
trivial index 0 of a 1x1 grid; λ = 0.2 vs 0.8 makes swapping the global and dense weights visible.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslzoo.pretext.base import PretextConfig
from sslzoo.pretext.dense_losses import match_locations
from sslzoo.pretext.registry import build_method

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _eye(c: int) -> torch.Tensor:
    return torch.eye(c)


# ------------------------------------------------------------------------------------------------ correspondence
def test_match_is_the_cyclic_permutation_not_its_inverse_nor_the_identity():
    # key location j holds e_j; query location i holds e_{σ(i)}, σ(i) = i + 1 mod 5 (σ ≠ σ⁻¹ ≠ id)
    sigma = [1, 2, 3, 4, 0]
    key = _eye(5)[None]  # (1, C=5, L'=5): column j = e_j
    query = _eye(5)[:, sigma][None]  # column i = e_{σ(i)}
    assert match_locations(query, key).tolist() == [sigma]


def test_match_many_to_one_with_fewer_key_locations_and_per_image():
    # 6 query locations, 3 key locations: query i matches key i mod 3 in image 0, 2 - (i mod 3) in image 1
    key = torch.stack([_eye(3), _eye(3)])  # (2, 3, 3)
    query0 = _eye(3)[:, [0, 1, 2, 0, 1, 2]]
    query1 = _eye(3)[:, [2, 1, 0, 2, 1, 0]]
    match = match_locations(torch.stack([query0, query1]), key)
    assert match.shape == (2, 6)
    assert match.tolist() == [[0, 1, 2, 0, 1, 2], [2, 1, 0, 2, 1, 0]]


def test_match_uses_cosine_not_the_dot_product():
    # key 1 is long but at 84° from the query; key 0 is short and at 6°: cosine picks 0, a dot product 1
    query = torch.tensor([[[1.0], [0.1]]])  # (1, C=2, L=1)
    key = torch.tensor([[[0.01, 10.0], [0.0, 100.0]]])  # columns: (0.01, 0) and (10, 100)
    assert match_locations(query, key).tolist() == [[0]]
    assert int(torch.einsum("ncl,ncm->nlm", query, key).argmax(2)) == 1


# ------------------------------------------------------------------------------------------------ method at 128 px
def _densecl(weight: float):
    torch.manual_seed(0)
    params = {"dense_weight": weight, "head_hidden_dim": 32, "head_out_dim": 16, "queue_size": 8, "temperature": 0.2}
    config = PretextConfig(
        method="densecl", backbone="resnet18", input_size=128, batch_size=2, samples_per_epoch=8, params=params
    )
    return build_method(config).eval()


def _info_nce(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float) -> float:
    """Mean over rows of -log softmax([q·k, q·Q]/t)[0], all vectors normalised (naive reference)."""

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    q, k, queue = unit(q), unit(k), unit(queue)
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / t
    logits -= logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0]))


def _reference(method, view1: torch.Tensor, view2: torch.Tensor, correspondence: str = "argmax") -> tuple:
    """(global, dense) losses recomputed with loops: positives by argmax_j cos(backbone_q_i, backbone_k_j)."""
    t = float(method.params["temperature"])
    with torch.no_grad():
        fq, fk = method.encoder(view1)[-1], method.key_encoder(view2)[-1]
        gq, gk = method.head(fq.mean((2, 3))).numpy(), method.key_head(fk.mean((2, 3))).numpy()
        dq, dk = method.dense_head(fq)[0].numpy(), method.key_dense_head(fk)[0].numpy()
    bq, bk = fq.flatten(2).numpy(), fk.flatten(2).numpy()
    queue, dense_queue = method.queue.features().numpy(), method.dense_queue.features().numpy()
    rows_q, rows_k, matches = [], [], []
    for n in range(bq.shape[0]):
        for i in range(bq.shape[2]):
            if correspondence == "identity":
                j = i
            else:
                cos = [
                    bq[n, :, i] @ bk[n, :, m] / (np.linalg.norm(bq[n, :, i]) * np.linalg.norm(bk[n, :, m]))
                    for m in range(bk.shape[2])
                ]
                j = int(np.argmax(cos))
            matches.append(j)
            rows_q.append(dq[n, :, i])
            rows_k.append(dk[n, :, j])
    dense = _info_nce(np.array(rows_q), np.array(rows_k), dense_queue, t)
    return _info_nce(gq, gk, queue, t), dense, matches


def test_densecl_loss_at_a_4x4_grid_with_asymmetric_weights():
    gen = torch.Generator().manual_seed(3)
    # a 4x4 mosaic of random colours (plus noise) and its mirror image: a random resnet18's last-stage
    # features are dominated by position, yet 5 of the 32 locations match another one than their own
    cells = 2.0 * torch.randn(2, 3, 4, 4, generator=gen)
    view1 = torch.nn.functional.interpolate(cells, scale_factor=32, mode="nearest")
    view1 = view1 + 0.1 * torch.randn(2, 3, 128, 128, generator=gen)
    view2 = view1.flip(-1)
    low, high = _densecl(0.2), _densecl(0.8)
    assert low.encoder(view1)[-1].shape[-2:] == (4, 4)

    glob, dense, matches = _reference(low, view1, view2)
    assert len(matches) == 2 * 16 and sum(j != i % 16 for i, j in enumerate(matches)) >= 3
    with torch.no_grad():
        loss_low, terms = low.training_loss(view1, view2)
        loss_high, _ = high.training_loss(view1, view2)
    assert terms["global"].item() == pytest.approx(glob, rel=1e-4)
    assert terms["dense"].item() == pytest.approx(dense, rel=1e-4)
    assert loss_low.item() == pytest.approx(0.8 * glob + 0.2 * dense, rel=1e-4)
    assert loss_high.item() == pytest.approx(0.2 * glob + 0.8 * dense, rel=1e-4)
    # the weights matter: swapping them changes the loss by 0.6 (dense - global), which is not small here
    assert abs(dense - glob) > 0.02  # 0.038 here; the loss is checked to rel 1e-4
    assert (loss_high - loss_low).item() == pytest.approx(0.6 * (dense - glob), rel=1e-3)
    # and so does the correspondence: the identity pairing gives another dense loss
    _, dense_identity, _ = _reference(low, view1, view2, correspondence="identity")
    assert abs(dense_identity - dense) > 1e-3
