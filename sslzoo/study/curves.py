"""Score curve figures of ``REPORT.md``: ``figures/curves_<dataset>_<tuned|frozen>.png`` — score vs annotation
rate (log x), mean over seeds with a ± std band, the IQC interval shaded under each curve, the reference dashed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslzoo.study.grid import format_rate
from sslzoo.study.tables import mean_std, methods_in_order, score_curves


def plot_curves(
    rows: Sequence[Mapping[str, Any]],
    dataset: str,
    frozen: bool,
    path: Path,
    lower: float = 0.01,
    upper: float = 0.64,
    reference: float | None = None,
) -> Path:
    """Score vs annotation rate (log x) per method: mean over seeds, ± std band, IQC interval shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subset = [r for r in rows if r["dataset"] == dataset and r["frozen"] == frozen]
    curves = score_curves(subset)
    metric = next((r["metric"] for r in subset if r.get("metric")), "score")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colours = plt.get_cmap("tab10")
    for k, method in enumerate(methods_in_order(subset)):
        points = curves[(dataset, frozen, method)]
        rates = np.array(sorted(points))
        stats = np.array([mean_std(points[r]) for r in rates])
        colour = colours(k % 10)
        ax.plot(rates, stats[:, 0], marker="o", ms=3, color=colour, label=method)
        ax.fill_between(rates, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], color=colour, alpha=0.12, lw=0)
        inside = (rates >= lower - 1e-9) & (rates <= upper + 1e-9)
        if inside.sum() >= 2:
            ax.fill_between(rates[inside], 0, stats[inside, 0], color=colour, alpha=0.06, lw=0)
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, color="grey", ls="--", lw=1, label="reference (random, 100 %)")
    ax.axvspan(lower, upper, color="grey", alpha=0.05, lw=0)
    ax.set_xscale("log")
    all_rates = sorted({r["rate"] for r in subset})
    ax.set_xticks(all_rates, [f"{format_rate(100 * r)} %" for r in all_rates])
    ax.minorticks_off()
    ax.set_xlabel("annotation rate (log scale; shaded: IQC interval)")
    ax.set_ylabel(metric)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{dataset}, encoder {'frozen' if frozen else 'fine-tuned'}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
