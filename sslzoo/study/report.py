"""``write_report(out_dir)``: ``REPORT.md`` + figures from a study folder's ``runs.csv`` (and ``pretrain.csv``).

Tables (after the paper):

- *Table I style*: per dataset and frozen / fine-tuned encoder, the primary score at each annotation rate,
  mean ± std over seeds, one row per method;
- *Table IV style*: IQC mean ± std over seeds and the one-tailed t-test p against random init, per method ×
  (fine-tuned, frozen) — recomputed from ``runs.csv`` (:func:`sslzoo.study.results.iqc_table`);
- *RQC*: relative convergence time of pretext training (:mod:`sslzoo.metrics.rqc`) from ``pretrain.csv``;
- wall time per run and per study.

Figures (matplotlib, Agg): ``figures/curves_<dataset>_<tuned|frozen>.png`` — score vs annotation rate (log x),
mean over seeds with a ± std band, the IQC interval shaded under each curve, the reference score dashed; with the
study's work folder also ``figures/cka_<dataset>.png`` (Table III), ``neighbours_<dataset>.png`` (Fig. 4, NQC) and
``gradcam_<dataset>.png`` (Fig. 5) from :mod:`sslzoo.study.figures`.
``notes.md`` in the study folder, when present, is copied into the report under "Discussion".
"""

from __future__ import annotations

import csv
import math
import platform
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslzoo.errors import DataError
from sslzoo.study.grid import format_rate
from sslzoo.study.results import read_runs, write_csv_atomic

REPORT_FILE = "REPORT.md"
NOTES_FILE = "notes.md"
PRETRAIN_HISTORY_FILE = "pretrain.csv"
PRETRAIN_HISTORY_COLUMNS = ("method", "dataset", "epoch", "loss", "seconds")
FIGURES_DIR = "figures"


# ------------------------------------------------------------------------------------------------ pretrain history
def read_lightning_history(folder: str | Path) -> tuple[list[float], list[float]]:
    """Per-epoch ``train/loss_epoch`` and ``time/epoch_seconds`` from ``folder/logs/version_*/metrics.csv``
    (the CSV log of :func:`sslzoo.pretext.train.pretrain`; the newest version). ([], []) when absent."""
    logs = sorted(Path(folder).glob("logs/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return [], []
    per_epoch: dict[int, dict[str, float]] = defaultdict(dict)
    with logs[-1].open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, name in (("train/loss_epoch", "loss"), ("time/epoch_seconds", "seconds")):
                if row.get(key):
                    per_epoch[epoch][name] = float(row[key])
    epochs = [e for e in sorted(per_epoch) if "loss" in per_epoch[e]]
    return [per_epoch[e]["loss"] for e in epochs], [per_epoch[e].get("seconds", math.nan) for e in epochs]


def record_pretrain_history(out_dir: str | Path, method: str, dataset: str, folder: str | Path) -> None:
    """Merge the per-epoch loss history of one pretrained encoder into ``out_dir/pretrain.csv`` (for RQC)."""
    from sslzoo.study.results import LOCK_FILE, locked

    losses, seconds = read_lightning_history(folder)
    if not losses:
        return
    out = Path(out_dir)
    path = out / PRETRAIN_HISTORY_FILE
    with locked(out / LOCK_FILE):
        rows = [r for r in read_pretrain_history(out) if (r["method"], r["dataset"]) != (method, dataset)]
        rows += [
            {"method": method, "dataset": dataset, "epoch": e, "loss": loss, "seconds": s}
            for e, (loss, s) in enumerate(zip(losses, seconds, strict=True))
        ]
        write_csv_atomic(path, PRETRAIN_HISTORY_COLUMNS, rows)


def read_pretrain_history(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / PRETRAIN_HISTORY_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {"method": r["method"], "dataset": r["dataset"], "epoch": int(r["epoch"]), "loss": float(r["loss"]),
             "seconds": float(r["seconds"]) if r["seconds"] else math.nan}
            for r in csv.DictReader(handle)
        ]  # fmt: skip


def rqc_rows(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and method: convergence epoch, time to it, total time and RQC (``sslzoo.metrics.rqc``)."""
    from sslzoo.metrics.rqc import rqc_from_histories

    rows = []
    for dataset in sorted({h["dataset"] for h in history}):
        curves: dict[str, tuple[list[float], list[float]]] = {}
        for method in dict.fromkeys(h["method"] for h in history if h["dataset"] == dataset):
            points = sorted((h for h in history if (h["dataset"], h["method"]) == (dataset, method)),
                            key=lambda h: h["epoch"])  # fmt: skip
            seconds = [0.0 if math.isnan(h["seconds"]) else h["seconds"] for h in points]
            curves[method] = ([h["loss"] for h in points], seconds)
        usable = {m: c for m, c in curves.items() if sum(c[1][:1]) > 0 or sum(c[1]) > 0}
        if not usable:
            continue
        entries = rqc_from_histories(usable)
        for method, entry in entries.items():
            point = entry.point
            rows.append({"dataset": dataset, "method": method, "rqc": entry.rqc, "epochs": point.epochs,
                         "n_epochs": len(curves[method][0]), "converged": point.converged,
                         "time_s": point.time_s, "total_time_s": point.total_time_s})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------ tables
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
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


def _methods_in_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    from sslzoo.study.config import KNOWN_METHODS

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
    for method in _methods_in_order(subset):
        cells = [method]
        for rate in rates:
            values = curves[(dataset, frozen, method)].get(rate, [])
            partial = 0 < len(values) < _max_seeds(rows)
            cells.append(_pm(*_mean_std(values), n=len(values)) + (f" (n={len(values)})" if partial else ""))
        body.append(cells)
    return markdown_table(["method"] + [f"{format_rate(100 * r)} %" for r in rates], body)


def _max_seeds(rows: Sequence[Mapping[str, Any]]) -> int:
    return len({r["seed"] for r in rows}) or 1


def table_iqc(iqc: Sequence[Mapping[str, Any]], dataset: str, frozen_flags: Sequence[bool]) -> str:
    """Table IV style: IQC mean ± std (n seeds) and p versus random per method and frozen flag."""
    entries = {(e["method"], e["frozen"]): e for e in iqc if e["dataset"] == dataset}
    methods = _methods_in_order([{"method": m} for m, _ in entries])
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
    for method in _methods_in_order(rows):
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


# ------------------------------------------------------------------------------------------------ figures
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
    for k, method in enumerate(_methods_in_order(subset)):
        points = curves[(dataset, frozen, method)]
        rates = np.array(sorted(points))
        stats = np.array([_mean_std(points[r]) for r in rates])
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


# ------------------------------------------------------------------------------------------------ report
def machine_description() -> str:
    """CPU / GPU and library versions of the machine writing the report."""
    import os

    parts = [f"{platform.system()} {platform.machine()}", f"{os.cpu_count()} CPU cores visible",
             f"Python {platform.python_version()}"]  # fmt: skip
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        parts += [f"torch {torch.__version__}", gpu]
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return ", ".join(parts)


def _config_section(config: Any) -> str:
    if config is None:
        return "_No study.json in this folder: configuration unknown._"
    ft, pt = config.finetune, config.pretrain
    lines = [
        f"- study `{config.name}`: {config.description.strip() or '(no description)'}",
        f"- backbone `{config.backbone}`; methods {', '.join(config.methods)}",
        "- datasets: "
        + "; ".join(
            f"`{n}` ({s.kind or 'auto'}, {s.task or 'own task'})" for n, s in config.datasets.items()
        ),  # fmt: skip
        f"- annotation rates {', '.join(format_rate(r) for r in config.rates)}; frozen {config.frozen}; "
        f"seeds {config.seeds}",
        f"- pretraining: input {pt.input_size}px, batch {pt.batch_size}, lr {pt.lr}, "
        f"max_epochs {pt.max_epochs}, max_steps {pt.max_steps}, max_tiles {pt.max_tiles}",
        f"- fine-tuning: epochs {ft.epochs}, max_steps {ft.max_steps}, batch {ft.batch_size}, lr {ft.lr}, "
        f"tiles {ft.tile_size}px, tiles_per_image {ft.tiles_per_image}, val_fraction {ft.val_fraction}, "
        f"patience {ft.patience}",
        f"- IQC interval [{config.iqc_lower}, {config.iqc_upper}]",
    ]
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    title: str | None = None,
    work_dir: str | Path | None = None,
    data_root: str | Path | None = None,
) -> Path:
    """Write ``out_dir/REPORT.md``, ``out_dir/iqc.csv`` and ``out_dir/figures/*.png`` from ``runs.csv``.

    ``work_dir`` (the study's ``--work``; default ``out_dir`` when it holds ``pretrain/`` or ``runs/``) adds the
    representation figures and ``cka.csv`` (:mod:`sslzoo.study.figures`), ``data_root`` relocates the datasets.
    """
    from sslzoo.study.figures import representation_figures
    from sslzoo.study.grid import build_grid
    from sslzoo.study.results import write_iqc
    from sslzoo.study.runner import load_stored_config

    out = Path(out_dir)
    rows = read_runs(out)
    if not rows:
        raise DataError(f"{out}: no runs.csv rows yet; run 'sslzoo study run CONFIG --out {out}' first")
    config = load_stored_config(out)
    lower, upper = (config.iqc_lower, config.iqc_upper) if config else (0.01, 0.64)
    iqc = write_iqc(out, lower, upper)
    references = {e["dataset"]: e["reference"] for e in iqc}
    datasets = sorted({r["dataset"] for r in rows})
    frozen_flags = sorted({r["frozen"] for r in rows})

    sections = [f"# {title or 'Study ' + (config.name if config else out.name)}", ""]
    n_grid = len(build_grid(config)) if config else None
    progress = f"{len(rows)} of {n_grid} runs finished" if n_grid else f"{len(rows)} runs"
    sections += ["## Configuration", "", _config_section(config), "", f"Progress: **{progress}**.", ""]
    sections += [f"Report written on: {machine_description()}.", ""]

    times = [r["run_seconds"] for r in rows if math.isfinite(r.get("run_seconds", math.nan))]
    pre = {(r["method"], r["dataset"]): r["pretrain_seconds"] for r in rows
           if r.get("pretrain_seconds") is not None and math.isfinite(r["pretrain_seconds"])}  # fmt: skip
    epoch_sums: dict[tuple[str, str], float] = defaultdict(float)
    for h in read_pretrain_history(out):  # encoders whose fine-tuning runs have not finished yet
        epoch_sums[(h["method"], h["dataset"])] += h["seconds"] if math.isfinite(h["seconds"]) else 0.0
    for key, seconds in epoch_sums.items():
        pre.setdefault(key, seconds)
    sections += ["## Wall time", ""]
    if times:
        sections.append(
            f"Fine-tuning runs: {len(times)}, median {np.median(times):.0f} s, total {sum(times) / 60:.1f} min "
            f"(training + watershed tuning + evaluation); pretraining: "
            + (", ".join(f"{m}/{d} {s:.0f} s" for (m, d), s in sorted(pre.items())) or "none")
            + f"; study total (sum) {(sum(times) + sum(pre.values())) / 60:.1f} min."
        )
        stamps = sorted(r["finished_at"] for r in rows if r.get("finished_at"))
        if stamps:
            sections.append(f"First run finished {stamps[0]}, last {stamps[-1]} (UTC).")
        sections += ["", table_wall_time(rows), ""]

    figures = out / FIGURES_DIR
    for dataset in datasets:
        metric = next((r["metric"] for r in rows if r["dataset"] == dataset and r.get("metric")), "score")
        sections += [f"## {dataset}: {metric} per annotation rate (Table I style)", ""]
        for frozen in frozen_flags:
            state = "frozen" if frozen else "fine-tuned"
            name = f"curves_{dataset}_{'frozen' if frozen else 'tuned'}.png"
            plot_curves(rows, dataset, frozen, figures / name, lower, upper, references.get(dataset))
            sections += [
                f"### Encoder {state}",
                "",
                f"Mean ± std over seeds of the per-image mean {metric}.",
                "",
                table_scores(rows, dataset, frozen),
                "",
                f"![{dataset} {state}]({FIGURES_DIR}/{name})",
                "",
            ]
        sections += [f"## {dataset}: IQC (Table IV style)", ""]
        if any(e["dataset"] == dataset for e in iqc):
            ref = references[dataset]
            sections += [
                f"IQC over rates [{lower}, {upper}] of {metric}, relative to random init fine-tuned at 100 % "
                f"(reference {ref:.4f}, mean over seeds); p: one-tailed two-sample t-test of the per-seed IQCs "
                "against random init with the same encoder state (H0: method <= random).",
                "",
                table_iqc(iqc, dataset, frozen_flags),
                "",
            ]
        else:
            sections += ["_No complete curve with its reference run yet._", ""]

    rqc = rqc_rows(read_pretrain_history(out))
    sections += ["## Pretext convergence (RQC)", ""]
    if rqc:
        sections += [
            "RQC = t / t* (t*: fastest method); t = wall time until the 5-epoch moving median of the pretext loss "
            "comes within 5 % of its total drop and stays there 5 epochs. Pretext losses differ per method, so "
            "RQC compares times, not loss values.",
            "",
            table_rqc(rqc),
            "",
        ]
    else:
        sections += ["_No pretraining loss histories recorded (pretrain.csv)._", ""]
    if work_dir is None and any((out / name).is_dir() for name in ("pretrain", "runs")):
        work_dir = out  # the runner's default --work
    sections += representation_figures(out, work_dir, rows, _methods_in_order(rows), config, data_root)
    notes = out / NOTES_FILE
    if notes.is_file():
        sections += ["## Discussion", "", notes.read_text().strip(), ""]
    report = out / REPORT_FILE
    report.write_text("\n".join(sections))
    return report
