"""Annotation-rate subsets: nested, reproducible, exact sizes (CONTRACTS.md section 4)."""

from __future__ import annotations

import random

import pytest

from sslzoo.data.subsets import ANNOTATION_RATES, nested_subsets, rate_subset, subset_size, train_val_split
from sslzoo.errors import ConfigError

IDS = [f"{i:04d}" for i in range(1000)]


def test_rates_are_the_papers() -> None:
    paper = tuple(2**s / 100 for s in range(7)) + (1.0,)
    assert paper == ANNOTATION_RATES


@pytest.mark.parametrize("n", [1, 7, 30, 480, 1000])
@pytest.mark.parametrize("seed", [0, 3])
def test_subsets_are_nested_with_exact_sizes(n: int, seed: int) -> None:
    ids = IDS[:n]
    subsets = nested_subsets(ids, seed=seed)
    previous: list[str] = []
    for rate in ANNOTATION_RATES:
        subset = subsets[rate]
        assert len(subset) == max(1, round(rate * n)) == subset_size(n, rate)
        assert len(set(subset)) == len(subset) and set(subset) <= set(ids)
        assert subset[: len(previous)] == previous  # nested: the smaller subset is a prefix
        assert subset == rate_subset(ids, rate, seed)
        previous = subset
    assert sorted(subsets[1.0]) == sorted(ids)


def test_sizes_round_half_to_even_and_never_zero() -> None:
    assert subset_size(30, 0.01) == 1  # 0.3 → 0 → at least one
    assert subset_size(50, 0.01) == 1  # 0.5 → 0 (half to even) → 1
    assert subset_size(75, 0.02) == 2  # 1.5 → 2
    assert subset_size(125, 0.02) == 2  # 2.5 → 2
    assert subset_size(480, 0.04) == 19  # 19.2
    assert subset_size(3, 1.0) == 3


def test_independent_of_input_order_and_reproducible() -> None:
    shuffled = IDS.copy()
    random.Random(1).shuffle(shuffled)
    for rate in (0.01, 0.16, 0.64):
        assert rate_subset(shuffled, rate, seed=5) == rate_subset(IDS, rate, seed=5)
        assert rate_subset(IDS, rate, seed=5) == rate_subset(IDS, rate, seed=5)


def test_different_seeds_differ() -> None:
    assert set(rate_subset(IDS, 0.08, seed=0)) != set(rate_subset(IDS, 0.08, seed=1))


def test_golden_one_percent_subset_pins_cross_machine_reproducibility() -> None:
    # computed once with numpy's PCG64 (np.random.default_rng(0).permutation); must never change
    golden = ["0459", "0206", "0222", "0162", "0711", "0814", "0350", "0890", "0518", "0264"]
    assert rate_subset(IDS, 0.01, seed=0) == golden


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan")])
def test_bad_rate_is_a_config_error(rate: float) -> None:
    with pytest.raises(ConfigError, match="rate"):
        rate_subset(IDS, rate, seed=0)


def test_empty_or_duplicate_ids_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="empty"):
        rate_subset([], 0.5, seed=0)
    with pytest.raises(ConfigError, match="unique"):
        rate_subset(["a", "b", "a"], 0.5, seed=0)


def test_train_val_split_partitions_and_is_reproducible() -> None:
    train, val = train_val_split(IDS, val_fraction=0.1, seed=2)
    assert len(val) == 100 and len(train) == 900
    assert set(train).isdisjoint(val) and sorted(train + val) == IDS
    assert train == sorted(train) and val == sorted(val)
    assert train_val_split(list(reversed(IDS)), 0.1, seed=2) == (train, val)
    assert train_val_split(IDS, 0.1, seed=3)[1] != val
    assert train_val_split(IDS[:3], 0.1, seed=0)[1].__len__() == 1  # at least one validation id
    assert train_val_split(IDS[:3], 0.0, seed=0) == (IDS[:3], [])
    with pytest.raises(ConfigError, match="at least 2"):
        train_val_split(["only"], 0.2)
    with pytest.raises(ConfigError, match="val_fraction"):
        train_val_split(IDS, 1.0)
