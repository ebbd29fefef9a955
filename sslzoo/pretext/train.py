"""``pretrain(...)``: the one code path that trains (or, for baselines, just exports) a pretext encoder.

Used by ``sslzoo pretrain`` and the study runner. Output folder layout::

    out_dir/model.safetensors, config.json   the exported backbone (zoo encoder format)
    out_dir/checkpoints/last.ckpt            Lightning checkpoint (``resume=True`` continues from it)
    out_dir/logs/version_*/metrics.csv       CSV log: train/loss (+ terms) per step and epoch, time/*
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from sslzoo.errors import ConfigError, DataError
from sslzoo.pretext.base import PretextConfig
from sslzoo.pretext.registry import BASELINES, build_method

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
#: checkpoint key: the epoch a run resumed from this checkpoint starts with (its random streams are seeded for it)
NEXT_EPOCH_KEY = "sslzoo_next_epoch"
LAST_CHECKPOINT = "last.ckpt"


def guess_dataset(data: str | Path) -> str:
    """``monuseg`` / ``isic2017`` / ``dsb2018`` when the folder is named so, else ``folder``."""
    from sslzoo.data.datasets import DATASET_KINDS

    name = Path(data).resolve().name.lower()
    return name if name in DATASET_KINDS else "folder"


# ---------------------------------------------------------------------------- data
def two_view_dataset(
    data: str | Path | Dataset,
    dataset: str,
    size: int,
    skip_splits: Sequence[str] = (),
    stain: float = 0.0,
    resize_to: int | None = None,
) -> Dataset:
    """Two-view dataset over the unlabelled images of ``data`` (a folder, or a ready Dataset), minus ``skip_splits``;
    ``stain``: H&E stain jitter sigma of the MoNuSeg list (0: off)."""
    from sslzoo.data.datasets import unlabelled_images
    from sslzoo.data.pretext_dataset import TwoViewDataset
    from sslzoo.data.transforms import two_view_transform

    if isinstance(data, Dataset):
        return data
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path}: no such folder; pass --data a folder of unlabelled images")
    transform = two_view_transform(dataset, size, stain)
    images = unlabelled_images(path, dataset, skip_splits)
    if len(images) == 0:
        raise DataError(f"{path}: no images found for dataset {dataset!r}; check --data and --dataset")
    return TwoViewDataset(images, transform, size, resize_to=resize_to)


# ---------------------------------------------------------------------------- callbacks
def _timing_callback() -> Any:
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        """Logs ``time/epoch_seconds`` and ``time/elapsed_seconds`` (wall time, for RQC)."""

        def __init__(self) -> None:
            self.start = self.epoch_start = 0.0

        def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.epoch_start = time.perf_counter()

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            now = time.perf_counter()
            module.log("time/epoch_seconds", now - self.epoch_start, on_epoch=True, on_step=False)
            module.log("time/elapsed_seconds", now - self.start, on_epoch=True, on_step=False)

    return EpochTimer()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and views: ``SeedSequence([seed, epoch])`` (32 bits)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_data_streams(seed: int, epoch: int, generators: Sequence[torch.Generator], dataset: Any) -> None:
    """Seed epoch ``epoch``'s data: the loader's ``generators`` (shuffle order, worker seeds) from
    :func:`epoch_seed`, and the views per item (``TwoViewDataset.seed_views``; another dataset's transform, if it
    has ``set_random_seed``, from :func:`epoch_seed`). albumentations keeps its own generator, which global seeds
    do not reach."""
    value = epoch_seed(seed, epoch)
    for generator in generators:
        generator.manual_seed(value)
    if hasattr(dataset, "seed_views"):
        dataset.seed_views(seed, epoch)  # workers read the epoch from shared memory
    elif hasattr(transform := getattr(dataset, "transform", None), "set_random_seed"):
        cast(Any, transform).set_random_seed(value)


def _resumable_epochs_callback(path: Path, seed: int, generators: Sequence[torch.Generator], dataset: Any) -> Any:
    import pytorch_lightning as pl

    def reseed(epoch: int) -> None:
        pl.seed_everything(epoch_seed(seed, epoch), workers=True, verbose=False)  # global RNGs (torch, numpy, random)
        seed_data_streams(seed, epoch, generators, dataset)

    class ResumableEpochs(pl.Callback):
        """Epoch-end checkpoints and per-epoch random streams, so a crashed run resumes where it was.

        - ``path`` (``last.ckpt``) is written at the end of every training epoch: a crash loses at most one epoch.
          Written by hand: Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes ``last`` only after
          a top-k save (Lightning 2.6), so it never wrote one during training.
        - Every epoch draws its shuffle from :func:`epoch_seed` (seed, epoch) and each item's views from (seed,
          epoch, item) (``TwoViewDataset.seed_views``), and the checkpoint records the epoch a resumed run starts
          with. Lightning restores no random state and builds a run's first loader iterator before any epoch hook,
          so :meth:`on_load_checkpoint` reseeds for that epoch before it: a resumed run draws the batches the
          uninterrupted one would have drawn.
        """

        def __init__(self) -> None:
            self.saving_epoch_end = False

        def on_load_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict) -> None:
            if (epoch := checkpoint.get(NEXT_EPOCH_KEY)) is not None:
                reseed(int(epoch))

        def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict) -> None:
            # at an epoch end Lightning resumes with the next epoch; after fit with the epoch it counts now
            checkpoint[NEXT_EPOCH_KEY] = trainer.current_epoch + int(self.saving_epoch_end)

        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            reseed(trainer.current_epoch)

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.saving_epoch_end = True
            try:
                trainer.save_checkpoint(str(path))
            finally:
                self.saving_epoch_end = False

    return ResumableEpochs()


# ---------------------------------------------------------------------------- API
def export_baseline(config: PretextConfig, out_dir: str | Path) -> Path:
    """``random`` / ``imagenet``: nothing to train, export ``baseline_encoder(method)`` as it is."""
    from sslzoo.models.encoders import baseline_encoder, save_encoder

    encoder, enc_config = baseline_encoder(config.method, backbone=config.backbone)
    enc_config = enc_config.model_copy(
        update={"input_size": config.input_size, "training": config.model_dump(mode="json")}
    )
    return save_encoder(encoder, out_dir, enc_config)


def pretrain(
    config: PretextConfig,
    data: str | Path | Dataset | None,
    out_dir: str | Path,
    *,
    devices: int | str | Sequence[int] = "auto",
    accelerator: str = "auto",
    precision: str | int | None = None,
    strategy: str = "auto",
    resume: bool = False,
    workers: int = 2,
    progress: bool = True,
    skip_splits: Sequence[str] = (),
) -> Path:
    """Train ``config.method`` on the unlabelled images of ``data`` and export the backbone to ``out_dir``.

    Baselines (``random``, ``imagenet``) are exported without training (``data`` unused).
    Exactly one of ``config.max_epochs`` / ``config.max_steps`` bounds the run (both: whichever
    ends first). With ``resume=True`` training continues from ``out_dir/checkpoints/last.ckpt``
    when it exists (raise ``max_epochs``/``max_steps`` to train further). Returns ``out_dir``.
    """
    out = Path(out_dir)
    if config.method in BASELINES:
        return export_baseline(config, out)
    if config.max_epochs is None and config.max_steps is None:
        raise ConfigError("say how long to train: set --epochs N or --max-steps N (max_epochs / max_steps)")
    if data is None:
        raise ConfigError(f"method {config.method!r} trains on unlabelled images: pass --data FOLDER")

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    pl.seed_everything(config.seed, workers=True, verbose=False)
    dataset: Any = two_view_dataset(
        data, config.dataset, config.input_size, skip_splits, config.stain_jitter, config.resize_to
    )
    if len(dataset) < config.batch_size:
        raise ConfigError(
            f"only {len(dataset)} unlabelled images but batch size {config.batch_size}; "
            f"lower --batch-size to at most {len(dataset)} or add images"
        )
    from sslzoo.data.transforms import seed_worker_transform

    samples_per_epoch = (len(dataset) // config.batch_size) * config.batch_size  # drop_last
    config = config.model_copy(update={"samples_per_epoch": samples_per_epoch})
    method = build_method(config)  # validates method name and params before any work

    # Two generators: the loader draws its worker seed from one when it builds an iterator (before the epoch hook
    # on a run's first epoch, after it later), so the shuffle must have its own. The data is seeded for epoch 0
    # here already: with workers, the first iterator draws its order and forks before any epoch hook.
    shuffle, worker_seeds = torch.Generator(), torch.Generator()
    seed_data_streams(config.seed, 0, (shuffle, worker_seeds), dataset)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=RandomSampler(dataset, generator=shuffle),
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,  # views are seeded per item and epoch (shared memory), not per worker
        pin_memory=torch.cuda.is_available() and accelerator != "cpu",
        generator=worker_seeds,
        worker_init_fn=seed_worker_transform,
    )
    checkpoint_dir = out / CHECKPOINT_DIR
    last = checkpoint_dir / LAST_CHECKPOINT
    ckpt_path = None
    if resume:
        if last.is_file():
            ckpt_path = str(last)
        else:
            log.warning("--resume: no %s yet, starting from scratch", last)
    elif last.is_file():
        raise ConfigError(f"{out} already holds a run ({last}); pass --resume to continue it or choose another --out")

    trainer = pl.Trainer(
        max_epochs=config.max_epochs if config.max_epochs is not None else -1,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        devices=cast(Any, devices),
        accelerator=accelerator,
        precision=cast(Any, precision),
        strategy=strategy,
        default_root_dir=str(out),
        logger=CSVLogger(str(out), name="logs"),
        callbacks=[
            _timing_callback(),
            _resumable_epochs_callback(last, config.seed, (shuffle, worker_seeds), dataset),
        ],
        log_every_n_steps=1,
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(method, train_dataloaders=loader, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - started
    trainer.save_checkpoint(str(last))  # the final state (a run may end by max_steps within an epoch)
    if trainer.is_global_zero:
        method.export_encoder(
            out,
            global_step=int(trainer.global_step),
            epochs_completed=int(trainer.current_epoch),
            fit_seconds=round(seconds, 3),
            num_images=len(dataset),
        )
    return out
