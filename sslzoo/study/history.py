"""The study's pretraining loss histories, ``pretrain.csv`` (one row per method, dataset and epoch), and the RQC
rows computed from them (:mod:`sslzoo.metrics.rqc`).

The runner records each pretrained encoder's Lightning CSV log here; the report reads it back for the RQC table
and for the pretraining wall time of encoders whose fine-tuning runs have not finished yet.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sslzoo.study.results import LOCK_FILE, locked, write_csv_atomic

PRETRAIN_HISTORY_FILE = "pretrain.csv"
PRETRAIN_HISTORY_COLUMNS = ("method", "dataset", "epoch", "loss", "seconds")


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
    """The rows of ``out_dir/pretrain.csv`` (epoch int, loss / seconds float, NaN seconds when not logged)."""
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
