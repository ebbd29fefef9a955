"""Embedded default models: which zoo entries ship inside the package, and where.

The packaged defaults live in ``sslzoo/zoo/<entry>/`` (one folder per zoo entry, the same files as
its Hub repo: fp16 weights, config, model card; made with ``sslzoo zoo package``).
``$SSLZOO_DEFAULTS_DIR`` points elsewhere (tests, a Docker image that bakes models into another
folder). How each default was trained and scored is in its card (``model_cards/<entry>.md``) and
in ``docs/zoo/defaults.md``.

The served aliases map onto zoo entries (:data:`ALIAS_TARGETS`); ``evaluate`` is a service and
has no model.
"""

from __future__ import annotations

import os
from pathlib import Path

from sslzoo.errors import ConfigError, NotFoundError
from sslzoo.hub.names import parse_name
from sslzoo.vocabulary import ALIAS_INFO, SERVICE_ALIASES

DEFAULTS_ENV = "SSLZOO_DEFAULTS_DIR"
#: Where embedded defaults live inside the installed package.
PACKAGED_DEFAULTS_DIR = Path(__file__).resolve().parents[1] / "zoo"

#: Served alias -> the zoo entry it stands for (CONTRACTS.md section 1).
ALIAS_TARGETS: dict[str, str] = {
    "nuclei": "densecl-resnet18-monuseg-instance",  # H&E nuclei, instance (distance map + watershed)
    "lesion": "densecl-resnet18-isic2017-semantic",  # dermoscopy lesions, semantic
    "embed": "densecl-resnet18-monuseg",  # encoder embeddings
}


def defaults_dir() -> Path:
    """The folder holding embedded defaults: ``$SSLZOO_DEFAULTS_DIR`` or ``sslzoo/zoo``."""
    override = os.environ.get(DEFAULTS_ENV)
    return Path(override) if override else PACKAGED_DEFAULTS_DIR


def resolve_alias(name: str) -> str:
    """The zoo entry behind a served alias; other names are returned unchanged."""
    if name in SERVICE_ALIASES:
        raise ConfigError(f"{name!r} is a service ({ALIAS_INFO[name].description}), not a model; it needs no weights")
    return ALIAS_TARGETS.get(name, name)


def packaged_folder(name: str) -> Path | None:
    """The embedded folder of zoo entry (or alias) ``name``, or ``None`` when it is not embedded."""
    folder = defaults_dir() / resolve_alias(name)
    return folder if folder.is_dir() and any(folder.iterdir()) else None


def packaged_names() -> list[str]:
    """Zoo entries embedded in the defaults folder (folders whose name parses as a zoo name)."""
    root = defaults_dir()
    if not root.is_dir():
        return []
    names = []
    for child in sorted(root.iterdir()):
        try:
            parse_name(child.name)
        except ConfigError:
            continue
        if child.is_dir() and any(child.iterdir()):
            names.append(child.name)
    return names


def require_default(alias: str) -> Path:
    """The embedded folder behind a served alias; :class:`NotFoundError` explains when it is absent."""
    entry = resolve_alias(alias)
    folder = packaged_folder(entry)
    if folder is None:
        raise NotFoundError(
            f"no embedded default model for {alias!r} (zoo entry {entry!r}) in {defaults_dir()}: the defaults are "
            f"not trained yet or were not installed; run 'sslzoo pull {entry}' (needs the Hub or a filled HF cache), "
            f"or set {DEFAULTS_ENV} to a folder holding {entry}/"
        )
    return folder
