"""Nested annotation-rate subsets and the train/validation split (CONTRACTS.md section 4).

For one seed, the ids are sorted and permuted once with numpy's PCG64 generator
(``np.random.default_rng(seed).permutation``); the subset at rate ρ is the first
:func:`subset_size` ids of that permutation. Hence subsets are nested (ρ < ρ' ⇒ S_ρ ⊆ S_ρ'),
independent of the order the ids were given in, and identical on every machine
(numpy guarantees the PCG64 stream and ``permutation`` across platforms).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from sslzoo.errors import ConfigError

#: ρ_s = 2^s / 100 for s = 0..6, plus the fully annotated set.
ANNOTATION_RATES: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)

#: Added to the seed for the validation split, so it draws from a stream apart from the rate subsets.
_SPLIT_STREAM = 1


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"annotation rate must lie in (0, 1] (e.g. 0.04 for 4 %), got {rate}")
    return rate


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    try:
        ordered = sorted(ids)
    except TypeError as exc:
        raise ConfigError(f"ids must be mutually comparable (e.g. all strings): {exc}") from exc
    if not ordered:
        raise ConfigError("cannot draw a subset from an empty list of ids; check that the dataset has training items")
    duplicates = sorted({a for a, b in zip(ordered, ordered[1:], strict=False) if a == b})
    if duplicates:
        raise ConfigError(f"ids must be unique, got duplicates such as {duplicates[:3]}")
    return ordered


def subset_size(n: int, rate: float) -> int:
    """Number of samples at annotation rate ``rate`` out of ``n``: ``max(1, round(rate * n))``.

    ``round`` is Python's (halves go to the even neighbour: 0.5 → 0 → 1, 1.5 → 2, 2.5 → 2).
    Never more than ``n``; at least one sample.
    """
    rate = _check_rate(rate)
    if n < 1:
        raise ConfigError(f"cannot draw a subset of an empty set (n = {n})")
    return min(n, max(1, round(rate * n)))


def _permuted(ids: Sequence[str], seed: int) -> list[str]:
    ordered = _sorted_ids(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in order]


def rate_subset(ids: Sequence[str], rate: float, seed: int) -> list[str]:
    """The ``subset_size(len(ids), rate)`` ids drawn at ``rate`` with ``seed``, in draw order.

    Draw order = ``sorted(ids)`` permuted by ``np.random.default_rng(seed).permutation``; the
    result for a smaller rate is a prefix of the result for a larger one (nested).
    """
    rate = _check_rate(rate)
    permuted = _permuted(ids, seed)
    return permuted[: subset_size(len(permuted), rate)]


def nested_subsets(
    ids: Sequence[str], rates: Sequence[float] = ANNOTATION_RATES, seed: int = 0
) -> dict[float, list[str]]:
    """``{rate: rate_subset(ids, rate, seed)}`` for every rate, from one permutation."""
    checked = [_check_rate(r) for r in rates]
    permuted = _permuted(ids, seed)
    return {r: permuted[: subset_size(len(permuted), r)] for r in checked}


def train_val_split(ids: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Carve a validation set of ``max(1, round(val_fraction * n))`` ids out of the training ids.

    Returns ``(train, val)``, both sorted. The draw uses ``np.random.default_rng([seed, 1])``,
    a stream apart from :func:`rate_subset`'s; draw rate subsets from ``train`` afterwards.
    ``val_fraction = 0`` gives an empty validation set.
    """
    val_fraction = float(val_fraction)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    ordered = _sorted_ids(ids)
    if val_fraction == 0.0:
        return ordered, []
    if len(ordered) < 2:
        raise ConfigError(f"need at least 2 ids to carve out a validation set, got {len(ordered)}")
    n_val = min(len(ordered) - 1, max(1, round(val_fraction * len(ordered))))
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(len(ordered))
    val_idx = set(order[:n_val].tolist())
    train = [x for i, x in enumerate(ordered) if i not in val_idx]
    val = [x for i, x in enumerate(ordered) if i in val_idx]
    return train, val
