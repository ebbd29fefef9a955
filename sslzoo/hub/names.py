"""Hub names (CONTRACTS.md section 1): namespaces, repo ids and the entries the zoo plans to publish.

- Hub repo id: ``<namespace>/<entry>``; the namespace is ``sslzoo`` unless the argument or the
  environment variable ``SSLZOO_HUB_NAMESPACE`` says otherwise.

The zoo-name grammar itself (``<method>-<backbone>-<dataset>[-<task>]``, :func:`parse_name`,
:class:`ZooName`) and the served aliases live in :mod:`sslzoo.vocabulary`; they are imported here
for the hub modules. This module is light (no torch) so that the CLI can import it for ``--help``.
"""

from __future__ import annotations

import os
import re

from sslzoo.errors import ConfigError
from sslzoo.vocabulary import (
    DATASET_TASKS,
    INITS,
    METHODS,
    NAME_FORMAT,
    ZooName,
    encoder_name,
    is_zoo_name,
    parse_name,
    segmenter_name,
)
from sslzoo.vocabulary import ZooKind as Kind

__all__ = [
    "DEFAULT_NAMESPACE",
    "NAMESPACE_ENV",
    "NAME_FORMAT",
    "Kind",
    "ZooName",
    "hub_namespace",
    "is_zoo_name",
    "parse_name",
    "planned_names",
    "repo_id_for",
    "split_repo_id",
]

DEFAULT_NAMESPACE = "sslzoo"
NAMESPACE_ENV = "SSLZOO_HUB_NAMESPACE"

_NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


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
    return f"{hub_namespace(namespace)}/{parse_name(name).name}"


def planned_names(backbone: str = "resnet50") -> list[str]:
    """Every (method, dataset) encoder and its fine-tuned segmenter that the zoo aims to publish."""
    names: list[str] = []
    for dataset, task in DATASET_TASKS.items():
        names += [encoder_name(m, backbone, dataset) for m in METHODS]
        names += [segmenter_name(m, backbone, dataset, task) for m in INITS]
    return names
