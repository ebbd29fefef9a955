"""``write_report(out_dir)``: ``REPORT.md`` + figures from a study folder's ``runs.csv`` (and ``pretrain.csv``).

The report, section by section (each a function below, in this order):

- configuration and progress (``study.json``), and the machine writing the report;
- wall time per run and per study (:func:`sslzoo.study.tables.table_wall_time`);
- per dataset, *Table I style* scores per annotation rate with their curve figures
  (:mod:`sslzoo.study.tables`, :mod:`sslzoo.study.curves`) and *Table IV style* IQC with the one-tailed t-test p
  against random init — recomputed from ``runs.csv`` (:func:`sslzoo.study.results.iqc_table`);
- *RQC*: relative convergence time of pretext training (:mod:`sslzoo.metrics.rqc`) from ``pretrain.csv``
  (:mod:`sslzoo.study.history`);
- with the study's work folder, ``figures/cka_<dataset>.png`` (Table III), ``neighbours_<dataset>.png`` (Fig. 4,
  NQC) and ``gradcam_<dataset>.png`` (Fig. 5) from :mod:`sslzoo.study.figures`;
- ``notes.md`` in the study folder, when present, copied under "Discussion".
"""

from __future__ import annotations

import math
import platform
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslzoo.errors import DataError, SslzooError
from sslzoo.study.config import StudyConfig
from sslzoo.study.curves import plot_curves
from sslzoo.study.figures import representation_figures
from sslzoo.study.folders import load_stored_config
from sslzoo.study.grid import build_grid, format_rate
from sslzoo.study.history import read_pretrain_history, rqc_rows
from sslzoo.study.results import read_runs, write_iqc
from sslzoo.study.tables import methods_in_order, table_iqc, table_rqc, table_rqc_mean, table_scores, table_wall_time

REPORT_FILE = "REPORT.md"
NOTES_FILE = "notes.md"
FIGURES_DIR = "figures"
#: IQC interval of a study folder without study.json
DEFAULT_IQC_INTERVAL = (0.01, 0.64)


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
    out = Path(out_dir)
    rows = finished_runs(out)
    config = load_stored_config(out)
    lower, upper = (config.iqc_lower, config.iqc_upper) if config else DEFAULT_IQC_INTERVAL
    iqc = write_iqc(out, lower, upper)
    sections = [
        *header_section(out, title, config, rows, data_root),
        *wall_time_section(out, rows),
        *dataset_sections(out, rows, iqc, lower, upper),
        *rqc_section(out),
        *representation_figures(
            out, default_work_dir(out, work_dir), rows, methods_in_order(rows), config, data_root
        ),  # fmt: skip
        *discussion_section(out),
    ]
    report = out / REPORT_FILE
    report.write_text("\n".join(sections))
    return report


# ------------------------------------------------------------------------------------------------ inputs
def finished_runs(out: Path) -> list[dict[str, Any]]:
    """The ``runs.csv`` rows of the study folder; DataError (telling how to start) when there are none yet."""
    rows = read_runs(out)
    if not rows:
        raise DataError(f"{out}: no runs.csv rows yet; run 'sslzoo study run CONFIG --out {out}' first")
    return rows


def default_work_dir(out: Path, work_dir: str | Path | None) -> str | Path | None:
    """``work_dir`` when given, else ``out`` when it holds ``pretrain/`` or ``runs/`` (the runner's default
    ``--work``), else None (no representation figures)."""
    if work_dir is None and any((out / name).is_dir() for name in ("pretrain", "runs")):
        return out
    return work_dir


# ------------------------------------------------------------------------------------------------ sections
def header_section(
    out: Path, title: str | None, config: StudyConfig | None, rows: Sequence[Any], data_root: str | Path | None = None
) -> list[str]:
    """Title, the configuration (:func:`config_section`, :func:`pretraining_images_section`), progress (finished
    runs of the grid) and the machine."""
    sections = [f"# {title or 'Study ' + (config.name if config else out.name)}", ""]
    n_grid = len(build_grid(config)) if config else None
    progress = f"{len(rows)} of {n_grid} runs finished" if n_grid else f"{len(rows)} runs"
    sections += ["## Configuration", "", config_section(config), *pretraining_images_section(config, data_root), "",
                 f"Progress: **{progress}**.", ""]  # fmt: skip
    sections += [f"Report written on: {machine_description()}.", ""]
    return sections


def pretrain_seconds_by_encoder(out: Path, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    """``{(method, dataset): pretraining seconds}`` from the runs' ``pretrain_seconds``, else (encoders whose
    fine-tuning runs have not finished yet) the sum of the epoch times in ``pretrain.csv``."""
    pre = {(r["method"], r["dataset"]): r["pretrain_seconds"] for r in rows
           if r.get("pretrain_seconds") is not None and math.isfinite(r["pretrain_seconds"])}  # fmt: skip
    epoch_sums: dict[tuple[str, str], float] = defaultdict(float)
    for h in read_pretrain_history(out):
        epoch_sums[(h["method"], h["dataset"])] += h["seconds"] if math.isfinite(h["seconds"]) else 0.0
    for key, seconds in epoch_sums.items():
        pre.setdefault(key, seconds)
    return pre


def wall_time_section(out: Path, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Fine-tuning and pretraining wall time of the study, first / last finish and the per-method table."""
    times = [r["run_seconds"] for r in rows if math.isfinite(r.get("run_seconds", math.nan))]
    pre = pretrain_seconds_by_encoder(out, rows)
    sections = ["## Wall time", ""]
    if times:
        sections.append(
            f"Fine-tuning runs: {len(times)}, median {np.median(times):.0f} s, total {sum(times) / 60:.1f} min "
            f"(training + evaluation, + watershed tuning when tuned); pretraining: "
            + (", ".join(f"{m}/{d} {s:.0f} s" for (m, d), s in sorted(pre.items())) or "none")
            + f"; study total (sum) {(sum(times) + sum(pre.values())) / 60:.1f} min."
        )
        stamps = sorted(r["finished_at"] for r in rows if r.get("finished_at"))
        if stamps:
            sections.append(f"First run finished {stamps[0]}, last {stamps[-1]} (UTC).")
        sections += ["", table_wall_time(rows), ""]
    return sections


def dataset_sections(
    out: Path, rows: Sequence[Mapping[str, Any]], iqc: Sequence[Mapping[str, Any]], lower: float, upper: float
) -> list[str]:
    """Per dataset (sorted): :func:`scores_section` then :func:`iqc_section`."""
    references = {e["dataset"]: e["reference"] for e in iqc}
    frozen_flags = sorted({r["frozen"] for r in rows})
    sections: list[str] = []
    for dataset in sorted({r["dataset"] for r in rows}):
        metric = next((r["metric"] for r in rows if r["dataset"] == dataset and r.get("metric")), "score")
        sections += scores_section(out, rows, dataset, metric, frozen_flags, lower, upper, references.get(dataset))
        sections += iqc_section(iqc, dataset, metric, frozen_flags, lower, upper)
    return sections


def scores_section(
    out: Path,
    rows: Sequence[Mapping[str, Any]],
    dataset: str,
    metric: str,
    frozen_flags: Sequence[bool],
    lower: float,
    upper: float,
    reference: float | None,
) -> list[str]:
    """Table I style: per encoder state the score table and its curve figure (written to ``out/figures``)."""
    sections = [f"## {dataset}: {metric} per annotation rate (Table I style)", ""]
    for frozen in frozen_flags:
        state = "frozen" if frozen else "fine-tuned"
        name = f"curves_{dataset}_{'frozen' if frozen else 'tuned'}.png"
        plot_curves(rows, dataset, frozen, out / FIGURES_DIR / name, lower, upper, reference)
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
    return sections


def iqc_section(
    iqc: Sequence[Mapping[str, Any]],
    dataset: str,
    metric: str,
    frozen_flags: Sequence[bool],
    lower: float,
    upper: float,
) -> list[str]:
    """Table IV style: IQC and p per method and encoder state (a note while no curve is complete)."""
    sections = [f"## {dataset}: IQC (Table IV style)", ""]
    entries = [e for e in iqc if e["dataset"] == dataset]
    if not entries:
        return sections + ["_No complete curve with its reference run yet._", ""]
    ref = entries[-1]["reference"]
    return sections + [
        f"IQC over rates [{lower}, {upper}] of {metric}, relative to random init fine-tuned at 100 % "
        f"(reference {ref:.4f}, mean over seeds); p: one-tailed two-sample t-test of the per-seed IQCs "
        "against random init with the same encoder state (H0: method <= random).",
        "",
        table_iqc(iqc, dataset, frozen_flags),
        "",
    ]


def rqc_section(out: Path) -> list[str]:
    """RQC of pretext training per dataset and method, from ``pretrain.csv`` (a note when nothing is recorded)."""
    rqc = rqc_rows(read_pretrain_history(out))
    sections = ["## Pretext convergence (RQC)", ""]
    if not rqc:
        return sections + ["_No pretraining loss histories recorded (pretrain.csv)._", ""]
    return sections + [
        "RQC = t / t* (t*: fastest method on that dataset); t = wall time until the 5-epoch moving median of the "
        "pretext loss comes within 5 % of its total drop and stays there 5 epochs. Pretext losses differ per "
        "method, so RQC compares times, not loss values. Table II reports one RQC per method, the mean over the "
        "datasets (`mean_rqc_over_datasets`):",
        "",
        table_rqc_mean(rqc),
        "",
        "Per dataset:",
        "",
        table_rqc(rqc),
        "",
    ]


def discussion_section(out: Path) -> list[str]:
    """``out/notes.md`` under "Discussion", when present."""
    notes = out / NOTES_FILE
    if not notes.is_file():
        return []
    return ["## Discussion", "", notes.read_text().strip(), ""]


# ------------------------------------------------------------------------------------------------ configuration
def watershed_description(mode: str) -> str:
    """The instance post-processing of the study's runs, in words (with the fixed setting's parameters)."""
    if mode != "fixed":
        return "watershed tuned per run on its training tiles (AJI+); post-processing differs between runs"
    from sslzoo.models.postprocess import FIXED_WATERSHED as w

    lo, hi = w.area_median_factors or (0.0, math.inf)
    return (f"the authors' fixed watershed for every method and run (sigma {w.sigma:g}, foreground "
            f"{w.foreground_threshold:g}, seeds {w.seed_threshold:g}, hole filling {'on' if w.fill_holes else 'off'},"
            f" area {lo:g}-{hi:g} x median)")  # fmt: skip


def scored_description(ft: Any) -> str:
    """Which images the runs are scored on (``eval_split`` / ``eval_images``) and the inference tiling."""
    split = f"split {ft.eval_split!r}" if ft.eval_split else "the test split, else val, else a fixed 20 % hold-out"
    subset = f"; at most {ft.eval_images} of them, evenly spread" if ft.eval_images else ""
    return f"{split}{subset}; whole images, {ft.tile_size} px tiles overlapping by {ft.tile_overlap} px"


def pretraining_images_section(config: StudyConfig | None, data_root: str | Path | None = None) -> list[str]:
    """Per dataset with a pretext method: which images pretraining used (counts per split) and which it left
    out (the scored split), beside the authors' choice (training split only; docs/fidelity.md)."""
    if config is None or not config.pretext_methods:
        return []
    return [f"- pretraining images of `{name}`: {pretraining_images_text(config, name, data_root)}"
            for name in config.datasets]  # fmt: skip


def pretraining_images_text(config: StudyConfig, dataset: str, data_root: str | Path | None = None) -> str:
    """One dataset's line of :func:`pretraining_images_section` (from the dataset folder when it is there)."""
    from collections import Counter

    from sslzoo.data.datasets import open_dataset
    from sslzoo.downstream.data import split_train_eval
    from sslzoo.study.runner import pretrain_images

    authors = "the authors pretrained on the training split only"
    spec = config.datasets[dataset]
    path = Path(data_root) / spec.path.name if data_root is not None else spec.path
    if not path.is_dir():
        return (f"every image of the dataset except the scored ones (dataset folder {path} not found here, so no "
                f"counts); {authors}")  # fmt: skip
    if data_root is not None:
        config = config.model_copy(deep=True)
        config.datasets[dataset].path = path
    try:
        index = open_dataset(path, spec.kind)
        images = pretrain_images(config, dataset)
        scoring = split_train_eval(index, config.finetune.eval_split)
    except SslzooError as exc:
        return f"every image of the dataset except the scored ones (no counts: {type(exc).__name__}: {exc}); {authors}"
    split_of = {Path(s.image).resolve(): s.split for s in index.samples}
    used = Counter(split_of.get(Path(p).resolve(), "other") for p in images)
    scored = Counter(s.split for s in scoring.eval)
    train_split = next((s for s in ("train", "training") if s in split_of.values()), None)
    extra = sorted(set(used) - {train_split})
    counts = ", ".join(f"{split} {n}" for split, n in sorted(used.items()))
    left = ", ".join(f"{split} {n}" for split, n in sorted(scored.items()))
    text = f"{sum(used.values())} images ({counts}); left out: the {sum(scored.values())} scored images ({left}; "
    text += f"{scoring.rule}); {authors}"
    if extra:
        what = {"unlabeled": "unlabeled (ISIC 2017: the official test images)"} if index.kind == "isic2017" else {}
        text += f"; this study also uses {', '.join(what.get(e, e) for e in extra)}"
        text += f" (`datasets.{dataset}.pretrain_skip: [{', '.join(extra)}]` pretrains as the authors)"
    elif spec.pretrain_skip:
        text += f", as this study (`pretrain_skip: [{', '.join(spec.pretrain_skip)}]`)"
    return text


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


def config_section(config: StudyConfig | None) -> str:
    """The study settings as a Markdown list (a note when the folder has no study.json)."""
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
        f"tiles {ft.tile_size}px, tiles_per_image {ft.tiles_per_image}, val_fraction {ft.val_fraction} (of each "
        f"rate subset, drawn inside it), patience {ft.patience} (lr x0.5 after {max(1, ft.patience // 2)} epochs "
        "without improvement)",
        f"- protocol: decoder widths {list(ft.decoder_channels)}; a frozen encoder's batch norm in {ft.frozen_bn} "
        f"mode; {watershed_description(ft.watershed)}",
        f"- scoring: {scored_description(ft)}",
        f"- IQC interval [{config.iqc_lower}, {config.iqc_upper}]",
    ]
    return "\n".join(lines)
