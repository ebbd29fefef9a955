"""IQC — the integrated quality of a fine-tuning curve over annotation rates (CONTRACTS.md section 3).

For one run (method, dataset, frozen flag, seed) with scores Ω(ρ) at annotation rates ρ::

    IQC = ∫_b^a Ω(ρ) dρ / (Ω_ref(1.0) · (a − b)),   b = 0.01, a = 0.64 by default,

with Ω linearly interpolated between measured rates (so the trapezoid rule on the measured rates plus the end
points is exact) and Ω_ref(1.0) the fully annotated score of random init with the encoder NOT frozen, averaged
over seeds: one reference per dataset, shared by frozen and unfrozen runs, so all methods compare. A method is
compared with random init by a one-tailed two-sample Student t-test over the per-seed IQCs (H0: method <= random).

Run rows (for :func:`reference_full_scores` and :func:`iqc_summary`) are mappings or objects with the fields
``method``, ``dataset``, ``rate``, ``frozen``, ``seed`` and one field per metric (e.g. ``dice``, ``aji``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from sslzoo.errors import ConfigError, DataError

DEFAULT_LOWER = 0.01
DEFAULT_UPPER = 0.64
RANDOM_METHOD = "random"


def iqc(
    rates: Sequence[float],
    scores: Sequence[float],
    reference_full_score: float,
    lower: float = DEFAULT_LOWER,
    upper: float = DEFAULT_UPPER,
) -> float:
    """``∫_lower^upper Ω(ρ) dρ / (reference_full_score · (upper − lower))`` with Ω linear between the given points.

    ``rates`` need not be sorted but must be distinct and must cover [lower, upper] (no extrapolation); points
    outside the interval only shape the interpolation at its ends. A flat curve at the reference gives 1.0.
    """
    r = np.asarray(rates, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if r.ndim != 1 or r.shape != s.shape or r.size < 2:
        raise DataError(f"IQC needs matching 1-D rates and scores with at least 2 points, got {r.shape} and {s.shape}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(s))):
        raise DataError("IQC rates and scores must be finite numbers (a NaN score means a failed run)")
    if not 0.0 <= lower < upper:
        raise ConfigError(f"IQC needs 0 <= lower < upper, got lower={lower}, upper={upper}")
    if not (math.isfinite(reference_full_score) and reference_full_score > 0.0):
        raise DataError(f"the reference full-annotation score must be positive, got {reference_full_score}")
    order = np.argsort(r)
    r, s = r[order], s[order]
    if np.any(np.diff(r) == 0):
        raise DataError(f"IQC rates must be distinct, got {r.tolist()}; average repeated runs first")
    tol = 1e-9
    if r[0] > lower + tol or r[-1] < upper - tol:
        raise DataError(
            f"IQC over [{lower}, {upper}] needs scores at rates covering it, got rates {r[0]}..{r[-1]}; "
            "run the missing annotation rates or narrow the interval"
        )
    inner = r[(r > lower) & (r < upper)]
    grid = np.concatenate(([lower], inner, [upper]))
    values = np.interp(grid, r, s)
    integral = float(np.sum((values[1:] + values[:-1]) * np.diff(grid)) / 2.0)
    return integral / (reference_full_score * (upper - lower))


def iqc_ttest(method_iqcs: Sequence[float], random_iqcs: Sequence[float]) -> float:
    """One-tailed two-sample Student t-test (equal variances), H0: mean method IQC <= mean random IQC; returns p.

    Uses ``scipy.stats.ttest_ind(method, random, equal_var=True, alternative="greater")``. Needs at least two
    seeds on one side and one on the other (pooled variance). When the pooled variance is zero (all IQCs
    identical within each group) the t statistic is undefined: p is 0.0 if the method mean is higher, else 1.0.
    """
    from scipy.stats import ttest_ind

    m = np.asarray(method_iqcs, dtype=np.float64)
    r = np.asarray(random_iqcs, dtype=np.float64)
    if m.size < 1 or r.size < 1 or m.size + r.size < 3:
        raise DataError(
            f"the t-test needs per-seed IQCs of both groups and at least 3 in all, got {m.size} and {r.size}; "
            "run more seeds"
        )
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(r))):
        raise DataError("the t-test got NaN or infinite IQCs")
    pooled = np.concatenate((m - m.mean(), r - r.mean()))
    if np.all(np.abs(pooled) <= 1e-12 * max(1.0, float(np.abs(np.concatenate((m, r))).max()))):
        return 0.0 if m.mean() > r.mean() else 1.0
    return float(ttest_ind(m, r, equal_var=True, alternative="greater").pvalue)


# ------------------------------------------------------------------------------------------------ run rows


def _field(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        if name not in row:
            raise DataError(f"run row has no field {name!r} (fields: {sorted(row)})")
        return row[name]
    if not hasattr(row, name):
        raise DataError(f"run row {type(row).__name__} has no field {name!r}")
    return getattr(row, name)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "frozen")
    return bool(value)


def reference_full_scores(
    rows: Iterable[Any], metric: str, full_rate: float = 1.0, baseline: str = RANDOM_METHOD
) -> dict[str, float]:
    """Per dataset, Ω_ref(1.0): mean ``metric`` over the seeds of ``baseline`` (random init), encoder not frozen,
    at rate ``full_rate``. Raises :class:`DataError` naming a dataset that has rows but no such reference run.
    """
    collected: dict[str, list[float]] = defaultdict(list)
    datasets: set[str] = set()
    for row in rows:
        dataset = str(_field(row, "dataset"))
        datasets.add(dataset)
        if (
            str(_field(row, "method")) == baseline
            and not _as_bool(_field(row, "frozen"))
            and abs(float(_field(row, "rate")) - full_rate) < 1e-9
        ):
            collected[dataset].append(float(_field(row, metric)))
    missing = sorted(datasets - set(collected))
    if missing:
        raise DataError(
            f"no reference run for dataset(s) {', '.join(missing)}: IQC needs '{baseline}' init, not frozen, at rate "
            f"{full_rate} (any seed); run it first"
        )
    return {dataset: float(np.mean(values)) for dataset, values in collected.items()}


class IQCEntry(BaseModel):
    """IQC of one (method, dataset, frozen) group: per seed, mean, std (ddof 1) and the p-value versus random."""

    method: str
    dataset: str
    frozen: bool
    seeds: list[int | str]
    iqcs: list[float]
    mean: float
    std: float
    reference: float
    p_value: float | None = None  # None for the random baseline itself or when the t-test cannot run


def iqc_summary(
    rows: Iterable[Any],
    metric: str,
    lower: float = DEFAULT_LOWER,
    upper: float = DEFAULT_UPPER,
    baseline: str = RANDOM_METHOD,
    baseline_frozen: bool | None = None,
) -> list[IQCEntry]:
    """Per (method, dataset, frozen): one IQC per seed against the dataset's reference, and the t-test p-value
    against ``baseline`` runs of the same dataset (with the same frozen flag, or ``baseline_frozen`` if given).

    Repeated rows of one (method, dataset, frozen, seed, rate) are averaged. Seeds missing a rate inside
    [lower, upper] raise :class:`DataError`.
    """
    rows = list(rows)
    references = reference_full_scores(rows, metric, baseline=baseline)
    curves: dict[tuple[str, str, bool], dict[Any, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        key = (str(_field(row, "method")), str(_field(row, "dataset")), _as_bool(_field(row, "frozen")))
        curves[key][_field(row, "seed")][float(_field(row, "rate"))].append(float(_field(row, metric)))

    per_group: dict[tuple[str, str, bool], tuple[list[Any], list[float]]] = {}
    for key, seeds in curves.items():
        seed_ids, values = [], []
        for seed in sorted(seeds, key=str):
            points = seeds[seed]
            rates = sorted(points)
            scores = [float(np.mean(points[rate])) for rate in rates]
            try:
                value = iqc(rates, scores, references[key[1]], lower=lower, upper=upper)
            except DataError as exc:
                raise DataError(f"{key[0]} on {key[1]} (frozen={key[2]}), seed {seed}: {exc}") from exc
            seed_ids.append(seed)
            values.append(value)
        per_group[key] = (seed_ids, values)

    entries = []
    for (method, dataset, frozen), (seed_ids, values) in sorted(per_group.items()):
        p_value = None
        base_key = (baseline, dataset, frozen if baseline_frozen is None else baseline_frozen)
        if method != baseline and base_key in per_group:
            try:
                p_value = iqc_ttest(values, per_group[base_key][1])
            except DataError:
                p_value = None
        entries.append(
            IQCEntry(
                method=method,
                dataset=dataset,
                frozen=frozen,
                seeds=[s if isinstance(s, int | str) else str(s) for s in seed_ids],
                iqcs=values,
                mean=float(np.mean(values)),
                std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                reference=references[dataset],
                p_value=p_value,
            )
        )
    return entries
