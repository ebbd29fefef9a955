"""The project's shared names (CONTRACTS.md section 1): the one place that spells them.

- pretext methods :data:`METHODS` (Table II order) and baselines :data:`BASELINES`; together the
  initialisations :data:`INITS` a segmenter's encoder can start from;
- dataset kinds :data:`DATASET_KINDS`: the public datasets :data:`NAMED_DATASETS` (each with its
  task, :data:`DATASET_TASKS`) and ``folder``, a user's own images;
- tasks :data:`TASKS`, encoder backbones :data:`BACKBONES`;
- the served aliases :data:`ALIASES` and what each one is (:data:`ALIAS_INFO`);
- the zoo-name grammar: encoder ``<method>-<backbone>-<dataset>``, segmenter
  ``<method>-<backbone>-<dataset>-<task>`` (:func:`parse_name`, :func:`encoder_name`,
  :func:`segmenter_name`).

Every tuple is ``get_args`` of its ``Literal`` type, so the two cannot drift. Adding a method,
dataset, task or backbone means editing one ``Literal`` here. This module imports only the standard
library, so the CLI can import it for ``--help`` without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeGuard, cast, get_args

from sslzoo.errors import ConfigError

__all__ = [
    "ALIASES",
    "ALIAS_INFO",
    "BACKBONES",
    "BASELINES",
    "DATASET_KINDS",
    "DATASET_TASKS",
    "INITS",
    "METHODS",
    "MODEL_ALIASES",
    "MODEL_ALIAS_KINDS",
    "NAMED_DATASETS",
    "NAME_FORMAT",
    "NAME_SEPARATOR",
    "SERVICE_ALIASES",
    "TASKS",
    "ZOO_KINDS",
    "Alias",
    "AliasInfo",
    "Backbone",
    "Baseline",
    "DatasetKind",
    "Init",
    "Method",
    "ModelAlias",
    "NamedDataset",
    "ServiceAlias",
    "Task",
    "ZooKind",
    "ZooName",
    "encoder_name",
    "is_backbone",
    "is_baseline",
    "is_dataset_kind",
    "is_init",
    "is_method",
    "is_task",
    "is_zoo_name",
    "join_name",
    "parse_name",
    "segmenter_name",
]

#: Self-supervised pretext methods, in the order of the paper's Table II.
Method = Literal["autoencoder", "simclr", "byol", "moco", "barlowtwins", "densecl", "detco"]
#: Initialisations that no pretext task trains.
Baseline = Literal["random", "imagenet"]
#: What a segmenter's encoder can start from (zoo names accept all of them as ``<method>``).
Init = Literal[Method, Baseline]

#: The public datasets of the paper; each stands for one task.
NamedDataset = Literal["isic2017", "monuseg", "dsb2018"]
#: Dataset kinds (readers): the named datasets, or ``folder`` (a user's own images).
DatasetKind = Literal[NamedDataset, "folder"]

Task = Literal["semantic", "instance"]
#: ResNet encoders (torchvision / smp key names) that the encoder factory builds.
Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
#: What a zoo entry holds: an encoder alone, or an encoder + decoder fine-tuned for a task.
ZooKind = Literal["encoder", "segmenter"]

#: Served aliases of the embedded default models.
ModelAlias = Literal["nuclei", "lesion", "embed"]
#: Served names backed by no model of their own: the evaluation (metric) service and the encoder ranking.
ServiceAlias = Literal["evaluate", "rank"]
Alias = Literal[ModelAlias, ServiceAlias]

#: ``sslzoo rank`` (:mod:`sslzoo.downstream.rank`): the probe, its ``--budget`` presets and the proxies an
#: encoder can be ranked by (readout: dice .. aji_plus; finetune: finetune_*).
RankProbe = Literal["readout", "finetune"]
RankBudget = Literal["quick", "standard", "thorough"]
RankProxy = Literal[
    "dice",
    "fg_dice",
    "dist_r2",
    "aji_plus",
    "finetune_dice",
    "finetune_aji_plus",
    "finetune_loss",
    "finetune_train_loss",
]

METHODS: Final[tuple[Method, ...]] = get_args(Method)
BASELINES: Final[tuple[Baseline, ...]] = get_args(Baseline)
INITS: Final[tuple[Init, ...]] = get_args(Init)
NAMED_DATASETS: Final[tuple[NamedDataset, ...]] = get_args(NamedDataset)
DATASET_KINDS: Final[tuple[DatasetKind, ...]] = get_args(DatasetKind)
TASKS: Final[tuple[Task, ...]] = get_args(Task)
RANK_PROBES: Final[tuple[RankProbe, ...]] = get_args(RankProbe)
RANK_BUDGETS: Final[tuple[RankBudget, ...]] = get_args(RankBudget)
RANK_PROXIES: Final[tuple[RankProxy, ...]] = get_args(RankProxy)

#: Protocol options of fine-tuning (issue 12): a frozen encoder's batch norm mode while training
#: ("train": batch statistics, as the authors; "eval": fixed running statistics), and how the
#: instance watershed gets its parameters ("fixed": the authors' setting; "tuned": on the run's tiles).
FrozenBN = Literal["train", "eval"]
FROZEN_BN_MODES: Final[tuple[FrozenBN, ...]] = get_args(FrozenBN)
WatershedMode = Literal["fixed", "tuned"]
WATERSHED_MODES: Final[tuple[WatershedMode, ...]] = get_args(WatershedMode)
BACKBONES: Final[tuple[Backbone, ...]] = get_args(Backbone)
ZOO_KINDS: Final[tuple[ZooKind, ...]] = get_args(ZooKind)
MODEL_ALIASES: Final[tuple[ModelAlias, ...]] = get_args(ModelAlias)
SERVICE_ALIASES: Final[tuple[ServiceAlias, ...]] = get_args(ServiceAlias)
ALIASES: Final[tuple[Alias, ...]] = get_args(Alias)

#: The task each named dataset stands for (a ``folder`` dataset decides from its masks). Tables keyed by
#: a vocabulary list are typed ``dict[str, ...]`` for lookups with plain strings; their keys are checked below.
DATASET_TASKS: Final[dict[str, Task]] = {"isic2017": "semantic", "monuseg": "instance", "dsb2018": "instance"}


@dataclass(frozen=True)
class AliasInfo:
    """What a served alias is: a segmenter (with its task), an encoder, or a service without a model."""

    kind: Literal["segmenter", "encoder", "service"]
    task: Task | None
    description: str


#: Every served alias and what it is (the zoo entry behind a model alias is in ``sslzoo.hub.defaults``).
ALIAS_INFO: Final[dict[str, AliasInfo]] = {
    "nuclei": AliasInfo("segmenter", "instance", "H&E nuclei, instance segmentation (distance map + watershed)"),
    "lesion": AliasInfo("segmenter", "semantic", "dermoscopy lesions, semantic segmentation"),
    "embed": AliasInfo("encoder", None, "encoder embeddings (global-average-pooled last stage)"),
    "evaluate": AliasInfo("service", None, "the evaluation service: scores label maps against masks; no model"),
    "rank": AliasInfo("service", None, "the encoder ranking: which zoo encoder suits a few labelled images"),
}
#: Model alias -> kind of the zoo entry it serves.
MODEL_ALIAS_KINDS: Final = cast(
    dict[str, ZooKind], {alias: info.kind for alias, info in ALIAS_INFO.items() if info.kind != "service"}
)


def _check_keys(what: str, keys: object, expected: tuple[str, ...]) -> None:
    """Fail at import when a table keyed by a vocabulary list misses or adds a name."""
    if not isinstance(keys, dict) or set(keys) != set(expected):
        raise RuntimeError(f"sslzoo.vocabulary: {what} must have exactly the keys {expected}")


_check_keys("DATASET_TASKS", DATASET_TASKS, NAMED_DATASETS)
_check_keys("ALIAS_INFO", ALIAS_INFO, ALIASES)
_check_keys("MODEL_ALIAS_KINDS", MODEL_ALIAS_KINDS, MODEL_ALIASES)


# --------------------------------------------------------------------------------------------- membership


def is_method(value: object) -> TypeGuard[Method]:
    return value in METHODS


def is_baseline(value: object) -> TypeGuard[Baseline]:
    return value in BASELINES


def is_init(value: object) -> TypeGuard[Init]:
    return value in INITS


def is_dataset_kind(value: object) -> TypeGuard[DatasetKind]:
    return value in DATASET_KINDS


def is_task(value: object) -> TypeGuard[Task]:
    return value in TASKS


def is_backbone(value: object) -> TypeGuard[Backbone]:
    return value in BACKBONES


# --------------------------------------------------------------------------------------------- zoo names

#: Separator of the parts of a zoo name (no part contains it).
NAME_SEPARATOR: Final = "-"
NAME_FORMAT: Final = (
    "<method>-<backbone>-<dataset> (encoder) or <method>-<backbone>-<dataset>-<task> (segmenter), "
    "e.g. densecl-resnet50-monuseg or densecl-resnet50-monuseg-instance"
)


@dataclass(frozen=True)
class ZooName:
    """A parsed zoo entry name: ``task`` is ``None`` for an encoder."""

    method: Init
    backbone: Backbone
    dataset: DatasetKind
    task: Task | None = None

    @property
    def kind(self) -> ZooKind:
        return "encoder" if self.task is None else "segmenter"

    @property
    def name(self) -> str:
        return join_name(self.method, self.backbone, self.dataset, self.task)

    @property
    def encoder_name(self) -> str:
        """The encoder entry this name is built on (itself for an encoder)."""
        return join_name(self.method, self.backbone, self.dataset)

    def __str__(self) -> str:
        return self.name


def join_name(method: str, backbone: str, dataset: str, task: str | None = None) -> str:
    """``<method>-<backbone>-<dataset>[-<task>]`` without checking the parts against the vocabulary.

    For folders laid out like zoo entries whose dataset part is a user's own label (a study's dataset
    key); use :func:`encoder_name` / :func:`segmenter_name` for real zoo names.
    """
    return NAME_SEPARATOR.join([method, backbone, dataset] + ([task] if task is not None else []))


def _unknown(what: str, value: str, name: str, choices: tuple[str, ...]) -> ConfigError:
    return ConfigError(f"unknown {what} {value!r} in zoo name {name!r}; choose one of {', '.join(choices)}")


def _zoo_name(name: str, method: str, backbone: str, dataset: str, task: str | None) -> ZooName:
    """Check each part of ``name`` against the vocabulary (the first wrong one is named)."""
    if not is_init(method):
        raise _unknown("method", method, name, INITS)
    if not is_backbone(backbone):
        raise _unknown("backbone", backbone, name, BACKBONES)
    if not is_dataset_kind(dataset):
        raise _unknown("dataset", dataset, name, DATASET_KINDS)
    if task is not None and not is_task(task):
        raise _unknown("task", task, name, TASKS)
    return ZooName(method=method, backbone=backbone, dataset=dataset, task=task)


def parse_name(name: str) -> ZooName:
    """Parse ``<method>-<backbone>-<dataset>[-<task>]``; :class:`ConfigError` says which part is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"empty zoo name; zoo names are {NAME_FORMAT}")
    if "/" in name:
        raise ConfigError(f"{name!r} is a repo id, not a zoo name; pass the part after the '/' or use split_repo_id")
    if name in ALIASES:
        raise ConfigError(f"{name!r} is a served alias, not a zoo name; resolve it with sslzoo.hub.defaults first")
    parts = name.split(NAME_SEPARATOR)
    if len(parts) not in (3, 4):
        raise ConfigError(f"malformed zoo name {name!r} ({len(parts)} parts); zoo names are {NAME_FORMAT}")
    method, backbone, dataset = parts[:3]
    return _zoo_name(name, method, backbone, dataset, parts[3] if len(parts) == 4 else None)


def is_zoo_name(name: str) -> bool:
    """True when ``name`` parses as a zoo entry name."""
    try:
        parse_name(name)
    except ConfigError:
        return False
    return True


def encoder_name(method: str, backbone: str, dataset: str) -> str:
    """The encoder entry ``<method>-<backbone>-<dataset>``; :class:`ConfigError` names a part outside the vocabulary."""
    name = join_name(method, backbone, dataset)
    return _zoo_name(name, method, backbone, dataset, None).name


def segmenter_name(method: str, backbone: str, dataset: str, task: str) -> str:
    """The segmenter entry ``<method>-<backbone>-<dataset>-<task>``; :class:`ConfigError` names a bad part."""
    name = join_name(method, backbone, dataset, task)
    return _zoo_name(name, method, backbone, dataset, task).name
