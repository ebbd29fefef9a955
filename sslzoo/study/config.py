"""``StudyConfig``: what a study runs (datasets x methods x rates x frozen x seeds), loaded from YAML.

Example (``configs/study/cpu_monuseg.yaml``)::

    name: cpu_monuseg
    backbone: resnet18
    datasets:
      monuseg: {path: /data/monuseg, kind: monuseg, task: instance}
    methods: [random, simclr, byol, densecl]
    rates: [0.01, 0.04, 0.16, 0.64, 1.0]
    frozen: [false, true]
    seeds: [0, 1]
    pretrain: {max_steps: 60, batch_size: 16, input_size: 128}
    finetune: {epochs: 6, tile_size: 128, tiles_per_image: 16}

Dataset paths may use environment variables (``$SSLZOO_SHARED_DATA/monuseg``); relative ones are resolved
against the YAML file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sslzoo.config_file import read_yaml_config
from sslzoo.vocabulary import BASELINES, DATASET_KINDS, METHODS, FrozenBN, Task, WatershedMode

#: Methods the study knows (CONTRACTS.md section 1): baselines first, then the pretext methods in Table II order.
BASELINE_METHODS: tuple[str, ...] = BASELINES
PRETEXT_METHODS: tuple[str, ...] = METHODS
KNOWN_METHODS: tuple[str, ...] = BASELINE_METHODS + PRETEXT_METHODS
#: The paper's annotation rates 1 % .. 64 % plus the fully annotated set.
DEFAULT_RATES: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)


class DatasetSpec(BaseModel):
    """One dataset of the study: where it is, which reader (``kind``) and which task."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    kind: str | None = Field(None, description=f"{' | '.join(DATASET_KINDS)}; None: detected")
    task: Task | None = Field(None, description="semantic | instance; None: the dataset's own")
    pretrain_skip: list[str] = Field(
        default_factory=list,
        description="splits left out of pretraining besides the scored images, e.g. [unlabeled] (ISIC 2017: the "
        "official test images) to pretrain on the training split only, as the authors",
    )
    resize: int | None = Field(
        None,
        ge=32,
        description="semantic datasets: squeeze every whole image to resize x resize in pretraining (resize_to) AND "
        "fine-tuning (input_size), so both see one scale, as the authors (256); None: native size, tiled in both",
    )

    @model_validator(mode="after")
    def _resize_is_semantic(self) -> DatasetSpec:
        if self.resize is not None and (self.task == "instance" or self.kind == "monuseg"):
            raise ValueError(
                "resize squeezes whole images, which only semantic datasets allow (instance maps would lose their "
                "object scale); drop resize for this dataset"
            )
        return self


class PretrainSettings(BaseModel):
    """Pretext training of every SSL method (``PretextConfig`` fields shared by all methods)."""

    model_config = ConfigDict(extra="forbid")

    max_epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=2)
    input_size: int = Field(256, ge=16)
    lr: float = Field(1e-3, gt=0)
    max_tiles: int | None = Field(
        None, ge=2, description="use at most this many view tiles per epoch (evenly spread; CPU configurations)"
    )
    workers: int = Field(2, ge=0)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-method hyper-parameters (psi)")

    @model_validator(mode="after")
    def _bounded(self) -> PretrainSettings:
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError("pretrain needs max_epochs or max_steps (how long to train)")
        return self


class FinetuneSettings(BaseModel):
    """Fine-tuning settings shared by every run (``FinetuneConfig`` fields except init/rate/frozen/seed)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(200, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    tile_size: int = Field(256, ge=32)
    tiles_per_image: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    frozen_bn: FrozenBN = "train"
    decoder_channels: tuple[int, int, int, int, int] = (512, 256, 128, 64, 32)
    patience: int = Field(40, ge=1)
    eval_split: str | None = None
    eval_images: int | None = Field(None, ge=1, description="score at most this many of the scored images")
    tile_overlap: int = Field(64, ge=0, description="inference tile overlap on whole images (pixels)")
    watershed: WatershedMode = "fixed"
    workers: int = Field(2, ge=0)


class StudyConfig(BaseModel):
    """A whole study: the grid, the pretraining and fine-tuning settings, and the IQC interval."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    backbone: str = "resnet50"
    datasets: dict[str, DatasetSpec]
    methods: list[str] = Field(default_factory=lambda: list(KNOWN_METHODS))
    rates: list[float] = Field(default_factory=lambda: list(DEFAULT_RATES))
    frozen: list[bool] = Field(default_factory=lambda: [False, True])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    pretrain: PretrainSettings
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    iqc_lower: float = Field(0.01, gt=0, description="IQC interval b (CONTRACTS.md section 3)")
    iqc_upper: float = Field(0.64, le=1, description="IQC interval a")
    keep_checkpoints: bool = Field(False, description="keep each finished run's Lightning checkpoints (large)")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in KNOWN_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(KNOWN_METHODS)}")
        if len(set(methods)) != len(methods):
            raise ValueError("methods must not repeat")
        return methods

    @field_validator("rates")
    @classmethod
    def _valid_rates(cls, rates: list[float]) -> list[float]:
        bad = [r for r in rates if not 0.0 < r <= 1.0]
        if bad:
            raise ValueError(f"rates must lie in (0, 1] (0.04 means 4 %), got {bad}")
        if len(set(rates)) != len(rates):
            raise ValueError("rates must not repeat")
        return sorted(rates)

    @field_validator("seeds", "frozen")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        if not values or len(set(values)) != len(values):
            raise ValueError("must be a non-empty list without repeats")
        return values

    @model_validator(mode="after")
    def _check_grid(self) -> StudyConfig:
        if not self.datasets:
            raise ValueError("datasets is empty; name at least one {name: {path, kind, task}}")
        if "random" not in self.methods or False not in self.frozen or 1.0 not in self.rates:
            raise ValueError(
                "IQC needs the reference run (random init, not frozen, rate 1.0): keep 'random' in methods, "
                "false in frozen and 1.0 in rates"
            )
        if not self.iqc_lower < self.iqc_upper:
            raise ValueError(f"iqc_lower must be below iqc_upper, got {self.iqc_lower} and {self.iqc_upper}")
        if min(self.rates) > self.iqc_lower + 1e-9 or max(self.rates) < self.iqc_upper - 1e-9:
            raise ValueError(
                f"rates {self.rates} do not cover the IQC interval [{self.iqc_lower}, {self.iqc_upper}]; "
                "add rates or set iqc_lower / iqc_upper"
            )
        return self

    @property
    def pretext_methods(self) -> list[str]:
        """The methods that need pretraining (not the baselines)."""
        return [m for m in self.methods if m not in BASELINE_METHODS]


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study YAML; relative dataset paths are taken relative to the YAML's folder."""
    path = Path(path)
    config = read_yaml_config(
        path, StudyConfig, "study config", "configs/study/cpu_monuseg.yaml", "name, datasets, methods, ..."
    )
    for spec in config.datasets.values():
        spec.path = Path(os.path.expandvars(str(spec.path))).expanduser()
        if not spec.path.is_absolute():
            spec.path = (path.parent / spec.path).resolve()
    return config
