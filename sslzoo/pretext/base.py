"""The shared base of all pretext methods: :class:`PretextConfig` and :class:`PretextMethod`.

A method subclasses :class:`PretextMethod`, sets the class attributes that Table II
reports (``name``, ``default_params``, ``psi``, ``batch_note``, ``notes``) and
implements :meth:`PretextMethod.training_loss` on two augmented views. The base does
the rest: the Lightning ``training_step`` and logging, the optimiser of the paper
(SGD, lr 1e-3, momentum 0.9, weight decay 1e-4, cosine annealing over the run), the
hook for momentum / EMA updates after each optimiser step (from ``optimizer_step``), and the export of the
backbone in the zoo's encoder format.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from sslzoo.errors import ConfigError
from sslzoo.models.encoders import EncoderConfig, check_backbone, create_encoder, save_encoder


class PretextConfig(BaseModel):
    """Everything that defines a pretext run (stored in the exported ``config.json`` under ``training``)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    backbone: str = "resnet50"
    dataset: str = "folder"
    input_size: int = Field(256, ge=16)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    max_epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    seed: int = 0
    #: H&E stain jitter sigma added to the MoNuSeg view list (``HEStainJitter``; 0: off, the authors' list).
    stain_jitter: float = Field(0.0, ge=0, lt=1)
    #: Squeeze every whole image to resize_to x resize_to before tiling (None: native size), as
    #: ``finetune --input-size`` does; the authors resize to 256 for pretraining and fine-tuning.
    resize_to: int | None = Field(None, ge=16)
    #: Known at fit time (set by :func:`sslzoo.pretext.train.pretrain`): queues are never longer than this.
    samples_per_epoch: int | None = Field(None, ge=1)
    #: Method hyper-parameters (ψ of Table II); missing keys take the method's ``default_params``.
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        return check_backbone(value)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Cast ``value`` to the type of ``default`` (CLI values arrive as strings or ints)."""
    if default is None or value is None or isinstance(value, type(default)):
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int | float) and not isinstance(value, int | float | str):
            raise ValueError(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, int):
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError(value)
            return int(as_float)
        if isinstance(default, list | tuple):
            return type(default)(value)
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameter {name}={value!r}: expected a {type(default).__name__} like {default!r}") from exc


class PretextMethod(pl.LightningModule):
    """Base LightningModule of a pretext method; ``self.encoder`` is the smp backbone that gets exported.

    Subclasses implement :meth:`training_loss` and, when they have modules beyond the
    backbone (heads, decoders, momentum copies, queues), return them from
    :meth:`extra_modules` so Table II can count Δθ.
    """

    name: ClassVar[str] = ""
    default_params: ClassVar[dict[str, Any]] = {}
    #: Names of the method hyper-parameters ψ reported in Table II (keys of ``default_params``).
    psi: ClassVar[list[str]] = []
    #: The method hyper-parameters the paper's Table II counts as ψ (its count is the paper's ψ column).
    paper_psi: ClassVar[list[str]] = []
    batch_note: ClassVar[str] = ""
    notes: ClassVar[str] = ""

    def __init__(self, config: PretextConfig | dict[str, Any]):
        super().__init__()
        if isinstance(config, dict):  # ``load_from_checkpoint`` passes the saved hyper-parameters back
            config = PretextConfig.model_validate(config)
        if self.name and config.method != self.name:
            raise ConfigError(f"config is for method {config.method!r} but this module is {self.name!r}")
        self.config = config
        self.params = self.resolve_params(config.params)
        self.save_hyperparameters({"config": config.model_dump(mode="json")})
        self.encoder = create_encoder(config.backbone)

    # ----------------------------------------------------------------- configuration
    @classmethod
    def resolve_params(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """``default_params`` updated with ``overrides``; unknown keys raise :class:`ConfigError`."""
        unknown = sorted(set(overrides) - set(cls.default_params))
        if unknown:
            known = ", ".join(sorted(cls.default_params)) or "(none)"
            raise ConfigError(
                f"method {cls.name!r} has no parameter(s) {', '.join(unknown)}; its parameters are: {known}"
            )
        params = dict(cls.default_params)
        for key, value in overrides.items():
            params[key] = _coerce(key, value, cls.default_params[key])
        return params

    @property
    def feature_dim(self) -> int:
        """Channels of the last encoder stage (2048 for resnet50, 512 for resnet18)."""
        channels: Any = self.encoder.out_channels
        return int(channels[-1])

    def embed(self, images: Tensor) -> Tensor:
        """Global-average-pooled last encoder stage, shape ``(N, feature_dim)``."""
        return self.encoder(images)[-1].mean(dim=(2, 3))

    # ----------------------------------------------------------------- to implement
    def training_loss(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss on a batch of two augmented views ``(N, 3, H, W)`` and named terms to log."""
        raise NotImplementedError

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules beyond the backbone (their parameters are Δθ of Table II)."""
        return {}

    def after_optimizer_step(self) -> None:
        """Momentum / EMA updates after each optimiser step; default: nothing."""

    # ----------------------------------------------------------------- helpers
    def gather_across_devices(self, tensor: Tensor, sync_grads: bool = False) -> Tensor:
        """Concatenate ``tensor`` (N, ...) from all processes (DDP) along dim 0; itself on one device.

        ``sync_grads=True`` keeps gradients (SimCLR's negatives over the global batch); queue keys
        need none.
        """
        if self._trainer is None or self.trainer.world_size <= 1:
            return tensor
        gathered = self.all_gather(tensor, sync_grads=sync_grads)
        assert isinstance(gathered, Tensor)
        return gathered.flatten(0, 1)

    def extra_parameter_count(self) -> int:
        """Δθ: number of parameters (trainable or not) in :meth:`extra_modules`."""
        seen: set[int] = set()
        total = 0
        for module in self.extra_modules().values():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    @property
    def training_progress(self) -> float:
        """Fraction of the run done, 0..1 (0 outside a fit)."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        total = trainer.estimated_stepping_batches
        if not total or math.isinf(total):
            return 0.0
        return min(1.0, trainer.global_step / float(total))

    # ----------------------------------------------------------------- Lightning
    @staticmethod
    def split_views(batch: Any) -> tuple[Tensor, Tensor]:
        """Accept ``(view1, view2)``, ``(view1, view2, ...)`` or ``{"view1": ..., "view2": ...}``."""
        if isinstance(batch, dict):
            return batch["view1"], batch["view2"]
        if isinstance(batch, list | tuple) and len(batch) >= 2:
            return batch[0], batch[1]
        raise ConfigError("a pretext batch must be (view1, view2); use sslzoo.data.pretext_dataset.TwoViewDataset")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        view1, view2 = self.split_views(batch)
        loss, terms = self.training_loss(view1, view2)
        n = int(view1.shape[0])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        for key, value in terms.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's step, then :meth:`after_optimizer_step` (once per real step, also with accumulation)."""
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def configure_optimizers(self) -> Any:
        """SGD(lr, momentum, weight decay) with cosine annealing to 0 over all optimiser steps."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            trainable, lr=self.config.lr, momentum=self.config.momentum, weight_decay=self.config.weight_decay
        )
        return self.with_cosine_schedule(optimizer)

    def with_cosine_schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """``optimizer`` with cosine annealing to 0 over all optimiser steps (per step), when they are known."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else None
        if not total or math.isinf(total):
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- export
    def encoder_config(self, **training_extra: Any) -> EncoderConfig:
        training = self.config.model_dump(mode="json")
        training["params"] = self.params
        training.update(training_extra)
        return EncoderConfig(
            backbone=self.config.backbone,
            method=self.config.method,
            dataset=self.config.dataset,
            input_size=self.config.input_size,
            training=training,
        )

    def export_encoder(self, out_dir: str | Path, **training_extra: Any) -> Path:
        """Write the backbone as ``model.safetensors`` + ``config.json`` (see :mod:`sslzoo.models.encoders`)."""
        return save_encoder(self.encoder, out_dir, self.encoder_config(**training_extra))
