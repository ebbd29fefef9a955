"""Heads, correspondences, jigsaw patches and loss terms of the dense pretext methods (DenseCL, DetCo).

Everything here is a plain function or a small ``nn.Module`` with no training state, so it can be
tested against naive loops. Shapes: ``N`` batch, ``C`` channels, ``L = H*W`` grid locations,
``K`` queue length, ``D`` embedding size.

- DenseCL (Wang et al., CVPR 2021): :class:`DenseProjectionHead`, :func:`match_locations`,
  :func:`dense_info_nce`.
- DetCo (Xie et al., ICCV 2021): :func:`jigsaw_boxes`, :func:`jigsaw_patches`,
  :class:`LocalProjectionHead`, :func:`detco_stage_losses`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo.pretext.losses import info_nce_loss

__all__ = [
    "DenseProjectionHead",
    "LocalProjectionHead",
    "dense_info_nce",
    "detco_stage_losses",
    "gather_locations",
    "jigsaw_boxes",
    "jigsaw_patches",
    "match_locations",
]


def match_locations(query_features: Tensor, key_features: Tensor) -> Tensor:
    """DenseCL correspondence: for each location i of view 1, ``argmax_j cos(q_i, k_j)`` over view 2.

    ``query_features`` (N, C, L) and ``key_features`` (N, C, L') are backbone feature maps flattened
    over space; returns the index into the L' key locations, shape (N, L), dtype long.
    """
    query = F.normalize(query_features, dim=1)
    key = F.normalize(key_features, dim=1)
    similarity = torch.einsum("ncl,ncm->nlm", query, key)
    return similarity.argmax(dim=2)


def gather_locations(grid: Tensor, index: Tensor) -> Tensor:
    """``out[n, :, i] = grid[n, :, index[n, i]]`` for ``grid`` (N, C, L') and ``index`` (N, L)."""
    return grid.gather(2, index.unsqueeze(1).expand(-1, grid.shape[1], -1))


def dense_info_nce(
    query_grid: Tensor, key_grid: Tensor, match_index: Tensor, queue: Tensor, temperature: float
) -> Tensor:
    """Dense InfoNCE of DenseCL, mean over all N·L query locations.

    Location i of image n is a query with the positive ``key_grid[n, :, match_index[n, i]]`` and the
    queue's (K, D) vectors as negatives (:func:`sslzoo.pretext.losses.info_nce_loss`, which
    L2-normalises). ``query_grid`` is (N, D, L), ``key_grid`` (N, D, L').
    """
    positive = gather_locations(key_grid, match_index)
    dim = query_grid.shape[1]
    query_rows = query_grid.permute(0, 2, 1).reshape(-1, dim)
    positive_rows = positive.permute(0, 2, 1).reshape(-1, dim)
    return info_nce_loss(query_rows, positive_rows, queue, temperature)


class DenseProjectionHead(nn.Module):
    """DenseCL's dense projection: ``1x1 conv → ReLU → 1x1 conv`` on the last backbone stage.

    ``forward`` takes a feature map (N, C, H, W), pools it to ``grid_size``×``grid_size`` when given
    (``None`` keeps the native grid) and returns ``(dense, pooled)``: the S×S grid of ``out_dim``
    vectors flattened to (N, out_dim, S·S) and its spatial mean (N, out_dim) (the vector DenseCL
    puts in its dense queue). Neither is normalised.
    """

    def __init__(self, in_channels: int, hidden_dim: int = 2048, out_dim: int = 128, grid_size: int | None = None):
        super().__init__()
        self.grid_size = grid_size
        self.mlp = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, out_dim, kernel_size=1),
        )

    def pool_grid(self, feature_map: Tensor) -> Tensor:
        """The backbone map at the head's grid resolution (identity when ``grid_size`` is None)."""
        if self.grid_size is None:
            return feature_map
        return F.adaptive_avg_pool2d(feature_map, self.grid_size)

    def forward(self, feature_map: Tensor) -> tuple[Tensor, Tensor]:
        dense = self.mlp(self.pool_grid(feature_map)).flatten(2)
        return dense, dense.mean(dim=2)


def jigsaw_boxes(height: int, width: int, grid: int = 3) -> list[tuple[int, int, int, int]]:
    """Boxes ``(y0, x0, y1, x1)`` (end exclusive) of a ``grid``×``grid`` tiling, row by row.

    Boundaries are ``round(k·H/grid)``, so the boxes cover every pixel exactly once even when
    ``grid`` does not divide the size (tiles then differ by one pixel).
    """
    if grid < 1 or height < grid or width < grid:
        raise ValueError(f"cannot tile a {height}x{width} image into a {grid}x{grid} grid")
    ys = [round(k * height / grid) for k in range(grid + 1)]
    xs = [round(k * width / grid) for k in range(grid + 1)]
    return [(ys[r], xs[c], ys[r + 1], xs[c + 1]) for r in range(grid) for c in range(grid)]


def jigsaw_patches(images: Tensor, grid: int = 3, patch_size: int | None = None) -> Tensor:
    """DetCo's local view: the ``grid``×``grid`` tiles of each image, as a batch of patches.

    ``images`` (N, C, H, W) → (N, grid², C, P, P) in :func:`jigsaw_boxes` order, with
    ``P = patch_size`` or ``min(H, W) // grid``; tiles of another size are resized bilinearly.
    """
    height, width = images.shape[-2:]
    size = patch_size or min(height, width) // grid
    patches = []
    for y0, x0, y1, x1 in jigsaw_boxes(height, width, grid):
        tile = images[:, :, y0:y1, x0:x1]
        if tile.shape[-2:] != (size, size):
            tile = F.interpolate(tile, size=(size, size), mode="bilinear", align_corners=False)
        patches.append(tile)
    return torch.stack(patches, dim=1)


class LocalProjectionHead(nn.Module):
    """DetCo local head: (optional per-patch linear) → concatenate the patches → MLP.

    ``forward`` takes the pooled features of the patches of each image, (N, P, C) with P patches, and
    returns one local representation per image, (N, out_dim), not normalised:
    ``mlp(concat_p(W_patch · f_p))`` (PIRL-style, ``patch_dim > 0``) or ``mlp(concat_p(f_p))``
    (``patch_dim = 0``: DetCo as published, MLP ``P·C → hidden → out``). ``hidden_dim = 0``: the
    MLP's input width (the published ``9C → 9C → 128``).
    """

    def __init__(
        self, in_channels: int, num_patches: int = 9, patch_dim: int = 128, hidden_dim: int = 2048, out_dim: int = 128
    ):
        super().__init__()
        self.num_patches = num_patches
        self.patch_projection: nn.Module = nn.Linear(in_channels, patch_dim) if patch_dim > 0 else nn.Identity()
        width = num_patches * (patch_dim if patch_dim > 0 else in_channels)
        hidden_dim = hidden_dim or width
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, patch_features: Tensor) -> Tensor:
        if patch_features.ndim != 3 or patch_features.shape[1] != self.num_patches:
            raise ValueError(
                f"expected pooled patch features (N, {self.num_patches}, C), got {tuple(patch_features.shape)}"
            )
        return self.mlp(self.patch_projection(patch_features).flatten(1))


def detco_stage_losses(
    query_global: Tensor,
    query_local: Tensor,
    key_global: Tensor,
    key_local: Tensor,
    global_queue: Tensor,
    local_queue: Tensor,
    temperature: float,
) -> dict[str, Tensor]:
    """DetCo's three InfoNCE terms (:func:`~sslzoo.pretext.losses.info_nce_loss`) at one stage.

    Inputs are (N, D) embeddings and (K, D) queues (normalised inside the loss).

    - ``global``: global query vs global key, negatives from the global queue;
    - ``local``: local query vs local key, negatives from the local queue;
    - ``local_global``: local query vs global key, negatives from the global queue.
    """
    return {
        "global": info_nce_loss(query_global, key_global, global_queue, temperature),
        "local": info_nce_loss(query_local, key_local, local_queue, temperature),
        "local_global": info_nce_loss(query_local, key_global, global_queue, temperature),
    }
