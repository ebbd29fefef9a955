"""Zoo names (CONTRACTS.md section 1).

- encoder: ``<method>-<backbone>-<dataset>``, e.g. ``densecl-resnet50-monuseg``;
- segmenter: ``<method>-<backbone>-<dataset>-<task>``, task ``semantic`` | ``instance``;
- Hub repo id: ``<namespace>/<entry>``; the namespace is ``sslzoo`` unless the argument or the
  environment variable ``SSLZOO_HUB_NAMESPACE`` says otherwise;
- served aliases of the embedded defaults: ``nuclei``, ``lesion``, ``embed`` (models) and ``evaluate``
  (the metric service, no model of its own).

This module is light (no torch) so that the CLI can import it for ``--help``.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from sslzoo.errors import ConfigError

#: The seven pretext methods, in the order of the paper's Table II.
SSL_METHODS: tuple[str, ...] = ("autoencoder", "simclr", "byol", "moco", "barlowtwins", "densecl", "detco")
#: Initialisations that are not trained by a pretext task.
BASELINES: tuple[str, ...] = ("random", "imagenet")
METHODS: tuple[str, ...] = SSL_METHODS + BASELINES
DATASETS: tuple[str, ...] = ("isic2017", "monuseg", "dsb2018", "folder")
TASKS: tuple[str, ...] = ("semantic", "instance")
#: Backbones the zoo accepts in names; the same list as ``sslzoo.models.encoders.SUPPORTED_BACKBONES``.
BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

#: Aliases the server uses for the embedded default models (see :mod:`sslzoo.hub.defaults`).
MODEL_ALIASES: tuple[str, ...] = ("nuclei", "lesion", "embed")
#: The evaluation service: served under this name, but backed by no model.
SERVICE_ALIASES: tuple[str, ...] = ("evaluate",)
ALIASES: tuple[str, ...] = MODEL_ALIASES + SERVICE_ALIASES

DEFAULT_NAMESPACE = "sslzoo"
NAMESPACE_ENV = "SSLZOO_HUB_NAMESPACE"

Kind = Literal["encoder", "segmenter"]
_NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
NAME_FORMAT = (
    "<method>-<backbone>-<dataset> (encoder) or <method>-<backbone>-<dataset>-<task> (segmenter), "
    "e.g. densecl-resnet50-monuseg or densecl-resnet50-monuseg-instance"
)


class ZooName(BaseModel):
    """A parsed zoo entry name."""

    model_config = ConfigDict(frozen=True)

    method: str
    backbone: str
    dataset: str
    task: Literal["semantic", "instance"] | None = None

    @property
    def kind(self) -> Kind:
        return "encoder" if self.task is None else "segmenter"

    @property
    def name(self) -> str:
        parts = [self.method, self.backbone, self.dataset] + ([self.task] if self.task else [])
        return "-".join(parts)

    @property
    def encoder_name(self) -> str:
        """The encoder entry this name is built on (itself for an encoder)."""
        return f"{self.method}-{self.backbone}-{self.dataset}"

    def repo_id(self, namespace: str | None = None) -> str:
        return f"{hub_namespace(namespace)}/{self.name}"

    def __str__(self) -> str:
        return self.name


def _choice_error(what: str, value: str, name: str, choices: tuple[str, ...]) -> ConfigError:
    return ConfigError(f"unknown {what} {value!r} in zoo name {name!r}; choose one of {', '.join(choices)}")


def parse_name(name: str) -> ZooName:
    """Parse ``<method>-<backbone>-<dataset>[-<task>]``; :class:`ConfigError` says which part is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"empty zoo name; zoo names are {NAME_FORMAT}")
    if "/" in name:
        raise ConfigError(f"{name!r} is a repo id, not a zoo name; pass the part after the '/' or use split_repo_id")
    if name in ALIASES:
        raise ConfigError(f"{name!r} is a served alias, not a zoo name; resolve it with sslzoo.hub.defaults first")
    parts = name.split("-")
    if len(parts) not in (3, 4):
        raise ConfigError(f"malformed zoo name {name!r} ({len(parts)} parts); zoo names are {NAME_FORMAT}")
    method, backbone, dataset = parts[:3]
    task = parts[3] if len(parts) == 4 else None
    if method not in METHODS:
        raise _choice_error("method", method, name, METHODS)
    if backbone not in BACKBONES:
        raise _choice_error("backbone", backbone, name, BACKBONES)
    if dataset not in DATASETS:
        raise _choice_error("dataset", dataset, name, DATASETS)
    if task is not None and task not in TASKS:
        raise _choice_error("task", task, name, TASKS)
    return ZooName(method=method, backbone=backbone, dataset=dataset, task=task)


def is_zoo_name(name: str) -> bool:
    """True when ``name`` parses as a zoo entry name."""
    try:
        parse_name(name)
    except ConfigError:
        return False
    return True


def hub_namespace(namespace: str | None = None) -> str:
    """The Hub namespace: the argument, else ``$SSLZOO_HUB_NAMESPACE``, else ``sslzoo``."""
    value = namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
    if not _NAMESPACE_PATTERN.match(value):
        raise ConfigError(
            f"invalid Hub namespace {value!r} (from {'the argument' if namespace else NAMESPACE_ENV}); "
            "use a user or organisation name such as 'sslzoo'"
        )
    return value


def split_repo_id(spec: str) -> tuple[str | None, str]:
    """``"ns/name"`` -> ``("ns", "name")``; ``"name"`` -> ``(None, "name")``."""
    if spec.count("/") > 1 or spec.startswith("/") or spec.endswith("/"):
        raise ConfigError(f"invalid repo id {spec!r}; expected NAMESPACE/NAME, e.g. sslzoo/densecl-resnet50-monuseg")
    if "/" in spec:
        namespace, name = spec.split("/")
        return hub_namespace(namespace), name
    return None, spec


def repo_id_for(name: str, namespace: str | None = None) -> str:
    """Hub repo id ``<namespace>/<entry>`` of a zoo name (validated)."""
    return parse_name(name).repo_id(namespace)


def planned_names(backbone: str = "resnet50") -> list[str]:
    """Every (method, dataset) encoder and its fine-tuned segmenter that the zoo aims to publish."""
    task_of = {"isic2017": "semantic", "monuseg": "instance", "dsb2018": "instance"}
    names: list[str] = []
    for dataset, task in task_of.items():
        names += [f"{m}-{backbone}-{dataset}" for m in SSL_METHODS]
        names += [f"{m}-{backbone}-{dataset}-{task}" for m in METHODS]
    return names
