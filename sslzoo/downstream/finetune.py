"""``finetune(...)``: train a U-Net on few labels, save a Segmenter, score it — one code path for the
CLI (``sslzoo finetune``) and the study grid.

Steps:

1. data (:mod:`sslzoo.downstream.data`): training tiles, validation tiles, the nested
   annotation-rate subset, and the fixed evaluation images;
2. model: ``build_unet(load_encoder(init, backbone), backbone, task, frozen, frozen_bn=..., decoder_channels=...)``
   (decoder widths 512..32 as the authors; a frozen encoder keeps batch norm in train mode unless
   ``frozen_bn="eval"``); loss = Dice loss on logits (semantic,
   ``smp.losses.DiceLoss("binary")``) or smooth-L1 on the per-object distance map (instance);
   Adam (lr 1e-3, paper), ``ReduceLROnPlateau`` (factor 0.5, patience ``max(1, patience // 2)``, min lr
   1e-5; the authors' 0.5 / 20 / 1e-5 with the default ``patience`` 40) and early stopping (``patience``
   epochs, authors 40, at most 200 epochs) on the validation loss; the weights of the best
   validation epoch are kept (the last ones without validation tiles);
3. instance only: ``watershed="fixed"`` (default) uses the authors' fixed post-processing
   (``FIXED_WATERSHED``), the same for every method; ``"tuned"`` tunes the parameters
   (``tune_watershed``, AJI+) on predictions for the TRAINING tiles of the run — never on the scored images;
4. the :class:`~sslzoo.models.segmenter.Segmenter` is saved to ``out_dir`` and run on the full
   evaluation images (tiled); ``evaluate_pairs`` scores it against the original labels.

``out_dir`` afterwards holds ``model.safetensors`` + ``config.json`` + ``segmenter.json`` (the
segmenter), ``result.json`` (:class:`FinetuneResult`), ``evaluation.json`` (per-image scores),
``metrics.csv`` (per epoch: train loss, validation loss, learning rate, seconds) and
``checkpoints/last.ckpt`` (written every ``CHECKPOINT_INTERVAL`` and after training) from which
``resume=True`` continues an interrupted run; once ``result.json`` exists the checkpoint is only
needed to train further, and callers may delete it (the study runner does). A second call with
the same configuration returns the stored result without training.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pydantic import BaseModel, Field, model_validator
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch.nn import functional as F
from torch.utils.data import DataLoader

from sslzoo.errors import ConfigError, DataError
from sslzoo.vocabulary import FrozenBN, Task, WatershedMode

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
EVALUATION_FILE = "evaluation.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
#: the primary score of each task
PRIMARY_METRIC: dict[str, str] = {"semantic": "dice", "instance": "aji_plus"}
#: ``last.ckpt`` is written at most this often during training (and once after it): a U-Net's
#: weights plus Adam's state are 4x the model size, too much to write every short epoch
CHECKPOINT_INTERVAL = datetime.timedelta(minutes=5)
#: at most this many training tiles are used to tune the watershed (evenly spread over the subset)
MAX_TUNING_TILES = 64
#: ReduceLROnPlateau of fine-tuning (authors' ds_*.yaml: factor 0.5, patience 20, min_lr 1e-5)
LR_FACTOR = 0.5
MIN_LR = 1e-5
#: config fields that do not change the result (ignored when matching a stored result.json)
_RUNTIME_FIELDS = {"workers"}


class FinetuneConfig(BaseModel):
    """One fine-tuning run (paper defaults: Adam lr 1e-3, 256x256 tiles)."""

    init: str = Field("random", description="random | imagenet | encoder folder | zoo name")
    backbone: str = "resnet50"
    task: Task | None = Field(None, description="None: the dataset's task")
    dataset: str | None = Field(None, description="dataset kind passed to open_dataset (None: detected)")
    rate: float = Field(1.0, description="annotation rate: share of the training tiles used, in (0, 1]")
    frozen: bool = False
    frozen_bn: FrozenBN = Field(
        "train", description="batch norm of a frozen encoder: train mode (authors) or eval mode (fixed statistics)"
    )
    decoder_channels: tuple[int, int, int, int, int] = Field(
        (512, 256, 128, 64, 32), description="U-Net decoder widths (authors' decoder_filters; smp: 256..16)"
    )
    seed: int = 0
    epochs: int = Field(200, description="maximum epochs (authors: 200, with early stopping)")
    max_steps: int | None = Field(None, description="when set, bounds training instead of epochs")
    batch_size: int = Field(4, description="tiles per step (authors: 4)")
    lr: float = 1e-3
    tile_size: int = 256
    inference_tile_size: int | None = Field(
        None,
        description="largest window the segmenter predicts with (its inference_tile; None: the segmenter's default, "
        "whole images up to 1024 px); the U-Net is fully convolutional, so it need not match tile_size",
    )
    tiles_per_image: int | None = Field(None, description="keep at most this many tiles per image (CPU configs)")
    input_size: int | None = Field(
        None,
        description="semantic only: squeeze every whole image to input_size x input_size (aspect not kept) for "
        "training, and at inference (the mask is resized back); None: native resolution, tiled",
    )
    val_fraction: float = Field(0.2, description="share of the labelled rate subset held out for validation")
    patience: int = Field(
        40, description="early-stopping patience in epochs (authors: 40); the learning rate halves after patience // 2"
    )
    eval_split: str | None = Field(None, description="scored split; None: test/val split or a fixed 20 % hold-out")
    eval_images: int | None = Field(
        None, description="score at most this many of the scored images, evenly spread in their order (CPU configs)"
    )
    tile_overlap: int = Field(64, description="inference on whole images: overlap of the tiles (pixels, <= tile/2)")
    watershed: WatershedMode = Field(
        "fixed", description="instance: the authors' fixed watershed setting, or tuned on the run's training tiles"
    )
    workers: int = 2

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        problems = []
        if not 0.0 < self.rate <= 1.0:
            problems.append(f"rate must lie in (0, 1] (e.g. 0.04 for 4 %), got {self.rate}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        for name in ("epochs", "batch_size", "tile_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tile_size % 32:
            problems.append(f"tile_size must be a multiple of 32 (U-Net downsamples 5 times), got {self.tile_size}")
        if self.inference_tile_size is not None and (self.inference_tile_size < 32 or self.inference_tile_size % 32):
            problems.append(f"inference_tile_size must be a multiple of 32 (>= 32), got {self.inference_tile_size}")
        if self.input_size is not None and (self.input_size < 32 or self.input_size % 32):
            problems.append(f"input_size must be a multiple of 32 (>= 32), got {self.input_size}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if self.eval_images is not None and self.eval_images < 1:
            problems.append(f"eval_images must be >= 1, got {self.eval_images}")
        if self.tile_overlap < 0:
            problems.append(f"tile_overlap must be >= 0, got {self.tile_overlap}")
        if self.tiles_per_image is not None and self.tiles_per_image < 1:
            problems.append(f"tiles_per_image must be >= 1, got {self.tiles_per_image}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.patience < 1:
            problems.append(f"patience must be >= 1, got {self.patience}")
        if self.workers < 0:
            problems.append(f"workers must be >= 0, got {self.workers}")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


class FinetuneResult(BaseModel):
    """``result.json``: the scores and training record of one run."""

    out_dir: Path
    task: Task
    metric: str = Field(description="primary metric: dice (semantic) or aji_plus (instance)")
    score: float = Field(description="mean over the evaluation images of the primary metric")
    scores: dict[str, float] = Field(description="mean of the per-image scores (EvaluationResult.mean)")
    pooled: dict[str, float]
    n_train_tiles: int
    n_eval_images: int
    epochs: int = Field(description="epochs trained")
    train_seconds: float
    epoch_seconds: list[float]
    loss_history: list[float] = Field(description="per-epoch mean training loss")
    val_history: list[float] = Field(description="per-epoch validation loss (empty without validation tiles)")
    config: FinetuneConfig


# ---------------------------------------------------------------------------- Lightning parts
class SegmentationModule(pl.LightningModule):
    """U-Net + loss: Dice on logits (semantic) or smooth-L1 on the distance map (instance)."""

    def __init__(self, model: torch.nn.Module, task: Task, lr: float, patience: int, monitor: str) -> None:
        super().__init__()
        self.model, self.task, self.lr, self.patience, self.monitor = model, task, lr, patience, monitor
        if task == "semantic":
            import segmentation_models_pytorch as smp

            self.dice_loss = smp.losses.DiceLoss(mode="binary", from_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Dice loss of ``sigmoid(output)`` vs the 0/1 mask, or smooth-L1 of output vs distance target."""
        if self.task == "semantic":
            return self.dice_loss(output, target)
        return F.smooth_l1_loss(output, target)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        loss = self.loss(self(images), targets)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        loss = self.loss(self(images), targets)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=LR_FACTOR, patience=max(1, self.patience // 2), min_lr=MIN_LR
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}


class EpochHistory(pl.Callback):
    """Per epoch: mean training loss, validation loss, learning rate and wall seconds (training + its
    validation pass); kept in checkpoints so a resumed run continues the record."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.prior_seconds = 0.0  # fit time before the checkpoint this run resumed from
        self._start = self._fit_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def fit_seconds(self) -> float:
        """Training wall time so far, summed over interrupted and resumed parts."""
        return self.prior_seconds + (time.perf_counter() - self._fit_start if self._fit_start else 0.0)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        val = metrics.get("val/loss")
        self.rows.append(
            {
                "epoch": float(trainer.current_epoch),
                "train_loss": float(metrics["train/loss"]) if "train/loss" in metrics else math.nan,
                "val_loss": float(val) if val is not None else math.nan,
                "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
                "seconds": time.perf_counter() - self._start,
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "fit_seconds": self.fit_seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
        self.prior_seconds = float(state_dict.get("fit_seconds", 0.0))


class BestWeights(pl.Callback):
    """Keeps (on the CPU, and in checkpoints) the model weights of the epoch with the lowest ``monitor``.

    Cheaper than a second checkpoint file per epoch: only the U-Net's tensors, no optimiser state.
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best_score = math.inf
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) >= self.best_score:
            return
        self.best_score, self.best_epoch = float(value), int(trainer.current_epoch)
        model = cast(torch.nn.Module, module.model)
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "state": self.state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score", math.inf)
        self.best_epoch = state_dict.get("best_epoch", -1)
        self.state = state_dict.get("state")


# ---------------------------------------------------------------------------- helpers
def _matches(stored: FinetuneConfig, config: FinetuneConfig) -> bool:
    return stored.model_dump(exclude=_RUNTIME_FIELDS) == config.model_dump(exclude=_RUNTIME_FIELDS)


def load_result(out_dir: str | Path) -> FinetuneResult | None:
    """The stored ``result.json`` of ``out_dir`` (None when there is none)."""
    path = Path(out_dir) / RESULT_FILE
    if not path.is_file():
        return None
    return FinetuneResult.model_validate(json.loads(path.read_text()))


def write_metrics_csv(path: Path, rows: Sequence[dict[str, float]]) -> None:
    """``epoch,train_loss,val_loss,lr,seconds`` per epoch (val_loss empty without validation tiles)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_loss", "lr", "seconds"])
        for row in rows:
            writer.writerow(
                [int(row["epoch"])]
                + ["" if math.isnan(row[k]) else f"{row[k]:.6g}" for k in ("train_loss", "val_loss", "lr", "seconds")]
            )


def tune_instance_postprocessing(segmenter: Any, tiles: Any, max_tiles: int = MAX_TUNING_TILES) -> tuple[Any, float]:
    """Watershed parameters maximising mean AJI+ on (at most ``max_tiles``) TRAINING tiles."""
    from sslzoo.downstream.watershed import tune_watershed
    from sslzoo.metrics.segmentation import aji_plus

    picks = np.unique(np.linspace(0, len(tiles) - 1, min(len(tiles), max_tiles)).round().astype(int))
    distances, labels = [], []
    for i in picks:
        image, gt = tiles.ground_truth(int(i))
        distances.append(segmenter.predict_map(np.ascontiguousarray(image)))
        labels.append(gt)
    return tune_watershed(distances, labels, aji_plus)


def evaluate_segmenter(segmenter: Any, index: Any, samples: Sequence[Any], progress: bool = False) -> Any:
    """``evaluate_pairs`` of ``segmenter.predict`` on full images vs their original labels."""
    from tqdm.auto import tqdm

    from sslzoo.metrics.evaluate import evaluate_pairs

    def pairs():
        for sample in tqdm(samples, desc="evaluating", disable=not progress, leave=False):
            yield sample.id, segmenter.predict(index.read_image(sample)), index.read_mask(sample)

    return evaluate_pairs(pairs(), segmenter.config.task)


def _loader(dataset: Any, batch_size: int, shuffle: bool, workers: int, seed: int, pin: bool) -> DataLoader:
    from sslzoo.data.transforms import seed_worker_transform

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(dataset) > batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=seed_worker_transform,
    )


# ---------------------------------------------------------------------------- API
def finetune(
    config: FinetuneConfig,
    data: str | Path,
    out_dir: str | Path,
    *,
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = "auto",
    precision: str | int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``config.init`` on the labelled images at ``data``; save and score the segmenter in ``out_dir``.

    Returns the stored result without training when ``out_dir/result.json`` holds one for the same
    configuration (``workers`` ignored). ``resume=True`` continues from ``out_dir/checkpoints/last.ckpt``.
    """
    from sslzoo.data.datasets import open_dataset

    config = FinetuneConfig.model_validate(config.model_dump())  # re-check copies made with model_copy
    out = Path(out_dir)
    index = open_dataset(data, config.dataset)
    config, task = _resolve_task(config, index)
    stored = _stored_result(out, config)
    if stored is not None:
        return stored
    ckpt_path = _resume_checkpoint(out, resume)

    model, encoder_config, prepared = _model_and_data(config, index, task, progress)
    train_loader, val_loader = _loaders(config, prepared, encoder_config.mean, encoder_config.std, accelerator)
    monitor = "val/loss" if val_loader is not None else "train/loss"
    module = SegmentationModule(model, task, config.lr, config.patience, monitor)
    run = _trainer(config, out, monitor, val_loader is not None, accelerator, devices, precision, progress)
    if ckpt_path is not None:
        _check_checkpoint_fits(Path(ckpt_path), module)
    _fit(run, module, train_loader, val_loader, config, ckpt_path)
    train_seconds = run.history.fit_seconds()
    _keep_final_weights(run, module, out / CHECKPOINT_DIR / LAST_CHECKPOINT)

    segmenter = _segmenter(config, module, encoder_config, index, prepared, run, train_seconds)
    if task == "instance":
        _set_watershed(segmenter, prepared, config.watershed)
    evaluation = evaluate_segmenter(segmenter, index, prepared.split.eval, progress)
    segmenter.config.metrics = dict(evaluation.mean)
    result = _result(out, config, task, evaluation, len(prepared.train), run.history.rows, train_seconds)
    if run.trainer.is_global_zero:
        _save_outputs(out, segmenter, run.history.rows, evaluation, result)
    return result


def _resolve_task(config: FinetuneConfig, index: Any) -> tuple[FinetuneConfig, Task]:
    """The task (requested, else the dataset's), checked against the masks and ``input_size``; the config with it."""
    task: Task | None = config.task or index.task
    if index.task is None or task is None:
        from sslzoo.downstream.data import split_train_eval

        split_train_eval(index)  # raises the "no masks" DataError
        raise DataError(f"{index.root}: no masks to fine-tune on")  # not reached: split_train_eval raised
    if config.task is not None and index.task is not None and config.task != index.task:
        raise ConfigError(
            f"{index.root}: holds {index.task} masks but task {config.task!r} was requested; "
            f"drop --task or pass --task {index.task}"
        )
    if config.input_size is not None and task != "semantic":
        raise ConfigError(
            f"input_size (whole-image resizing) is for semantic segmentation only; {task} models work at the "
            "images' native resolution (object sizes and distances are in pixels): drop --input-size"
        )
    return config.model_copy(update={"task": task}), task


def _stored_result(out: Path, config: FinetuneConfig) -> FinetuneResult | None:
    """The ``result.json`` of ``out`` when it was made with ``config``; ConfigError when with another one."""
    stored = load_result(out)
    if stored is None:
        return None
    if _matches(stored.config, config):
        log.info("%s: result.json matches this configuration; not training again", out)
        return stored.model_copy(update={"out_dir": out})
    raise ConfigError(
        f"{out} already holds a fine-tuning result for another configuration; choose another --out "
        "(or delete that folder to train again)"
    )


def _resume_checkpoint(out: Path, resume: bool) -> str | None:
    """``out/checkpoints/last.ckpt`` to continue from (None: start fresh); ConfigError when one exists without
    ``resume``."""
    last = out / CHECKPOINT_DIR / LAST_CHECKPOINT
    if not last.is_file():
        return None
    if not resume:
        raise ConfigError(f"{out} holds an unfinished run ({last}); pass --resume to continue it or another --out")
    return str(last)


def _check_checkpoint_fits(ckpt: Path, module: torch.nn.Module) -> None:
    """ConfigError when the unfinished run's checkpoint holds another architecture than ``module`` (e.g. made by an
    older sslzoo with other decoder widths), instead of a wall of ``size mismatch`` lines from ``load_state_dict``."""
    stored = torch.load(ckpt, map_location="cpu", weights_only=False).get("state_dict", {})  # our own file
    current = module.state_dict()
    differ = [
        f"{key} {tuple(stored[key].shape)} vs {tuple(value.shape)}"
        for key, value in current.items()
        if key in stored and tuple(stored[key].shape) != tuple(value.shape)
    ]
    missing = sorted(set(current) ^ set(stored))
    if differ or missing:
        detail = "; ".join(differ[:3]) or f"parameters {', '.join(missing[:3])} on one side only"
        raise ConfigError(
            f"{ckpt.parent.parent} holds an unfinished run of another model architecture ({detail}); it cannot be "
            f"resumed: delete {ckpt.parent} to train this run from the start"
        )


def _model_and_data(config: FinetuneConfig, index: Any, task: Task, progress: bool) -> tuple[Any, Any, Any]:
    """Seeded (``seed_everything(seed)``): the U-Net with its encoder config, then the tiles (``prepare_data``)."""
    from sslzoo.downstream.data import prepare_data
    from sslzoo.models.unet import build_unet

    pl.seed_everything(config.seed, workers=True, verbose=False)
    from sslzoo.hub.resolve import load_encoder

    encoder, encoder_config = load_encoder(config.init, config.backbone)
    model = build_unet(
        encoder,
        encoder_config.backbone,
        task,
        config.frozen,
        source=config.init,
        frozen_bn=config.frozen_bn,
        decoder_channels=config.decoder_channels,
    )
    prepared = prepare_data(
        index, task, config.rate, config.seed, config.val_fraction, config.tile_size,
        config.tiles_per_image, config.eval_split, progress, config.input_size,
    )  # fmt: skip
    return model, encoder_config, limit_scored(prepared, config.eval_images)


def limit_scored(prepared: Any, eval_images: int | None) -> Any:
    """``prepared`` with at most ``eval_images`` of its scored images (evenly spread, in order; the rest are not
    scored, nor trained on); unchanged when ``eval_images`` is None or not smaller than the scored set."""
    import dataclasses

    scored = prepared.split.eval
    if eval_images is None or eval_images >= len(scored):
        return prepared
    keep = np.unique(np.linspace(0, len(scored) - 1, eval_images).round().astype(int))
    rule = f"{prepared.split.rule}; {len(keep)} of its {len(scored)} images scored"
    split = dataclasses.replace(prepared.split, eval=[scored[int(k)] for k in keep], rule=rule)
    return dataclasses.replace(prepared, split=split)


def _loaders(
    config: FinetuneConfig, prepared: Any, mean: Sequence[float], std: Sequence[float], accelerator: str
) -> tuple[DataLoader, DataLoader | None]:
    """Training loader (seeded augmentation, shuffled) and validation loader (None without validation tiles)."""
    from sslzoo.data.transforms import downstream_transform

    augment = downstream_transform(True, config.tile_size, mean, std)
    augment.set_random_seed(config.seed)  # albumentations ignores global seeds (workers: seed_worker_transform)
    train_set = prepared.train.with_transform(augment)
    val_set = (
        prepared.val.with_transform(downstream_transform(False, config.tile_size, mean, std))
        if (prepared.val is not None)
        else None
    )

    pin = torch.cuda.is_available() and accelerator != "cpu"
    batch_size = min(config.batch_size, len(train_set))
    train_loader = _loader(train_set, batch_size, True, config.workers, config.seed, pin)
    val_loader = None
    if val_set is not None:
        val_loader = _loader(val_set, config.batch_size, False, config.workers, config.seed, pin)
    return train_loader, val_loader


@dataclass
class _Training:
    """The Lightning trainer of one run and the callbacks read after fitting."""

    trainer: pl.Trainer
    history: EpochHistory
    best: BestWeights
    checkpoint: Any  # ModelCheckpoint


def _trainer(
    config: FinetuneConfig,
    out: Path,
    monitor: str,
    has_val: bool,
    accelerator: str,
    devices: int | str | Sequence[int],
    precision: str | int | None,
    progress: bool,
) -> _Training:
    """Trainer with early stopping on ``monitor``, the epoch history, the best weights and ``last.ckpt``."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    history, best = EpochHistory(), BestWeights(monitor)
    checkpoint = ModelCheckpoint(
        dirpath=str(out / CHECKPOINT_DIR), save_top_k=0, save_last=True, train_time_interval=CHECKPOINT_INTERVAL
    )
    # checked after validation only: a run that ends (max_steps) or resumes mid-epoch reaches the
    # train-epoch end before any val/loss of that epoch exists
    stopping = EarlyStopping(
        monitor=monitor, mode="min", patience=config.patience, check_on_train_epoch_end=not has_val
    )
    trainer = pl.Trainer(
        max_epochs=config.epochs if config.max_steps is None else -1,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        accelerator=accelerator,
        devices=devices if isinstance(devices, int | str) else list(devices),
        precision=cast(Any, precision),  # checked by Lightning
        default_root_dir=str(out),
        logger=False,
        callbacks=[stopping, history, best, checkpoint],
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    return _Training(trainer, history, best, checkpoint)


def _fit(
    run: _Training,
    module: SegmentationModule,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    config: FinetuneConfig,
    ckpt_path: str | None,
) -> None:
    """``trainer.fit`` (from ``ckpt_path`` when resuming), without the warnings that are intended here."""
    with warnings.catch_warnings():
        if config.frozen and config.frozen_bn == "eval":  # intended: fixed batch-norm statistics (eval mode)
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        if val_loader is None:  # intended: val_fraction 0 means no validation tiles
            warnings.filterwarnings("ignore", message=r".*no `val_dataloader`.*")
        run.trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)


def _keep_final_weights(run: _Training, module: SegmentationModule, last: Path) -> None:
    """Save ``last`` for the final step (so an interruption while tuning or scoring resumes without training),
    then load the best validation epoch's weights into the model (when there was one)."""
    if getattr(run.checkpoint, "_last_global_step_saved", None) != run.trainer.global_step or not last.is_file():
        run.trainer.save_checkpoint(str(last))
    if run.best.state is not None:
        module.model.load_state_dict(run.best.state)


def _segmenter(
    config: FinetuneConfig,
    module: SegmentationModule,
    encoder_config: Any,
    index: Any,
    prepared: Any,
    run: _Training,
    train_seconds: float,
) -> Any:
    """The trained :class:`~sslzoo.models.segmenter.Segmenter` on the training device, with its training record."""
    from sslzoo.models.segmenter import Segmenter, SegmenterConfig

    device = run.trainer.strategy.root_device
    training_record = {
        **config.model_dump(mode="json"),
        "data": str(index.root),
        "eval_rule": prepared.split.rule,
        "eval_ids": [s.id for s in prepared.split.eval],
        "n_train_tiles": len(prepared.train),
        "n_val_tiles": 0 if prepared.val is None else len(prepared.val),
        "epochs_trained": len(run.history.rows),
        "best_epoch": run.best.best_epoch,
        "global_step": int(run.trainer.global_step),
        "train_seconds": round(train_seconds, 3),
    }
    segmenter_config = SegmenterConfig(
        task=config.task,
        backbone=encoder_config.backbone,
        init=config.init,
        method=encoder_config.method,
        dataset=index.kind,
        mean=encoder_config.mean,
        std=encoder_config.std,
        tile_size=config.tile_size,
        tile_overlap=config.tile_overlap,
        **({} if config.inference_tile_size is None else {"inference_tile": config.inference_tile_size}),
        resize_to=config.input_size,
        training=training_record,
    )
    return Segmenter(module.model.cpu(), segmenter_config).to(device)


def _set_watershed(segmenter: Any, prepared: Any, mode: WatershedMode) -> None:
    """Instance: the authors' fixed watershed setting (``fixed``, the default, identical for every method), or
    the parameters tuned on the run's TRAINING tiles (``tuned``) with their AJI+ in the record."""
    if mode == "fixed":
        from sslzoo.models.postprocess import FIXED_WATERSHED

        segmenter.config.watershed = FIXED_WATERSHED.model_copy()
        return
    params, tuned = tune_instance_postprocessing(segmenter, prepared.train)
    segmenter.config.watershed = params
    segmenter.config.training["watershed_train_aji_plus"] = round(tuned, 6)


def _result(
    out: Path,
    config: FinetuneConfig,
    task: Task,
    evaluation: Any,
    n_train_tiles: int,
    rows: Sequence[dict[str, float]],
    train_seconds: float,
) -> FinetuneResult:
    """``result.json``'s content: the primary score of ``task``, all scores and the per-epoch record."""
    metric = PRIMARY_METRIC[task]
    return FinetuneResult(
        out_dir=out,
        task=task,
        metric=metric,
        score=float(evaluation.mean[metric]),
        scores=dict(evaluation.mean),
        pooled=dict(evaluation.pooled),
        n_train_tiles=n_train_tiles,
        n_eval_images=evaluation.n_images,
        epochs=len(rows),
        train_seconds=round(train_seconds, 3),
        epoch_seconds=[round(r["seconds"], 4) for r in rows],
        loss_history=[r["train_loss"] for r in rows],
        val_history=[r["val_loss"] for r in rows if not math.isnan(r["val_loss"])],
        config=config,
    )


def _save_outputs(out: Path, segmenter: Any, rows: Sequence[dict[str, float]], evaluation: Any, result: Any) -> None:
    """The segmenter (on the CPU), ``metrics.csv``, ``evaluation.json`` and ``result.json`` into ``out``."""
    segmenter.to("cpu").save_pretrained(out)
    write_metrics_csv(out / METRICS_FILE, rows)
    (out / EVALUATION_FILE).write_text(evaluation.model_dump_json(indent=2) + "\n")
    (out / RESULT_FILE).write_text(result.model_dump_json(indent=2) + "\n")
