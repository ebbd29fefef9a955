"""RQC — relative convergence time of pretext training (CONTRACTS.md section 3).

``RQC(method) = t(method) / t*`` with ``t*`` the fastest compared method, and ``t`` the wall time until the
training loss, smoothed by a moving median of 5 epochs, first comes within 5 % of its total drop and stays
there for 5 epochs::

    L̃ = moving_median(L, 5);  L0 = L̃[0];  Lmin = min L̃
    epoch* = first e with L̃[j] - Lmin <= 0.05 (L0 - Lmin) for all j in e .. e + 4

Edge conventions (also in :func:`convergence_point`):

- The median window is centred on each epoch; at the ends the history is padded by repeating its first / last
  value (``scipy.ndimage.median_filter(mode="nearest")``), so a history of one epoch smooths to itself.
- "Stays there for 5 epochs" counts the epoch itself: epochs e .. e + patience - 1 must all lie within the band,
  and they must all exist. An epoch too close to the end to show that never qualifies.
- Flat or rising curves (no drop: ``L0 - Lmin == 0``) have nothing to converge to: the point is epoch 0,
  ``converged=True``.
- A curve that never settles (still falling at the end, or too short to show ``patience`` epochs in the band)
  gets the last epoch and ``converged=False``; its time is then the total training time, a lower bound.
- Epochs are 0-based indices; ``epochs`` (= index + 1) is the number of epochs trained up to and including the
  point, and ``time_s`` the sum of their wall times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sslzoo.errors import ConfigError, DataError


@dataclass(frozen=True)
class ConvergencePoint:
    """Where a loss history converged (see the module docstring for the conventions)."""

    epoch: int  # 0-based index of the convergence epoch
    epochs: int  # epochs trained up to and including it (epoch + 1)
    converged: bool  # False: the curve never settled; epoch is the last one
    initial_loss: float  # L0 of the smoothed curve
    min_loss: float  # Lmin of the smoothed curve
    threshold: float  # Lmin + tolerance * (L0 - Lmin)
    smoothed: tuple[float, ...]
    time_s: float | None = None  # wall time up to and including `epoch` (when epoch times are given)
    total_time_s: float | None = None  # wall time of the whole history


def moving_median(values: Sequence[float] | np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving median over ``window`` epochs, ends padded by repeating the first / last value."""
    from scipy.ndimage import median_filter

    if window < 1:
        raise ConfigError(f"the median window must be >= 1 epoch, got {window}")
    return median_filter(np.asarray(values, dtype=np.float64), size=window, mode="nearest")


def convergence_point(
    losses: Sequence[float],
    window: int = 5,
    tolerance: float = 0.05,
    patience: int = 5,
    epoch_times: Sequence[float] | None = None,
) -> ConvergencePoint:
    """First epoch where the median-smoothed loss is within ``tolerance`` of its total drop and stays there
    for ``patience`` epochs (counting itself); see the module docstring for flat, short and unsettled curves.

    ``epoch_times`` (seconds per epoch, same length as ``losses``) adds ``time_s`` and ``total_time_s``.
    """
    loss = np.asarray(losses, dtype=np.float64)
    if loss.ndim != 1 or loss.size == 0:
        raise DataError("the loss history is empty; record one training loss per epoch")
    if not np.all(np.isfinite(loss)):
        raise DataError("the loss history contains NaN or infinite values (diverged training?)")
    if not 0.0 <= tolerance < 1.0:
        raise ConfigError(f"tolerance must lie in [0, 1), got {tolerance}")
    if patience < 1:
        raise ConfigError(f"patience must be >= 1 epoch, got {patience}")
    times = None
    if epoch_times is not None:
        times = np.asarray(epoch_times, dtype=np.float64)
        if times.shape != loss.shape or not np.all(np.isfinite(times)) or np.any(times < 0):
            raise DataError(
                f"epoch_times must hold one non-negative wall time per epoch ({loss.size}), got shape {times.shape}"
            )

    smoothed = moving_median(loss, window)
    l0, lmin = float(smoothed[0]), float(smoothed.min())
    drop = l0 - lmin
    threshold = lmin + tolerance * drop
    if drop <= 0.0:
        epoch, converged = 0, True
    else:
        inside = smoothed <= threshold
        # run[e] = number of consecutive in-band epochs starting at e
        run = np.zeros(loss.size + 1, dtype=np.int64)
        for e in range(loss.size - 1, -1, -1):
            run[e] = run[e + 1] + 1 if inside[e] else 0
        qualifying = np.flatnonzero(run[:-1] >= patience)
        if qualifying.size:
            epoch, converged = int(qualifying[0]), True
        else:
            epoch, converged = loss.size - 1, False
    return ConvergencePoint(
        epoch=epoch,
        epochs=epoch + 1,
        converged=converged,
        initial_loss=l0,
        min_loss=lmin,
        threshold=threshold,
        smoothed=tuple(float(v) for v in smoothed),
        time_s=None if times is None else float(times[: epoch + 1].sum()),
        total_time_s=None if times is None else float(times.sum()),
    )


def rqc(times: Mapping[str, float]) -> dict[str, float]:
    """``t(method) / min_m t(m)`` for each method: 1.0 for the fastest, larger is slower."""
    if not times:
        raise DataError("RQC needs the convergence time of at least one method")
    for method, value in times.items():
        if not (math.isfinite(value) and value > 0):
            raise DataError(f"convergence time of {method!r} must be a positive number of seconds, got {value}")
    fastest = min(times.values())
    return {method: float(value / fastest) for method, value in times.items()}


@dataclass(frozen=True)
class RQCEntry:
    """RQC of one method with the convergence point it was computed from."""

    method: str
    rqc: float
    point: ConvergencePoint


def rqc_from_histories(
    histories: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    window: int = 5,
    tolerance: float = 0.05,
    patience: int = 5,
) -> dict[str, RQCEntry]:
    """RQC of several methods from ``{method: (losses per epoch, wall seconds per epoch)}``."""
    points = {
        method: convergence_point(losses, window, tolerance, patience, epoch_times=epoch_times)
        for method, (losses, epoch_times) in histories.items()
    }
    ratios = rqc({method: float(point.time_s or 0.0) for method, point in points.items()})
    return {method: RQCEntry(method=method, rqc=ratios[method], point=points[method]) for method in points}


def mean_rqc_over_datasets(per_dataset: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Table II's RQC: per method, the mean of its RQC over the datasets it was measured on.

    ``per_dataset`` is ``{dataset: {method: RQC}}`` (e.g. from :func:`rqc_from_histories` per dataset);
    the paper reports one RQC per method, averaged over MoNuSeg and ISIC 2017.
    """
    values: dict[str, list[float]] = {}
    for ratios in per_dataset.values():
        for method, value in ratios.items():
            if not (math.isfinite(value) and value > 0):
                raise DataError(f"RQC of {method!r} must be a positive number, got {value}")
            values.setdefault(method, []).append(float(value))
    if not values:
        raise DataError("no RQC values to average; pass {dataset: {method: RQC}}")
    return {method: float(np.mean(v)) for method, v in sorted(values.items())}
