"""The Markdown tables of ``REPORT.md`` from ``runs.csv`` rows, ``iqc.csv`` entries and RQC rows.

- *Table I style* (:func:`table_scores`): per dataset and frozen / fine-tuned encoder, the primary score at each
  annotation rate, mean ± std over seeds, one row per method;
- *Table IV style* (:func:`table_iqc`): IQC mean ± std over seeds and the one-tailed t-test p against random init;
- *RQC* (:func:`table_rqc`) and wall time per method (:func:`table_wall_time`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sslzoo.study.config import KNOWN_METHODS
from sslzoo.study.grid import format_rate


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for one value) of the finite ``values``; (NaN, NaN) when none."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _pm(mean: float, std: float, digits: int = 3, n: int = 2) -> str:
    """``mean ± std``; just the mean when there is one value (no spread to show)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (header row, separator, one row per entry), as one string."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def methods_in_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The methods present in ``rows``: known methods in the study's order, then the others sorted."""
    present = {r["method"] for r in rows}
    return [m for m in KNOWN_METHODS if m in present] + sorted(present - set(KNOWN_METHODS))


def score_curves(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, bool, str], dict[float, list[float]]]:
    """``{(dataset, frozen, method): {rate: [score per seed]}}``."""
    curves: dict[tuple[str, bool, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        curves[(r["dataset"], r["frozen"], r["method"])][r["rate"]].append(r["score"])
    return curves


def table_scores(rows: Sequence[Mapping[str, Any]], dataset: str, frozen: bool) -> str:
    """Table I style: methods x rates, mean ± std over seeds (n seeds in brackets when they differ)."""
    subset = [r for r in rows if r["dataset"] == dataset and r["frozen"] == frozen]
    rates = sorted({r["rate"] for r in subset})
    curves = score_curves(subset)
    body = []
    for method in methods_in_order(subset):
        cells = [method]
        for rate in rates:
            values = curves[(dataset, frozen, method)].get(rate, [])
            partial = 0 < len(values) < _max_seeds(rows)
            cells.append(_pm(*mean_std(values), n=len(values)) + (f" (n={len(values)})" if partial else ""))
        body.append(cells)
    return markdown_table(["method"] + [f"{format_rate(100 * r)} %" for r in rates], body)


def _max_seeds(rows: Sequence[Mapping[str, Any]]) -> int:
    return len({r["seed"] for r in rows}) or 1


def table_iqc(iqc: Sequence[Mapping[str, Any]], dataset: str, frozen_flags: Sequence[bool]) -> str:
    """Table IV style: IQC mean ± std (n seeds) and p versus random per method and frozen flag."""
    entries = {(e["method"], e["frozen"]): e for e in iqc if e["dataset"] == dataset}
    methods = methods_in_order([{"method": m} for m, _ in entries])
    header = ["method"]
    for frozen in frozen_flags:
        state = "frozen" if frozen else "fine-tuned"
        header += [f"IQC ({state})", f"p ({state})"]
    body = []
    for method in methods:
        cells = [method]
        for frozen in frozen_flags:
            e = entries.get((method, frozen))
            if e is None:
                cells += ["–", "–"]
                continue
            p = e["p_value"]
            cells.append(f"{_pm(e['iqc_mean'], e['iqc_std'], n=e['n_seeds'])} (n={e['n_seeds']})")
            cells.append("–" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.3g}")
        body.append(cells)
    return markdown_table(header, body)


def rqc_per_method(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table II's RQC: per method, the mean of its per-dataset RQC (:func:`sslzoo.metrics.rqc.mean_rqc_over_datasets`)
    with the per-dataset values it averages (``{"method", "rqc", "per_dataset": {dataset: RQC}}``)."""
    from sslzoo.metrics.rqc import mean_rqc_over_datasets

    per_dataset: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        per_dataset[r["dataset"]][r["method"]] = float(r["rqc"])
    if not per_dataset:
        return []
    means = mean_rqc_over_datasets(per_dataset)
    order = methods_in_order([{"method": m} for m in means])
    return [{"method": m, "rqc": means[m], "per_dataset": {d: v[m] for d, v in sorted(per_dataset.items()) if m in v}}
            for m in order]  # fmt: skip


def table_rqc_mean(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table II style: one RQC per method (mean over the datasets), beside the per-dataset values."""
    entries = rqc_per_method(rows)
    datasets = sorted({d for e in entries for d in e["per_dataset"]})
    body = [[e["method"], f"{e['rqc']:.2f}", *(f"{e['per_dataset'][d]:.2f}" if d in e["per_dataset"] else "–"
                                             for d in datasets), str(len(e["per_dataset"]))]
            for e in entries]  # fmt: skip
    header = ["method", "RQC (Table II: mean over datasets)", *(f"RQC {d}" for d in datasets), "datasets"]
    return markdown_table(header, body)


def table_rqc(rows: Sequence[Mapping[str, Any]]) -> str:
    body = [
        [r["dataset"], r["method"], f"{r['rqc']:.2f}", f"{r['epochs']} / {r['n_epochs']}",
         "yes" if r["converged"] else "no (lower bound)", f"{r['time_s']:.0f}", f"{r['total_time_s']:.0f}"]
        for r in rows
    ]  # fmt: skip
    header = ["dataset", "method", "RQC", "epochs to convergence / trained", "converged", "t (s)", "total (s)"]
    return markdown_table(header, body)


def table_wall_time(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per method and frozen flag: runs, median / max seconds per run (training + evaluation), sum."""
    groups: dict[tuple[str, bool], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["frozen"])].append(r)
    body = []
    for method in methods_in_order(rows):
        for frozen in (False, True):
            runs = groups.get((method, frozen))
            if not runs:
                continue
            total = [r["run_seconds"] for r in runs if math.isfinite(r.get("run_seconds", math.nan))]
            train = [r["train_seconds"] for r in runs if math.isfinite(r.get("train_seconds", math.nan))]
            epochs = [r["epochs"] for r in runs if r.get("epochs") is not None]
            body.append([
                method, "frozen" if frozen else "fine-tuned", str(len(runs)),
                f"{np.median(train):.0f}" if train else "–", f"{np.median(total):.0f}" if total else "–",
                f"{max(total):.0f}" if total else "–", f"{sum(total) / 60:.1f}" if total else "–",
                f"{np.median(epochs):.0f}" if epochs else "–",
            ])  # fmt: skip
    header = ["method", "encoder", "runs", "median train s", "median run s", "max run s", "sum (min)", "median epochs"]
    return markdown_table(header, body)
