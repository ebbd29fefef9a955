"""IQC (+ t-test, references from run rows) and RQC (convergence point on loss histories)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sslzoo.errors import ConfigError, DataError
from sslzoo.metrics.iqc import iqc, iqc_summary, iqc_ttest, reference_full_scores
from sslzoo.metrics.rqc import convergence_point, moving_median, rqc, rqc_from_histories

RATES = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0]

# ------------------------------------------------------------------------------------------------ IQC


def test_iqc_of_a_flat_curve_at_the_reference_is_one():
    assert iqc(RATES, [0.8] * len(RATES), reference_full_score=0.8) == pytest.approx(1.0)
    assert iqc(RATES, [0.4] * len(RATES), reference_full_score=0.8) == pytest.approx(0.5)


def test_iqc_of_a_linear_curve_matches_the_hand_computed_integral():
    # Ω(ρ) = ρ: ∫_0.01^0.64 ρ dρ = (0.64² - 0.01²)/2 = 0.20475 ; / (1.0 · 0.63) = 0.325
    assert iqc(RATES, RATES, reference_full_score=1.0) == pytest.approx(0.325, abs=1e-12)
    # Ω(ρ) = 0.5 + ρ with reference 0.9: (0.5·0.63 + 0.20475) / (0.9 · 0.63)
    scores = [0.5 + r for r in RATES]
    assert iqc(RATES, scores, reference_full_score=0.9) == pytest.approx((0.315 + 0.20475) / (0.9 * 0.63))


def test_iqc_interpolates_between_measured_rates_and_at_inner_bounds():
    # a kink at 0.32: 0 up to 0.32, then 1 at 0.64: the area is the triangle 0.32 * 1 / 2
    rates, scores = [0.01, 0.32, 0.64], [0.0, 0.0, 1.0]
    assert iqc(rates, scores, 1.0) == pytest.approx(0.16 / 0.63)
    # unsorted input and bounds between measured points (interpolated ends)
    assert iqc([0.64, 0.0, 1.0], [0.64, 0.0, 1.0], 1.0, lower=0.1, upper=0.5) == pytest.approx(0.3)


def test_iqc_rejects_missing_rates_and_bad_references():
    with pytest.raises(DataError, match="covering"):
        iqc([0.02, 0.64], [0.5, 0.6], 1.0)
    with pytest.raises(DataError, match="positive"):
        iqc(RATES, RATES, 0.0)
    with pytest.raises(DataError, match="distinct"):
        iqc([0.01, 0.01, 0.64], [0.1, 0.2, 0.3], 1.0)
    with pytest.raises(DataError, match="finite"):
        iqc([0.01, 0.64], [math.nan, 0.3], 1.0)
    with pytest.raises(ConfigError):
        iqc(RATES, RATES, 1.0, lower=0.5, upper=0.1)


def test_ttest_is_small_for_clearly_better_seeds_and_large_for_worse():
    random_iqcs = [0.60, 0.62, 0.61, 0.59, 0.63]
    better = [0.80, 0.82, 0.79, 0.81, 0.83]
    worse = [0.50, 0.52, 0.49, 0.51, 0.48]
    assert iqc_ttest(better, random_iqcs) < 1e-6
    assert iqc_ttest(worse, random_iqcs) > 0.99
    # p of "better" + p of the swapped one-tailed test = 1 (one-tailed, not two-tailed)
    assert iqc_ttest(better, random_iqcs) + iqc_ttest(random_iqcs, better) == pytest.approx(1.0)
    # Student (pooled variance) with n1 + n2 - 2 degrees of freedom, checked by hand
    from scipy.stats import t as student_t

    a, b = np.array([0.7, 0.75, 0.72]), np.array([0.69, 0.71, 0.70])
    pooled = ((a.var(ddof=1) * 2) + (b.var(ddof=1) * 2)) / 4
    t_stat = (a.mean() - b.mean()) / math.sqrt(pooled * (1 / 3 + 1 / 3))
    assert iqc_ttest(a, b) == pytest.approx(student_t.sf(t_stat, df=4))


def test_ttest_edge_cases():
    assert iqc_ttest([0.7, 0.7], [0.6, 0.6]) == 0.0
    assert iqc_ttest([0.6, 0.6], [0.6, 0.6]) == 1.0
    with pytest.raises(DataError, match="seeds"):
        iqc_ttest([0.7], [0.6])


def _rows():
    rows = []
    curves = {  # method, frozen -> per-seed curve Ω(ρ) = base + slope·ρ (+ seed noise)
        ("random", False): (0.50, 0.30),
        ("random", True): (0.30, 0.20),
        ("simclr", False): (0.60, 0.30),
        ("simclr", True): (0.55, 0.25),
    }
    for (method, frozen), (base, slope) in curves.items():
        for seed in range(3):
            for rate in RATES:
                rows.append(
                    {
                        "method": method,
                        "dataset": "isic2017",
                        "rate": rate,
                        "frozen": frozen,
                        "seed": seed,
                        "dice": base + slope * rate + 0.01 * seed,
                    }
                )
    return rows


def test_reference_is_random_unfrozen_full_rate_mean_over_seeds():
    rows = _rows()
    refs = reference_full_scores(rows, "dice")
    assert refs == {"isic2017": pytest.approx(0.80 + 0.01)}  # mean of 0.80, 0.81, 0.82
    with pytest.raises(DataError, match="no reference run for dataset"):
        reference_full_scores([r for r in rows if r["method"] != "random"], "dice")


def test_iqc_summary_per_seed_with_shared_reference_and_pvalues():
    entries = {(e.method, e.frozen): e for e in iqc_summary(_rows(), "dice")}
    ref = 0.81
    simclr = entries[("simclr", False)]
    expected_seed0 = (0.60 * 0.63 + 0.30 * 0.20475) / (ref * 0.63)
    assert simclr.iqcs[0] == pytest.approx(expected_seed0)
    assert simclr.reference == pytest.approx(ref) == entries[("simclr", True)].reference
    assert simclr.p_value is not None and simclr.p_value < 0.01
    assert entries[("random", False)].p_value is None
    assert entries[("random", False)].mean == pytest.approx(np.mean(entries[("random", False)].iqcs))


# ------------------------------------------------------------------------------------------------ RQC


def test_convergence_point_of_exponential_decay_is_the_hand_computed_epoch():
    epochs = np.arange(100)
    losses = np.exp(-epochs / 10.0)  # monotone: the moving median leaves it unchanged
    point = convergence_point(losses, epoch_times=[2.0] * 100)
    # threshold = Lmin + 0.05 (1 - Lmin), Lmin = e^-9.9; e^(-t/10) <= threshold first at t = 30 (29.95 -> 30)
    lmin = math.exp(-9.9)
    assert -10 * math.log(lmin + 0.05 * (1 - lmin)) == pytest.approx(29.948, abs=1e-3)
    assert point.epoch == 30 and point.epochs == 31 and point.converged
    assert point.time_s == pytest.approx(62.0) and point.total_time_s == pytest.approx(200.0)
    assert point.threshold == pytest.approx(lmin + 0.05 * (1 - lmin))


def test_convergence_point_with_offset_and_slower_decay():
    losses = 2.0 + 3.0 * np.exp(-np.arange(200) / 25.0)
    point = convergence_point(losses)
    drop = 3.0 * (1 - math.exp(-199 / 25.0))
    expected = math.ceil(-25.0 * math.log((0.05 * drop + 3.0 * math.exp(-199 / 25.0)) / 3.0))
    assert point.epoch == expected == 75


def test_isolated_spikes_do_not_trigger_convergence_early():
    losses = np.exp(-np.arange(60) / 10.0)
    spiky = losses.copy()
    spiky[[5, 12]] = 0.0  # sudden dips far below the band
    spiky[[20, 40]] = 5.0  # and upward spikes
    assert convergence_point(spiky).epoch == convergence_point(losses).epoch
    # without smoothing (window 1) and patience 1 the dip at epoch 5 would be taken
    assert convergence_point(spiky, window=1, patience=1).epoch == 5


def test_a_loss_that_dips_back_out_of_the_band_must_stay_for_patience_epochs():
    # in the band at epochs 3..5 (3 epochs), out at 6..8, then in for good from 9
    losses = [10, 8, 6, 0.9, 0.9, 0.9, 6, 6, 6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # band: <= 0.975
    point = convergence_point(losses, window=1, patience=5)
    assert point.epoch == 9
    assert convergence_point(losses, window=1, patience=3).epoch == 3


def test_moving_median_is_centred_with_repeated_ends():
    assert moving_median([5, 1, 9, 2, 7], 5).tolist() == [5, 5, 5, 7, 7]
    assert moving_median([3.0], 5).tolist() == [3.0]


def test_flat_short_and_unsettled_histories():
    flat = convergence_point([1.0] * 8)
    assert flat.epoch == 0 and flat.converged
    rising = convergence_point(np.linspace(1, 2, 10))
    assert rising.epoch == 0 and rising.converged
    single = convergence_point([0.7], epoch_times=[3.0])
    assert single.epoch == 0 and single.converged and single.time_s == 3.0
    # still falling at the end: the band is reached only in the last epochs, fewer than `patience` remain
    falling = convergence_point(np.linspace(10, 0, 20), epoch_times=[1.0] * 20)
    assert not falling.converged and falling.epoch == 19 and falling.time_s == falling.total_time_s == 20.0
    short = convergence_point([5.0, 1.0, 0.9], window=1)
    assert not short.converged and short.epoch == 2
    with pytest.raises(DataError, match="empty"):
        convergence_point([])
    with pytest.raises(DataError, match="NaN"):
        convergence_point([1.0, math.nan, 0.5])
    with pytest.raises(DataError, match="epoch_times"):
        convergence_point([1.0, 0.5], epoch_times=[1.0])


def test_rqc_is_relative_to_the_fastest_method():
    assert rqc({"simclr": 120.0, "byol": 60.0, "moco": 90.0}) == {"simclr": 2.0, "byol": 1.0, "moco": 1.5}
    with pytest.raises(DataError):
        rqc({})
    with pytest.raises(DataError, match="positive"):
        rqc({"a": 0.0, "b": 1.0})


def test_rqc_from_histories_uses_time_to_convergence():
    fast = np.exp(-np.arange(100) / 5.0)  # converges near epoch 15
    slow = np.exp(-np.arange(100) / 10.0)  # converges at epoch 30
    result = rqc_from_histories({"fast": (fast, [1.0] * 100), "slow": (slow, [1.0] * 100)})
    assert result["fast"].rqc == 1.0
    assert result["fast"].point.epoch == 15
    assert result["slow"].rqc == pytest.approx(31 / 16)


def test_table_ii_rqc_is_the_mean_over_datasets():
    from sslzoo.errors import DataError
    from sslzoo.metrics.rqc import mean_rqc_over_datasets

    table = mean_rqc_over_datasets(
        {"monuseg": {"simclr": 1.0, "detco": 6.0}, "isic2017": {"simclr": 2.0, "detco": 4.24}}
    )
    assert table == {"detco": pytest.approx(5.12), "simclr": pytest.approx(1.5)}
    assert mean_rqc_over_datasets({"monuseg": {"moco": 2.0}, "isic2017": {}}) == {"moco": 2.0}
    with pytest.raises(DataError):
        mean_rqc_over_datasets({"monuseg": {"moco": 0.0}})
