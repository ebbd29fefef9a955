"""The zoo registry: which entries are published where, pinned to a revision and sha256 per file.

The registry is a JSON file shipped in the package (``sslzoo/hub/registry.json``;
``$SSLZOO_HUB_REGISTRY`` points at another one). ``sslzoo publish --record`` adds the entry it
published. How a name becomes a model (folder, alias, embedded default, cache, Hub) is
:mod:`sslzoo.hub.resolve`; this module only reads and writes the registry and lists the entries.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from sslzoo.errors import ConfigError
from sslzoo.hub.defaults import ALIAS_TARGETS, packaged_folder, packaged_names, resolve_alias
from sslzoo.hub.files import file_hashes
from sslzoo.hub.names import (
    DEFAULT_NAMESPACE,
    NAMESPACE_ENV,
    Kind,
    hub_namespace,
    parse_name,
    planned_names,
)
from sslzoo.hub.zoo_folder import zoo_folder_entries
from sslzoo.vocabulary import Task

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
Where = Literal["packaged", "zoo-folder", "cached", "hub", "planned"]


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
    aliases: list[str] = Field(default_factory=list, description="served aliases naming this entry (not stored)")

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
        mode="json", exclude={"entries": {"__all__": {"where", "aliases"}}}
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


def _is_cached(entry: ZooEntry, cache_dir: str | Path | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    if not entry.files:
        return False
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE")
    return all(
        isinstance(try_to_load_from_cache(entry.repo_id, f, cache_dir=cache_dir, revision=entry.revision), str)
        for f in entry.files
    )


def _folder_metrics(folder: Path) -> dict[str, float]:
    """A segmenter's scores (``segmenter.json``), or a zoo build's encoder numbers (``entry.json``: NQC, probe)."""
    segmenter_json = folder / "segmenter.json"
    if segmenter_json.is_file():
        return {
            k: float(v)
            for k, v in json.loads(segmenter_json.read_text()).get("metrics", {}).items()
            if isinstance(v, int | float)
        }
    entry_json = folder / "entry.json"
    if not entry_json.is_file():
        return {}
    record = json.loads(entry_json.read_text())
    metrics: dict[str, float] = {}
    if isinstance((record.get("nqc") or {}).get("nqc"), int | float):
        metrics["nqc"] = float(record["nqc"]["nqc"])
    probe = record.get("probe") or {}
    if isinstance(probe.get("mean"), int | float):
        metrics[f"probe_{probe.get('metric', 'score')}"] = float(probe["mean"])
    return metrics


def _entry_from_folder(name: str, folder: Path, namespace: str | None, where: Where = "packaged") -> ZooEntry:
    return ZooEntry.from_name(name, namespace, files=file_hashes(folder), metrics=_folder_metrics(folder), where=where)


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
    for name, built in zoo_folder_entries().items():  # $SSLZOO_ZOO_DIR wins over the HF cache and the Hub
        known = entries.get(name)
        entries[name] = (
            known.model_copy(update={"where": "zoo-folder"})
            if known
            else _entry_from_folder(name, built, namespace, where="zoo-folder")
        )
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
    for alias, target in ALIAS_TARGETS.items():
        if target in entries:
            entries[target] = entries[target].model_copy(update={"aliases": [*entries[target].aliases, alias]})
    order = {"packaged": 0, "zoo-folder": 1, "cached": 2, "hub": 3, "planned": 4}
    return sorted(entries.values(), key=lambda e: (order[e.where], e.kind, e.dataset, e.name))
