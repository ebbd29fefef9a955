"""``run_study``: pretrain once per (method, dataset), fine-tune every run of the grid, record each finished run.

Folders (:mod:`sslzoo.study.folders`; ``work_dir`` holds the big files and defaults to ``out_dir``)::

    out_dir/study.json                          the study config (a rerun must use the same grid settings)
    out_dir/runs.csv, iqc.csv, pretrain.csv     the tables (sslzoo.study.results, sslzoo.study.history)
    work_dir/pretrain/<method>-<backbone>-<dataset>/   exported encoder (skipped when model.safetensors exists)
    work_dir/runs/<run_id>/                     one fine-tuning run (segmenter, result.json, checkpoints)

Resuming: a run counts as done when its row is in ``runs.csv``; everything else is (re)started, and
``finetune(resume=True)`` continues a run from its last checkpoint (or returns its stored ``result.json`` when
it had finished but its row was not written yet). Pretraining is guarded by a lock per encoder folder, so
shards that start together train each encoder once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sslzoo.errors import ConfigError
from sslzoo.study.config import BASELINE_METHODS, StudyConfig
from sslzoo.study.folders import ENCODER_WEIGHTS, RUNS_DIR, STUDY_FILE, pretrain_folder
from sslzoo.study.grid import RunSpec, build_grid, shard_grid
from sslzoo.study.history import record_pretrain_history
from sslzoo.study.results import LOCK_FILE, locked, read_runs, record_run, write_iqc

log = logging.getLogger(__name__)

#: config fields that may differ between shards / reruns of one study (paths, worker counts)
_RUNTIME_KEYS = ("description", "keep_checkpoints")

FinetuneFn = Callable[..., Any]
PretrainFn = Callable[..., Any]


@dataclass
class StudyProgress:
    """What one ``run_study`` call did: runs of its shard already done, run now, and left (on error)."""

    total: int
    skipped: int = 0
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _comparable(config: StudyConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", exclude=set(_RUNTIME_KEYS))
    for spec in data["datasets"].values():
        spec.pop("path", None)
    data["finetune"].pop("workers", None)
    data["pretrain"].pop("workers", None)
    return data


def _store_config(config: StudyConfig, out_dir: Path) -> None:
    """Write ``study.json``; refuse to mix two different studies in one folder."""
    path = out_dir / STUDY_FILE
    with locked(out_dir / LOCK_FILE):
        if path.is_file():
            stored = StudyConfig.model_validate(json.loads(path.read_text()))
            if _comparable(stored) != _comparable(config):
                raise ConfigError(
                    f"{out_dir} holds study {stored.name!r} with other settings ({path}); use another --out, "
                    "or restore the config it was started with"
                )
            return
        path.write_text(config.model_dump_json(indent=2) + "\n")


def pretrain_images(config: StudyConfig, dataset: str) -> list[Path]:
    """Unlabelled images of ``dataset`` for pretraining, WITHOUT the images the fine-tuned models are scored on
    (and without the splits in ``datasets.<name>.pretrain_skip``)."""
    from sslzoo.data.datasets import open_dataset, unlabelled_images
    from sslzoo.downstream.data import split_train_eval

    spec = config.datasets[dataset]
    index = open_dataset(spec.path, spec.kind)
    scored = {Path(s.image).resolve() for s in split_train_eval(index, config.finetune.eval_split).eval}
    images = unlabelled_images(spec.path, spec.kind, skip_splits=spec.pretrain_skip)
    return [p for p in images if Path(p).resolve() not in scored]


def pretrain_dataset(config: StudyConfig, dataset: str) -> Any:
    """Two-view tiles of :func:`pretrain_images`; ``pretrain.max_tiles`` keeps that many, evenly spread."""
    import numpy as np
    from torch.utils.data import Subset

    from sslzoo.data.pretext_dataset import TwoViewDataset
    from sslzoo.data.transforms import two_view_transform

    spec, settings = config.datasets[dataset], config.pretrain
    kind = spec.kind or "folder"
    views = TwoViewDataset(pretrain_images(config, dataset), two_view_transform(kind, settings.input_size),
                           settings.input_size, resize_to=spec.resize)  # fmt: skip
    if settings.max_tiles is not None and settings.max_tiles < len(views):
        keep = np.unique(np.linspace(0, len(views) - 1, settings.max_tiles).round().astype(int))
        return Subset(views, keep.tolist())
    return views


def _default_pretrain() -> PretrainFn:
    """:func:`sslzoo.pretext.train.pretrain` (imported when first needed: it loads Lightning)."""
    from sslzoo.pretext.train import pretrain

    return pretrain


def _default_finetune() -> FinetuneFn:
    """:func:`sslzoo.downstream.finetune.finetune` (imported when first needed: it loads Lightning)."""
    from sslzoo.downstream.finetune import finetune

    return finetune


def ensure_pretrained(
    config: StudyConfig,
    method: str,
    dataset: str,
    work_dir: str | Path,
    *,
    pretrain_fn: PretrainFn | None = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    precision: Any = None,
    progress: bool = True,
) -> Path:
    """The encoder folder of (method, dataset): pretrained now unless its ``model.safetensors`` exists."""
    folder = pretrain_folder(work_dir, method, config.backbone, dataset)
    if (folder / ENCODER_WEIGHTS).is_file():
        return folder
    with locked(folder.parent / f"{folder.name}.lock"):
        if (folder / ENCODER_WEIGHTS).is_file():  # another shard finished it while we waited
            return folder
        from sslzoo.pretext.base import PretextConfig

        train = pretrain_fn if pretrain_fn is not None else _default_pretrain()
        settings = config.pretrain
        spec = config.datasets[dataset]
        pretext = PretextConfig(
            method=method,
            backbone=config.backbone,
            dataset=spec.kind or "folder",
            input_size=settings.input_size,
            batch_size=settings.batch_size,
            lr=settings.lr,
            max_epochs=settings.max_epochs,
            max_steps=settings.max_steps,
            seed=0,
            resize_to=spec.resize,
            params=settings.params.get(method, {}),
        )
        log.info("pretraining %s on %s -> %s", method, dataset, folder)
        data = pretrain_dataset(config, dataset)
        train(
            pretext, data, folder, accelerator=accelerator, devices=devices, precision=precision,
            resume=True, workers=settings.workers, progress=progress,
        )  # fmt: skip
    return folder


def pretrain_free_encoders(config: StudyConfig, specs: list[RunSpec], work_dir: str | Path, **kwargs: Any) -> None:
    """Pretrain the encoders ``specs`` need that no other shard is training right now (non-blocking lock), so
    that shards starting together train different encoders in parallel instead of waiting for each other."""
    needed = dict.fromkeys((s.method, s.dataset) for s in specs if s.method not in BASELINE_METHODS)
    for method, dataset in needed:
        folder = pretrain_folder(work_dir, method, config.backbone, dataset)
        if (folder / ENCODER_WEIGHTS).is_file():
            continue
        lock = folder.parent / f"{folder.name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another shard trains it; the run loop waits for it when needed
            fcntl.flock(handle, fcntl.LOCK_UN)
        ensure_pretrained(config, method, dataset, work_dir, **kwargs)


def pretrain_seconds(folder: Path) -> float | None:
    """``training.fit_seconds`` of an exported encoder's ``config.json`` (None when not recorded)."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("training", {}).get("fit_seconds")
    return float(value) if value is not None else None


def run_row(spec: RunSpec, result: Any, pretrain_s: float | None, run_seconds: float) -> dict[str, Any]:
    """One ``runs.csv`` row from a ``FinetuneResult`` (duck-typed: ``score``, ``scores``, ``loss_history``, ...)."""
    from sslzoo.metrics.rqc import convergence_point

    converged_epoch = None
    if result.loss_history and all(math.isfinite(v) for v in result.loss_history):
        point = convergence_point(result.loss_history)
        converged_epoch = point.epochs if point.converged else None
    scores = dict(result.scores)
    return {
        "run_id": spec.run_id,
        "method": spec.method,
        "dataset": spec.dataset,
        "task": result.task,
        "rate": spec.rate,
        "frozen": spec.frozen,
        "seed": spec.seed,
        "score": float(result.score),
        "metric": result.metric,
        **{name: scores.get(name) for name in ("aji", "aji_plus", "pq", "dice")},
        "train_seconds": float(result.train_seconds),
        "epochs": int(result.epochs),
        "converged_epoch": converged_epoch,
        "pretrain_seconds": pretrain_s,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_seconds": run_seconds,
        "n_train_tiles": getattr(result, "n_train_tiles", None),
    }


def finetune_config(config: StudyConfig, spec: RunSpec, init: str) -> Any:
    """The ``FinetuneConfig`` of one run: the study's fine-tune settings plus the run's init/rate/frozen/seed."""
    from sslzoo.downstream.finetune import FinetuneConfig

    return FinetuneConfig(
        init=init,
        backbone=config.backbone,
        task=spec.task,
        dataset=config.datasets[spec.dataset].kind,
        rate=spec.rate,
        frozen=spec.frozen,
        seed=spec.seed,
        input_size=config.datasets[spec.dataset].resize,
        **config.finetune.model_dump(),
    )


def _finetune_resuming(finetune_fn: FinetuneFn, config: Any, data: Path, run_dir: Path, **kwargs: Any) -> Any:
    """``finetune(resume=True)``; when continuing an interrupted run's checkpoint fails (e.g. one saved mid-epoch
    by a killed process), the checkpoints are dropped and the run starts again from scratch, once."""
    from sslzoo.errors import SslzooError

    checkpoints = run_dir / "checkpoints"
    had_checkpoint = any(checkpoints.glob("*.ckpt"))
    try:
        return finetune_fn(config, data, run_dir, resume=True, **kwargs)
    except (SslzooError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not had_checkpoint:
            raise
        log.warning("%s: resuming from %s failed (%s: %s); restarting the run", run_dir.name, checkpoints,
                    type(exc).__name__, exc)  # fmt: skip
        shutil.rmtree(checkpoints, ignore_errors=True)
        return finetune_fn(config, data, run_dir, resume=True, **kwargs)


def run_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    work_dir: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    finetune_fn: FinetuneFn | None = None,
    pretrain_fn: PretrainFn | None = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    precision: Any = None,
    progress: bool = True,
    run_progress: bool = False,
) -> StudyProgress:
    """Run this shard's part of the grid, skipping runs already in ``runs.csv``; returns what was done.

    ``finetune_fn`` / ``pretrain_fn`` default to :func:`sslzoo.downstream.finetune.finetune` and
    :func:`sslzoo.pretext.train.pretrain` (tests pass fakes with the same signature). ``progress`` shows a bar
    over the runs, ``run_progress`` Lightning's bar inside each run.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    work = (Path(work_dir) if work_dir is not None else out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _store_config(config, out)
    train = finetune_fn if finetune_fn is not None else _default_finetune()
    check_dataset_folders(config)

    mine, todo = runs_to_do(config, out, shard)
    status = StudyProgress(total=len(mine), skipped=len(mine) - len(todo))
    started = time.perf_counter()
    hardware: dict[str, Any] = {"accelerator": accelerator, "devices": devices, "precision": precision,
                                "progress": run_progress}  # fmt: skip
    pretrain_free_encoders(config, todo, work, pretrain_fn=pretrain_fn, **hardware)
    histories = record_ready_histories(config, todo, out, work)
    bar = tqdm(todo, desc=f"study {config.name} shard {shard[0]}/{shard[1]}", disable=not progress, unit="run")
    for spec in bar:
        bar.set_postfix_str(spec.run_id)
        result = run_one(config, spec, out, work, train, pretrain_fn, histories, hardware)
        status.ran.append(spec.run_id)
        log.info("%s: %s = %.4f", spec.run_id, result.metric, result.score)
    status.seconds = time.perf_counter() - started
    write_iqc(out, config.iqc_lower, config.iqc_upper)
    return status


def check_dataset_folders(config: StudyConfig) -> None:
    """ConfigError naming the config field when a dataset folder of the study does not exist."""
    for dataset in config.datasets.values():
        if not dataset.path.exists():
            raise ConfigError(f"dataset folder {dataset.path} does not exist; fix datasets.<name>.path in the config")


def runs_to_do(config: StudyConfig, out: Path, shard: tuple[int, int]) -> tuple[list[RunSpec], list[RunSpec]]:
    """This shard's runs of the grid, and those of them whose row is not in ``runs.csv`` yet."""
    mine = shard_grid(build_grid(config), shard)
    done = {row["run_id"] for row in read_runs(out)}
    return mine, [spec for spec in mine if spec.run_id not in done]


def record_ready_histories(config: StudyConfig, todo: list[RunSpec], out: Path, work: Path) -> set[tuple[str, str]]:
    """Record the loss history (``pretrain.csv``) of every encoder ``todo`` needs that is already pretrained;
    returns those (method, dataset) pairs."""
    histories: set[tuple[str, str]] = set()
    for method, dataset in dict.fromkeys((s.method, s.dataset) for s in todo if s.method not in BASELINE_METHODS):
        folder = pretrain_folder(work, method, config.backbone, dataset)
        if (folder / ENCODER_WEIGHTS).is_file():
            record_pretrain_history(out, method, dataset, folder)
            histories.add((method, dataset))
    return histories


def run_one(
    config: StudyConfig,
    spec: RunSpec,
    out: Path,
    work: Path,
    finetune_fn: FinetuneFn,
    pretrain_fn: PretrainFn | None,
    histories: set[tuple[str, str]],
    hardware: dict[str, Any],
) -> Any:
    """One run of the grid: its encoder (pretrained now if needed, history recorded once into ``histories``),
    fine-tuning in ``work/runs/<run_id>``, its ``runs.csv`` row; the Lightning checkpoints are dropped unless
    ``keep_checkpoints``. Returns the ``FinetuneResult``."""
    if spec.method in BASELINE_METHODS:
        init, pretrain_s = spec.method, None
    else:
        folder = ensure_pretrained(config, spec.method, spec.dataset, work, pretrain_fn=pretrain_fn, **hardware)
        init, pretrain_s = str(folder), pretrain_seconds(folder)
        if (spec.method, spec.dataset) not in histories:
            record_pretrain_history(out, spec.method, spec.dataset, folder)
            histories.add((spec.method, spec.dataset))
    run_started = time.perf_counter()  # after any wait for another shard's pretraining
    result = _finetune_resuming(
        finetune_fn, finetune_config(config, spec, init), config.datasets[spec.dataset].path,
        work / RUNS_DIR / spec.run_id, **hardware,
    )  # fmt: skip
    record_run(out, run_row(spec, result, pretrain_s, time.perf_counter() - run_started))
    if not config.keep_checkpoints:  # the segmenter and result.json stay; Lightning checkpoints are large
        shutil.rmtree(work / RUNS_DIR / spec.run_id / "checkpoints", ignore_errors=True)
    return result
