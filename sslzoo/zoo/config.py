"""``ZooConfig``: what one zoo build makes and measures, loaded from ``configs/zoo/*.yaml``.

One config lists methods x datasets at one backbone, the pretraining budget of every encoder (optimiser steps,
or wall-clock minutes turned into steps by a short timing run), and the evaluation: NQC on class-labelled images
and a frozen-encoder few-label probe (a U-Net decoder trained on a small labelled subset for a fixed number of
steps, scored on held-out images, several seeds), with random init measured the same way as the reference.
Example (``configs/zoo/tiny.yaml``)::

    name: tiny
    backbone: resnet18
    methods: [simclr, byol]
    datasets:
      lesions: {path: data/lesions, kind: isic2017}
    pretrain: {max_steps: 2, batch_size: 4, input_size: 64}
    probe: {rate: 0.5, steps: 2, tile_size: 64, seeds: [0, 1, 2]}

``datasets.<name>.pretrain`` / ``.probe`` / ``.nqc`` override the global settings for that dataset (partial
mappings). Dataset paths may use environment variables (``$VAR``, ``${VAR}``, and ``${VAR:-default}`` for a
default when ``VAR`` is unset or empty); relative ones are resolved against the YAML's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sslzoo.config_file import read_yaml_config
from sslzoo.vocabulary import METHODS, NAMED_DATASETS, Task

#: The seven pretext methods (CONTRACTS.md section 1), in Table II order.
PRETEXT_METHODS: tuple[str, ...] = METHODS
#: Initialisations measured without pretraining; ``random`` is the reference of every gain.
REFERENCE_METHODS: tuple[str, ...] = ("random",)
#: Dataset kinds a zoo entry can be named after (``folder`` has no zoo name of its own meaning).
ZOO_DATASETS: tuple[str, ...] = NAMED_DATASETS


class PretrainSettings(BaseModel):
    """Pretext training of every SSL encoder: a budget in steps or minutes, and ``PretextConfig`` fields."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(None, ge=1, description="optimiser steps per encoder")
    max_epochs: int | None = Field(None, ge=1, description="epochs over the view tiles per encoder")
    minutes: float | None = Field(
        None, gt=0, description="wall-clock budget per encoder: steps = minutes / (seconds per step, timed first)"
    )
    batch_size: int = Field(32, ge=2)
    input_size: int = Field(256, ge=16, description="crop size of the two views (pixels)")
    resize: int | None = Field(
        None, ge=16, description="squeeze every whole image to resize x resize before tiling (None: native)"
    )
    lr: float = Field(1e-3, gt=0, description="SGD learning rate (the paper's 1e-3 by default)")
    lr_by_method: dict[str, float] = Field(default_factory=dict, description="per-method learning rates")
    seed: int = 0
    workers: int = Field(2, ge=0)
    calibration_steps: int = Field(3, ge=1, description="timed steps (after one warm-up step) for a minutes budget")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-method hyper-parameters (psi)")

    @model_validator(mode="after")
    def _one_budget(self) -> PretrainSettings:
        budgets = [b for b in (self.max_steps, self.max_epochs, self.minutes) if b is not None]
        if len(budgets) != 1:
            raise ValueError(
                "give exactly one pretraining budget: max_steps (optimiser steps), max_epochs or minutes (wall time)"
            )
        return self

    @property
    def budget(self) -> str:
        """The budget as text: ``N steps``, ``N epochs`` or ``M min``."""
        if self.max_steps is not None:
            return f"{self.max_steps} steps"
        if self.max_epochs is not None:
            return f"{self.max_epochs} epochs"
        return f"{self.minutes:g} min"


class ProbeSettings(BaseModel):
    """The frozen-encoder few-label probe: ``FinetuneConfig`` with ``frozen=True`` and a fixed number of steps."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(0.05, gt=0, le=1, description="labelled subset: share of the training tiles")
    steps: int = Field(100, ge=1, description="fixed optimiser steps of the decoder")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    tile_size: int = Field(256, ge=32)
    inference_tile_size: int | None = Field(
        None, ge=32, description="tile size the probe's segmenter scores with (None: tile_size; larger = less overlap)"
    )
    decoder_channels: tuple[int, int, int, int, int] | None = Field(
        None, description="U-Net decoder widths of the probe (None: fine-tuning's default, the authors' 512..32)"
    )
    tiles_per_image: int | None = Field(None, ge=1)
    input_size: int | None = Field(None, ge=32, description="semantic: squeeze whole images to this size")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    eval_split: str | None = Field(None, description="held-out split; None: test/val split, else a fixed 20 % hold-out")
    workers: int = Field(0, ge=0)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be a non-empty list without repeats")
        return seeds


class NQCSettings(BaseModel):
    """NQC on class-labelled images (ISIC diagnosis, MoNuSeg organ); see :mod:`sslzoo.metrics.representation`."""

    model_config = ConfigDict(extra="forbid")

    images: Literal["heldout", "all"] = Field(
        "heldout", description="heldout: only the probe's held-out images (never pretrained on); all: every image"
    )
    tiles_per_image: int = Field(
        16, ge=1, description="an image's embedding is the mean over up to this many of its input_size tiles"
    )
    n_components: int = Field(10, ge=1)


class DatasetSpec(BaseModel):
    """One dataset of the zoo: where it is, its reader (``kind``), its task, and per-dataset overrides."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    kind: str = Field(description=f"{' | '.join(NAMED_DATASETS)} (the zoo name's dataset part)")
    task: Task | None = None
    pretrain: dict[str, Any] = Field(default_factory=dict, description="overrides of the global pretrain settings")
    probe: dict[str, Any] = Field(default_factory=dict, description="overrides of the global probe settings")
    nqc: dict[str, Any] = Field(default_factory=dict, description="overrides of the global NQC settings")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in ZOO_DATASETS:
            raise ValueError(f"unknown dataset kind {kind!r}; zoo entries are named after {', '.join(ZOO_DATASETS)}")
        return kind


class ZooConfig(BaseModel):
    """A whole zoo build: methods x datasets at one backbone, the budget and the evaluation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    backbone: str = "resnet50"
    methods: list[str] = Field(default_factory=lambda: list(PRETEXT_METHODS))
    datasets: dict[str, DatasetSpec]
    pretrain: PretrainSettings
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    nqc: NQCSettings = Field(default_factory=NQCSettings)
    dtype: Literal["float16", "bfloat16", "float32"] = Field("float16", description="storage dtype of packaged weights")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in PRETEXT_METHODS]
        if unknown:
            raise ValueError(
                f"unknown pretext method(s) {', '.join(unknown)}; choose from {', '.join(PRETEXT_METHODS)} "
                "(random init is always measured as the reference)"
            )
        if not methods or len(set(methods)) != len(methods):
            raise ValueError("methods must be a non-empty list without repeats")
        return methods

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, backbone: str) -> str:
        from sslzoo.vocabulary import BACKBONES

        if backbone not in BACKBONES:
            raise ValueError(f"unsupported backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        return backbone

    @model_validator(mode="after")
    def _check(self) -> ZooConfig:
        if not self.datasets:
            raise ValueError("datasets is empty; name at least one {name: {path, kind}}")
        kinds = [spec.kind for spec in self.datasets.values()]
        if len(set(kinds)) != len(kinds):
            raise ValueError("two datasets have the same kind: zoo names would collide (one dataset per kind)")
        for name in self.datasets:  # overrides must validate now, not hours into a build
            self.pretrain_for(name)
            self.probe_for(name)
            self.nqc_for(name)
        return self

    def _merged(self, base: BaseModel, overrides: dict[str, Any], what: str, dataset: str) -> Any:
        try:
            return type(base).model_validate({**base.model_dump(), **overrides})
        except ValidationError as exc:
            raise ValueError(f"datasets.{dataset}.{what}: {' '.join(str(exc).split())}") from exc

    def pretrain_for(self, dataset: str) -> PretrainSettings:
        """The pretraining settings of ``dataset`` (global ones with its overrides)."""
        overrides = self.datasets[dataset].pretrain
        if {"max_steps", "max_epochs", "minutes"} & set(overrides):  # a budget override replaces the global one
            overrides = {"max_steps": None, "max_epochs": None, "minutes": None, **overrides}
        return self._merged(self.pretrain, overrides, "pretrain", dataset)

    def probe_for(self, dataset: str) -> ProbeSettings:
        """The probe settings of ``dataset`` (global ones with its overrides)."""
        return self._merged(self.probe, self.datasets[dataset].probe, "probe", dataset)

    def nqc_for(self, dataset: str) -> NQCSettings:
        """The NQC settings of ``dataset`` (global ones with its overrides)."""
        return self._merged(self.nqc, self.datasets[dataset].nqc, "nqc", dataset)


_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def expand_path(text: str) -> str:
    """``${VAR:-default}`` (default when VAR is unset or empty), then ``$VAR`` / ``${VAR}``, then ``~``."""
    text = _DEFAULTED.sub(lambda m: os.environ.get(m.group(1)) or m.group(2), text)
    return os.path.expanduser(os.path.expandvars(text))


def load_zoo_config(path: str | Path) -> ZooConfig:
    """Read a zoo YAML; relative dataset paths are taken relative to the YAML's folder."""
    path = Path(path)
    config = read_yaml_config(
        path, ZooConfig, "zoo config", "configs/zoo/cpu.yaml", "name, backbone, methods, datasets, ..."
    )
    for spec in config.datasets.values():
        spec.path = Path(expand_path(str(spec.path)))
        if not spec.path.is_absolute():
            spec.path = (path.parent / spec.path).resolve()
    return config
