"""The model zoo on the Hugging Face Hub: names, registry, model cards, publish, pull and packaging.

:func:`load_encoder` / :func:`load_segmenter` (:mod:`sslzoo.hub.resolve`) turn any spec (baseline,
folder, alias, zoo name, repo id) into a model; :func:`resolve_model` says what a spec names and where it is.

Exports are loaded lazily so that importing ``sslzoo.hub`` (as the CLI does for ``--help``)
does not import torch or ``huggingface_hub``. The upload, download and packaging functions live in
their modules (``sslzoo.hub.publish.publish``, ``sslzoo.hub.pull.pull``, ``sslzoo.hub.package.package``):
a package attribute of the same name as a submodule would be shadowed by it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ZooName": "names",
    "parse_name": "names",
    "is_zoo_name": "names",
    "repo_id_for": "names",
    "hub_namespace": "names",
    "ZooEntry": "registry",
    "Registry": "registry",
    "load_registry": "registry",
    "record_entry": "registry",
    "get_entry": "registry",
    "list_entries": "registry",
    "ResolvedModel": "resolve",
    "resolve_model": "resolve",
    "read_kind": "resolve",
    "locate": "resolve",
    "load_encoder": "resolve",
    "load_segmenter": "resolve",
    "build_card": "cards",
    "card_for_folder": "cards",
    "write_card": "cards",
    "licence_for": "cards",
    "PublishResult": "publish",
    "file_hashes": "files",
    "sha256_file": "files",
    "PullResult": "pull",
    "PackageResult": "package",
    "resolve_alias": "defaults",
    "defaults_dir": "defaults",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sslzoo.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
