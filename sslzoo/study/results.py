"""The study's tables on disk: ``runs.csv`` (one row per finished run) and ``iqc.csv`` (computed from it).

``runs.csv`` is rewritten whole under an exclusive lock (``fcntl.flock`` on the folder's hidden ``.lock``):
read, replace or add the row, write ``runs.csv.tmp``, ``fsync``, ``os.replace``. A reader therefore sees either
the old or the new file, never half a row, and several shards (processes, or machines sharing a POSIX file
system) can write to the same study folder. Rows are keyed by ``run_id``; reading keeps the last row of each id.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sslzoo.errors import DataError

RUNS_FILE = "runs.csv"
#: one advisory lock file per study folder guards every table in it
LOCK_FILE = ".lock"
IQC_FILE = "iqc.csv"
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "method", "dataset", "task", "rate", "frozen", "seed", "score", "metric",
    "aji", "aji_plus", "pq", "dice", "train_seconds", "epochs", "converged_epoch", "pretrain_seconds",
    "finished_at", "run_seconds", "n_train_tiles",
)  # fmt: skip
IQC_COLUMNS: tuple[str, ...] = (
    "method", "dataset", "frozen", "iqc_mean", "iqc_std", "p_value", "n_seeds", "metric", "reference", "iqcs",
)  # fmt: skip
_FLOAT_COLUMNS = ("rate", "score", "aji", "aji_plus", "pq", "dice", "train_seconds", "pretrain_seconds", "run_seconds")
_INT_COLUMNS = ("seed", "epochs", "converged_epoch", "n_train_tiles")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv_atomic(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` to ``path`` via a temporary file, ``fsync`` and ``os.replace`` (all or nothing)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _parse(row: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = dict(row)
    for column in _FLOAT_COLUMNS:
        if column in row:
            parsed[column] = float(row[column]) if row[column] not in ("", None) else math.nan
    for column in _INT_COLUMNS:
        if column in row:
            parsed[column] = int(float(row[column])) if row[column] not in ("", None) else None
    if "frozen" in row:
        parsed["frozen"] = str(row["frozen"]).strip().lower() in ("true", "1", "yes")
    return parsed


def read_runs(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``out_dir/runs.csv`` (typed; the last row of each ``run_id``), [] when there is none yet."""
    path = Path(out_dir) / RUNS_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "run_id" not in reader.fieldnames:
            raise DataError(f"{path}: not a study runs table (no run_id column); was it written by sslzoo study?")
        rows: dict[str, dict[str, Any]] = {}
        for raw in reader:
            if raw.get("run_id"):
                rows[raw["run_id"]] = _parse(raw)
    return list(rows.values())


def record_run(out_dir: str | Path, row: Mapping[str, Any]) -> None:
    """Add ``row`` to ``out_dir/runs.csv`` (replacing a row with the same ``run_id``), atomically and locked."""
    out = Path(out_dir)
    with locked(out / LOCK_FILE):
        rows = {r["run_id"]: r for r in read_runs(out)}
        rows[str(row["run_id"])] = dict(row)
        write_csv_atomic(out / RUNS_FILE, RUN_COLUMNS, rows.values())


# ------------------------------------------------------------------------------------------------ IQC table
def complete_curves(rows: Sequence[Mapping[str, Any]], lower: float, upper: float) -> list[Mapping[str, Any]]:
    """Rows of the (method, dataset, frozen, seed) curves that have a score at every rate of their dataset
    inside [lower, upper] (and rows at rates outside it); partial curves of an unfinished study are left out."""
    inside: dict[str, set[float]] = {}
    for row in rows:
        if lower - 1e-9 <= row["rate"] <= upper + 1e-9:
            inside.setdefault(row["dataset"], set()).add(round(row["rate"], 9))
    have: dict[tuple, set[float]] = {}
    for row in rows:
        if math.isfinite(row["score"]):
            key = (row["method"], row["dataset"], row["frozen"], row["seed"])
            have.setdefault(key, set()).add(round(row["rate"], 9))
    complete = {key for key, rates in have.items() if inside.get(key[1], set()) <= rates}
    return [r for r in rows if (r["method"], r["dataset"], r["frozen"], r["seed"]) in complete]


def iqc_table(
    rows: Sequence[Mapping[str, Any]], lower: float = 0.01, upper: float = 0.64, metric: str = "score"
) -> list[dict[str, Any]]:
    """``iqc.csv`` rows: per (method, dataset, frozen), IQC mean / std over seeds and the one-tailed t-test p
    against random init (:func:`sslzoo.metrics.iqc.iqc_summary`, reference = random, not frozen, rate 1.0).

    Only complete curves count; a dataset without its reference run yet is skipped.
    """
    from sslzoo.metrics.iqc import iqc_summary

    usable = [r for r in complete_curves(rows, lower, upper) if math.isfinite(r[metric])]
    table = []
    for dataset in sorted({r["dataset"] for r in usable}):
        subset = [r for r in usable if r["dataset"] == dataset]
        has_reference = any(r["method"] == "random" and not r["frozen"] and abs(r["rate"] - 1.0) < 1e-9 for r in subset)
        if not has_reference:
            continue
        metric_name = next((r["metric"] for r in subset if r.get("metric")), metric) if metric == "score" else metric
        for entry in iqc_summary(subset, metric, lower=lower, upper=upper):
            table.append(
                {
                    "method": entry.method,
                    "dataset": entry.dataset,
                    "frozen": entry.frozen,
                    "iqc_mean": entry.mean,
                    "iqc_std": entry.std,
                    "p_value": entry.p_value,
                    "n_seeds": len(entry.iqcs),
                    "metric": metric_name,
                    "reference": entry.reference,
                    "iqcs": " ".join(f"{v:.6g}" for v in entry.iqcs),
                }
            )
    return table


def write_iqc(out_dir: str | Path, lower: float = 0.01, upper: float = 0.64) -> list[dict[str, Any]]:
    """Recompute ``out_dir/iqc.csv`` from ``out_dir/runs.csv``; returns its rows."""
    out = Path(out_dir)
    table = iqc_table(read_runs(out), lower, upper)
    with locked(out / LOCK_FILE):
        write_csv_atomic(out / IQC_FILE, IQC_COLUMNS, table)
    return table
