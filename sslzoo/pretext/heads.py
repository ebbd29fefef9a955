"""Small MLP heads of the contrastive / non-contrastive methods.

``ProjectionMLP(in, hidden, out, num_layers)`` is ``num_layers`` linear layers with
``BatchNorm1d`` + ``ReLU`` between them (SimCLR, BYOL, Barlow Twins); ``batch_norm=False``
gives MoCo v2's plain ``Linear-ReLU-Linear``. ``PredictionMLP`` is BYOL's predictor
``Linear-BN-ReLU-Linear``.
"""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionMLP(nn.Module):
    """``in -> hidden -> ... -> out`` with ``num_layers`` linear layers; BN + ReLU after every hidden layer."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == num_layers - 1
            layers.append(nn.Linear(d_in, d_out, bias=last or not batch_norm))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PredictionMLP(ProjectionMLP):
    """BYOL's predictor: ``Linear(in, hidden) - BN - ReLU - Linear(hidden, out)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batch_norm=True)
