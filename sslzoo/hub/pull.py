"""``sslzoo pull``: fetch a zoo entry into the Hugging Face cache and check every file's sha256.

Files come through ``huggingface_hub`` (``hf_hub_download`` for registry entries, whose file list
is known; ``snapshot_download`` for other repos), so the usual settings apply: ``HF_ENDPOINT``
(a mirror), ``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE=1`` (no network: the
files must already be cached). Registry entries are pinned: their revision is the registry's
(normally a commit sha) and each file must match the registry's sha256, else it is removed from
the cache and refused. An entry embedded in the package (:mod:`sslzoo.hub.defaults`) needs no
download: pulling it (or its alias) reports the packaged folder.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from pydantic import BaseModel

from sslzoo.errors import ConfigError, DataError, NotFoundError
from sslzoo.hub.defaults import packaged_folder, resolve_alias
from sslzoo.hub.files import file_hashes, sha256_file
from sslzoo.hub.names import hub_namespace, is_zoo_name, parse_name, split_repo_id
from sslzoo.hub.registry import ZooEntry, get_entry

_TRUE = {"1", "true", "yes", "on"}


class PullResult(BaseModel):
    """What :func:`pull` fetched."""

    name: str
    repo_id: str
    revision: str
    commit: str | None
    folder: Path
    files: dict[str, str]
    verified: bool
    where: str  # "packaged" (embedded in sslzoo), "cached" (no download needed) or "hub"


def hub_endpoint(endpoint: str | None = None) -> str | None:
    """The Hub URL: the argument, else ``$HF_ENDPOINT`` read now (``huggingface_hub`` reads it at import)."""
    value = endpoint or os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as set now, or as ``huggingface_hub`` read it at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    return env.strip().lower() in _TRUE if env is not None else bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir(cache_dir: str | Path | None = None) -> str | None:
    value = cache_dir or os.environ.get("HF_HUB_CACHE")
    return str(value) if value else None


def pull(
    name: str,
    *,
    revision: str | None = None,
    out: str | Path | None = None,
    namespace: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> PullResult:
    """Fetch zoo entry, alias or repo id ``name`` into the HF cache (cache first, then the Hub).

    Registry entries are checked file by file against their sha256; a mismatch raises
    :class:`DataError` and the bad file is removed from the cache. An embedded default (no ``revision``
    asked for) is not downloaded: the result points at its packaged folder (``where="packaged"``).
    ``out`` copies the files there.
    """
    spec = resolve_alias(name)
    repo_namespace, entry_name = split_repo_id(spec)
    entry = get_entry(entry_name, namespace=repo_namespace or namespace)
    embedded = repo_namespace is None and revision is None and is_zoo_name(entry_name)
    packaged = packaged_folder(entry_name) if embedded else None
    if packaged is not None:
        result = _packaged_result(entry_name, packaged, entry, namespace)
    elif entry is None and repo_namespace is None:
        parse_name(entry_name)  # a clear error for malformed names
        raise NotFoundError(
            f"{entry_name!r} is not published: it has no entry in the zoo registry ('sslzoo zoo list --all' shows "
            f"planned ones); pass a repo id NAMESPACE/{entry_name} to fetch an unlisted repo without verification"
        )
    else:
        repo_id = entry.repo_id if entry else f"{hub_namespace(repo_namespace)}/{entry_name}"
        if entry is not None and not entry.files:
            raise ConfigError(
                f"registry entry {entry.name!r} lists no files; record it again with 'sslzoo publish --record'"
            )
        if entry is not None:
            result = _pull_entry(entry, repo_id, revision, endpoint, cache_dir, token)
        else:
            result = _pull_snapshot(entry_name, repo_id, revision or "main", endpoint, cache_dir, token)
    if out is not None:
        result = result.model_copy(update={"folder": _copy_files(result.folder, result.files, Path(out))})
    return result


def _packaged_result(name: str, folder: Path, entry: ZooEntry | None, namespace: str | None) -> PullResult:
    """The embedded folder of ``name`` as a pull result; verified when the registry pins the same hashes."""
    files = file_hashes(folder)
    return PullResult(
        name=name,
        repo_id=entry.repo_id if entry else f"{hub_namespace(namespace)}/{name}",
        revision=entry.revision if entry else "packaged",
        commit=None,
        folder=folder,
        files=files,
        verified=entry is not None and entry.files == files,
        where="packaged",
    )


def _download_errors() -> tuple[type[Exception], ...]:
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    return (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError)


def _explain(exc: Exception, repo_id: str, revision: str, endpoint: str | None) -> Exception:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}"
    if isinstance(exc, RepositoryNotFoundError):
        return NotFoundError(f"repo {repo_id} not found on {endpoint or 'the Hub'} (or it is private: set HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return NotFoundError(f"revision {revision!r} not found in {repo_id}; check --revision")
    if isinstance(exc, EntryNotFoundError):
        return NotFoundError(f"{where}: a file listed in the zoo registry is missing from the repo ({exc})")
    if isinstance(exc, LocalEntryNotFoundError) or offline_mode():
        return NotFoundError(
            f"{where} is not in the Hugging Face cache and the Hub cannot be reached "
            f"({'HF_HUB_OFFLINE=1' if offline_mode() else type(exc).__name__}); run 'sslzoo pull' once with network "
            "access (or HF_ENDPOINT pointing at a mirror), or copy a filled HF cache (HF_HOME) to this machine"
        )
    return DataError(f"cannot download {where} from {endpoint or 'the Hub'}: {type(exc).__name__}: {exc}")


def _pull_entry(
    entry: ZooEntry, repo_id: str, revision: str | None, endpoint: str | None, cache_dir, token
) -> PullResult:
    from huggingface_hub import hf_hub_download

    pinned = revision is None or revision == entry.revision
    revision = revision or entry.revision
    if not pinned:
        warnings.warn(
            f"{entry.name}: revision {revision!r} is not the registry's pinned {entry.revision!r}; "
            "its files are NOT checked against the registry's sha256",
            stacklevel=3,
        )
    common = {
        "repo_id": repo_id,
        "revision": revision,
        "cache_dir": hub_cache_dir(cache_dir),
        "endpoint": hub_endpoint(endpoint),
        "token": token,
    }
    paths: dict[str, Path] = {}
    where = "cached"
    for filename in entry.files:
        try:
            paths[filename] = Path(hf_hub_download(filename=filename, local_files_only=True, **common))
            continue
        except _download_errors():
            pass
        if offline_mode():
            raise _explain(LookupError("offline"), repo_id, revision, endpoint)
        where = "hub"
        try:
            paths[filename] = Path(hf_hub_download(filename=filename, **common))
        except _download_errors() as exc:
            raise _explain(exc, repo_id, revision, endpoint) from exc
    hashes = {filename: sha256_file(path) for filename, path in paths.items()}
    if pinned:
        for filename, expected in entry.files.items():
            if hashes[filename] != expected:
                _evict(paths[filename])
                raise DataError(
                    f"{repo_id}@{revision}: {filename} has sha256 {hashes[filename]}, but the zoo registry pins "
                    f"{expected}; the file was altered or corrupted, so it was removed from the cache and not used. "
                    "Pull again; if it persists, the repo was changed after publishing: do not use it"
                )
    first = next(iter(paths))
    folder = _snapshot_root(paths[first], first)
    return PullResult(
        name=entry.name,
        repo_id=repo_id,
        revision=revision,
        commit=folder.name,
        folder=folder,
        files=hashes,
        verified=pinned,
        where=where,
    )


def _pull_snapshot(name: str, repo_id: str, revision: str, endpoint: str | None, cache_dir, token) -> PullResult:
    from huggingface_hub import snapshot_download

    warnings.warn(
        f"{repo_id} is not in the zoo registry: its files are not checked against pinned sha256", stacklevel=3
    )
    common = {
        "repo_id": repo_id,
        "revision": revision,
        "cache_dir": hub_cache_dir(cache_dir),
        "endpoint": hub_endpoint(endpoint),
        "token": token,
    }
    where = "cached"
    try:
        folder = Path(snapshot_download(local_files_only=True, **common))
    except _download_errors():
        if offline_mode():
            raise _explain(LookupError("offline"), repo_id, revision, endpoint) from None
        where = "hub"
        try:
            folder = Path(snapshot_download(**common))
        except _download_errors() as exc:
            raise _explain(exc, repo_id, revision, endpoint) from exc
    files = file_hashes(folder)
    return PullResult(
        name=name,
        repo_id=repo_id,
        revision=revision,
        commit=folder.name,
        folder=folder,
        files=files,
        verified=False,
        where=where,
    )


def _snapshot_root(path: Path, filename: str) -> Path:
    """``.../snapshots/<commit>`` from the cached path of ``filename`` inside it."""
    root = path
    for _ in Path(filename).parts:
        root = root.parent
    return root


def _evict(path: Path) -> None:
    """Remove a cached file: the snapshot link and the blob it points to."""
    blob = path.resolve()
    for p in {path, blob}:
        p.unlink(missing_ok=True)


def _copy_files(folder: Path, files: dict[str, str], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for filename in files:
        target = out / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / filename, target)
    return out
