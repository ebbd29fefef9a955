"""The zoo registry: which entries are published where, pinned to a revision and sha256 per file.

The registry is a JSON file shipped in the package (``sslzoo/hub/registry.json``;
``$SSLZOO_HUB_REGISTRY`` points at another one). ``sslzoo publish --record`` adds the entry it
published. Names resolve, in this order (:func:`locate`):

1. an existing folder path;
2. a served alias (``nuclei``, ``lesion``, ``embed``) -> its zoo entry;
3. the embedded defaults (:mod:`sslzoo.hub.defaults`);
4. the Hugging Face cache, then the Hub (:func:`sslzoo.hub.pull.pull`), every file checked against
   the registry's sha256 before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from sslzoo.errors import ConfigError, DataError
from sslzoo.hub.defaults import packaged_folder, packaged_names, resolve_alias
from sslzoo.hub.names import (
    DEFAULT_NAMESPACE,
    NAMESPACE_ENV,
    Kind,
    hub_namespace,
    parse_name,
    planned_names,
    split_repo_id,
)
from sslzoo.vocabulary import Task

if TYPE_CHECKING:
    from torch import nn

    from sslzoo.models.encoders import EncoderConfig
    from sslzoo.models.segmenter import Segmenter

REGISTRY_ENV = "SSLZOO_HUB_REGISTRY"
_SHA256 = re.compile(r"[0-9a-f]{64}")
PACKAGED_REGISTRY = Path(__file__).with_name("registry.json")

#: Licence identifiers (Hub metadata) of each training dataset; see the datasets' SOURCE.md.
DATASET_LICENCES: dict[str, str] = {
    "monuseg": "cc-by-nc-sa-4.0",
    "isic2017": "cc0-1.0",
    "dsb2018": "cc0-1.0",
    "folder": "other",
}

#: Where an entry's files are: embedded in the package, in the local HF cache, only on the Hub, or not
#: published yet (listed with ``--all``).
Where = Literal["packaged", "cached", "hub", "planned"]


class ZooEntry(BaseModel):
    """One published zoo entry (an encoder or a segmenter)."""

    name: str
    kind: Kind
    method: str
    backbone: str
    dataset: str
    task: Task | None = None
    repo_id: str
    revision: str = Field("main", description="pinned Hub revision: a commit sha (preferred), tag or branch")
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 (hex)")
    licence: str = "other"
    metrics: dict[str, float] = Field(default_factory=dict)
    where: Where = "hub"

    @field_validator("files")
    @classmethod
    def _sha256_hex(cls, files: dict[str, str]) -> dict[str, str]:
        bad = [name for name, digest in files.items() if not _SHA256.fullmatch(digest)]
        if bad:
            raise ValueError(f"files {bad} need a 64-character lower-case hex sha256")
        return files

    @model_validator(mode="after")
    def _consistent(self) -> ZooEntry:
        parsed = parse_name(self.name)
        fields = {
            "kind": parsed.kind,
            "method": parsed.method,
            "backbone": parsed.backbone,
            "dataset": parsed.dataset,
            "task": parsed.task,
        }
        wrong = {k: v for k, v in fields.items() if getattr(self, k) != v}
        if wrong:
            raise ValueError(f"entry {self.name!r} disagrees with its name on {', '.join(sorted(wrong))}")
        return self

    @classmethod
    def from_name(cls, name: str, namespace: str | None = None, **fields: Any) -> ZooEntry:
        """An entry whose kind/method/backbone/dataset/task/repo id/licence follow from its name."""
        parsed = parse_name(name)
        base: dict[str, Any] = {
            "name": parsed.name,
            "kind": parsed.kind,
            "method": parsed.method,
            "backbone": parsed.backbone,
            "dataset": parsed.dataset,
            "task": parsed.task,
            "repo_id": f"{hub_namespace(namespace)}/{parsed.name}",
            "licence": DATASET_LICENCES[parsed.dataset],
        }
        return cls(**{**base, **fields})

    def with_namespace(self, namespace: str | None) -> ZooEntry:
        """The same entry under another Hub namespace (a mirror organisation); pins and hashes are kept."""
        if namespace is None:
            return self
        return self.model_copy(update={"repo_id": f"{hub_namespace(namespace)}/{self.name}"})


class Registry(BaseModel):
    """The registry file: ``{"namespace": ..., "entries": [ZooEntry, ...]}``."""

    namespace: str = DEFAULT_NAMESPACE
    entries: list[ZooEntry] = Field(default_factory=list)

    def get(self, name: str) -> ZooEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def get_by_repo_id(self, repo_id: str) -> ZooEntry | None:
        return next((e for e in self.entries if e.repo_id == repo_id), None)


def registry_path(path: str | Path | None = None) -> Path:
    """The registry file in use: the argument, else ``$SSLZOO_HUB_REGISTRY``, else the packaged one."""
    return Path(path or os.environ.get(REGISTRY_ENV) or PACKAGED_REGISTRY)


def load_registry(path: str | Path | None = None) -> Registry:
    """Read and validate the registry; a missing file is an empty registry."""
    file = registry_path(path)
    if not file.is_file():
        if path is not None or os.environ.get(REGISTRY_ENV):
            raise ConfigError(f"zoo registry {file} does not exist; create it with 'sslzoo publish --record {file}'")
        return Registry()
    try:
        return Registry.model_validate(json.loads(file.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        detail = " ".join(str(exc).split())[:400]
        raise ConfigError(f"zoo registry {file} is malformed ({detail}); fix or restore the file") from exc


def save_registry(registry: Registry, path: str | Path | None = None) -> Path:
    file = registry_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    entries = sorted(registry.entries, key=lambda e: e.name)
    data = registry.model_copy(update={"entries": entries}).model_dump(
        mode="json", exclude={"entries": {"__all__": {"where"}}}
    )
    file.write_text(json.dumps(data, indent=2) + "\n")
    return file


def record_entry(entry: ZooEntry, path: str | Path | None = None) -> Path:
    """Add ``entry`` to the registry file, replacing an entry of the same name."""
    registry = load_registry(path) if registry_path(path).is_file() else Registry()
    registry.entries = [e for e in registry.entries if e.name != entry.name] + [entry]
    return save_registry(registry, path)


def get_entry(name: str, namespace: str | None = None, registry: Registry | None = None) -> ZooEntry | None:
    """The registry entry of zoo name or alias ``name`` (repo id moved to ``namespace`` if given)."""
    registry = registry or load_registry()
    entry = registry.get(resolve_alias(name))
    namespace = namespace or os.environ.get(NAMESPACE_ENV)
    return entry.with_namespace(namespace) if entry else None


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _is_cached(entry: ZooEntry, cache_dir: str | Path | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    if not entry.files:
        return False
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE")
    return all(
        isinstance(try_to_load_from_cache(entry.repo_id, f, cache_dir=cache_dir, revision=entry.revision), str)
        for f in entry.files
    )


def _entry_from_folder(name: str, folder: Path, namespace: str | None) -> ZooEntry:
    from sslzoo.hub.publish import file_hashes

    metrics: dict[str, float] = {}
    segmenter_json = folder / "segmenter.json"
    if segmenter_json.is_file():
        metrics = {
            k: float(v)
            for k, v in json.loads(segmenter_json.read_text()).get("metrics", {}).items()
            if isinstance(v, int | float)
        }
    return ZooEntry.from_name(name, namespace, files=file_hashes(folder), metrics=metrics, where="packaged")


def list_entries(
    include_planned: bool = False, namespace: str | None = None, cache_dir: str | Path | None = None
) -> list[ZooEntry]:
    """Every known entry with ``where`` filled in: packaged defaults, registry entries, and (optionally) the
    planned but unpublished names."""
    registry = load_registry()
    entries: dict[str, ZooEntry] = {}
    for entry in registry.entries:
        entry = entry.with_namespace(namespace or os.environ.get(NAMESPACE_ENV))
        where: Where = "cached" if _is_cached(entry, cache_dir) else "hub"
        entries[entry.name] = entry.model_copy(update={"where": where})
    for name in packaged_names():
        folder = packaged_folder(name)
        assert folder is not None
        known = entries.get(name)
        entries[name] = (
            known.model_copy(update={"where": "packaged"}) if known else _entry_from_folder(name, folder, namespace)
        )
    if include_planned:
        for name in planned_names():
            entries.setdefault(name, ZooEntry.from_name(name, namespace, where="planned"))
    order = {"packaged": 0, "cached": 1, "hub": 2, "planned": 3}
    return sorted(entries.values(), key=lambda e: (order[e.where], e.kind, e.dataset, e.name))


def locate(
    name_or_path: str | Path,
    *,
    namespace: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """A local folder holding the model ``name_or_path`` names (see the module docstring for the order)."""
    spec = str(name_or_path)
    if Path(spec).exists():
        if not Path(spec).is_dir():
            raise DataError(f"{spec}: expected a model folder (model.safetensors + config.json), got a file")
        return Path(spec)
    name = resolve_alias(spec)
    if "/" not in name:
        folder = packaged_folder(name)
        if folder is not None:
            return folder
    from sslzoo.hub.pull import pull

    return pull(name, revision=revision, namespace=namespace, cache_dir=cache_dir, endpoint=endpoint).folder


def load_encoder(
    name_or_path: str | Path, *, namespace: str | None = None, revision: str | None = None
) -> tuple[nn.Module, EncoderConfig]:
    """Encoder + :class:`EncoderConfig` from a folder, an alias or a zoo name (packaged -> cache -> Hub)."""
    from sslzoo.models.encoders import CONFIG_FILE, EncoderConfig
    from sslzoo.models.encoders import load_encoder as load_encoder_folder

    spec = str(name_or_path)
    _check_kind(spec, "encoder")
    folder = locate(spec, namespace=namespace, revision=revision)
    if (folder / "segmenter.json").is_file():
        raise ConfigError(f"{spec} is a segmenter, not an encoder; use load_segmenter, or name its encoder entry")
    if not (folder / CONFIG_FILE).is_file():
        raise DataError(f"{folder}: no {CONFIG_FILE}; an encoder folder holds model.safetensors + {CONFIG_FILE}")
    encoder, config = load_encoder_folder(folder)
    assert isinstance(config, EncoderConfig)  # CONFIG_FILE exists, so it was read
    return encoder, config


def load_segmenter(
    name_or_path: str | Path, *, device: str = "cpu", namespace: str | None = None, revision: str | None = None
) -> Segmenter:
    """:class:`~sslzoo.models.segmenter.Segmenter` from a folder, an alias or a zoo name."""
    from sslzoo.models.segmenter import Segmenter

    spec = str(name_or_path)
    _check_kind(spec, "segmenter")
    return Segmenter.from_pretrained(locate(spec, namespace=namespace, revision=revision), device=device)


def _check_kind(spec: str, wanted: Kind) -> None:
    """Refuse early when a zoo name (or alias) names the other kind of model, or is no name at all.

    A repo id ``NAMESPACE/NAME`` may have any name; it is checked only when its name is a zoo name.
    """
    if Path(spec).exists():
        return
    namespace, entry_name = split_repo_id(resolve_alias(spec))
    try:
        parsed = parse_name(entry_name)
    except ConfigError as exc:
        if namespace is not None:
            return
        raise ConfigError(
            f"unknown {wanted} {spec!r}: not a folder, alias or zoo name ({exc}); "
            "'sslzoo zoo list' shows the published entries"
        ) from exc
    if parsed.kind != wanted:
        hint = f"; its encoder entry is {parsed.encoder_name}" if parsed.kind == "segmenter" else ""
        raise ConfigError(f"{spec!r} names {_a(parsed.kind)}, but {_a(wanted)} is needed{hint}")


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"
