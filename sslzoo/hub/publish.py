"""``sslzoo publish``: upload a model folder (weights, config, card) to a Hub repo.

Steps: check the folder is an encoder or segmenter export; write its model card (``README.md``)
if it has none; sha256 every file; ``HfApi.create_repo(exist_ok=True)``; create the branch when
``revision`` names one; ``HfApi.upload_folder``. The result pins the new commit and the hashes,
ready to be recorded in the zoo registry (``record=``), which is what ``pull`` verifies against.
``HF_ENDPOINT`` / ``endpoint`` chooses the Hub (or a Hub-compatible server); ``HF_TOKEN`` authenticates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sslzoo.errors import ConfigError, DataError
from sslzoo.hub.cards import CARD_FILE, entry_name_for, read_folder_config, write_card
from sslzoo.hub.files import IGNORED_PARTS, file_hashes
from sslzoo.hub.names import is_zoo_name, split_repo_id
from sslzoo.hub.pull import hub_endpoint, offline_mode
from sslzoo.hub.registry import ZooEntry, record_entry


class PublishResult(BaseModel):
    """What :func:`publish` uploaded."""

    repo_id: str
    revision: str
    commit: str
    commit_url: str
    files: dict[str, str]
    entry: ZooEntry | None
    card_written: bool
    registry: Path | None = None


def needs_card(folder: str | Path) -> bool:
    """True when ``folder`` has no card, or only the stub smp's ``save_pretrained`` writes (tagged
    ``model_hub_mixin``, licence ``mit`` whatever the training data): that one is replaced by a real card."""
    from huggingface_hub import ModelCard

    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return True
    try:
        tags = ModelCard.load(str(path)).data.tags or []
    except Exception:  # an unparsable card is the publisher's own text: keep it
        return False
    return "model_hub_mixin" in tags and "sslzoo" not in tags


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    evaluation: dict[str, Any] | None = None,
    record: str | Path | bool | None = None,
    rewrite_card: bool = False,
) -> PublishResult:
    """Upload ``folder`` to ``repo_id`` (``NAMESPACE/NAME``) and return the pinned commit and file hashes.

    ``record``: ``True`` adds the entry to the registry in use, a path to that registry file.
    The card is written when missing or when it is smp's generic stub (:func:`needs_card`), or always with
    ``rewrite_card``.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; pass the folder written by 'sslzoo pretrain' or 'sslzoo finetune'")
    namespace, name = split_repo_id(repo_id)
    if namespace is None:
        raise ConfigError(f"--repo must be NAMESPACE/NAME, got {repo_id!r} (e.g. sslzoo/densecl-resnet50-monuseg)")
    config = read_folder_config(folder)  # a clear error when this is not a model folder
    entry_name = name if is_zoo_name(name) else None
    if entry_name is not None and entry_name_for(config) != entry_name:
        raise ConfigError(
            f"repo name {name!r} disagrees with the model's config ({entry_name_for(config)}); "
            "publish zoo entries under the name their config implies"
        )
    if record and entry_name is None:
        raise ConfigError(f"only zoo names can be recorded in the registry; {name!r} is not one")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise DataError(f"{folder}: no model.safetensors; export the model again")
    if offline_mode():
        raise ConfigError("cannot publish with HF_HUB_OFFLINE=1; unset it (and set HF_ENDPOINT for a private Hub)")
    card_written = False
    if rewrite_card or needs_card(folder):
        write_card(folder, repo_id=repo_id, evaluation=evaluation)
        card_written = True
    files = file_hashes(folder)

    api = HfApi(endpoint=hub_endpoint(endpoint), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"sslzoo: publish {name}",
            ignore_patterns=[f"{p}/**" for p in IGNORED_PARTS],
        )
    except Exception as exc:  # HTTP, auth and connection errors come in many types
        from huggingface_hub.errors import HfHubHTTPError

        client_error = isinstance(exc, HfHubHTTPError | OSError | ValueError)  # ValueError: metadata refused
        if client_error or type(exc).__module__.startswith(("httpx", "huggingface_hub")):
            raise DataError(
                f"publishing {folder} to {repo_id} on {api.endpoint} failed: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]} (check HF_TOKEN, the repo name and HF_ENDPOINT)"
            ) from exc
        raise

    entry = None
    if entry_name is not None:
        metrics = {k: float(v) for k, v in getattr(config, "metrics", {}).items()}
        if evaluation and isinstance(evaluation.get("mean"), dict):
            metrics = {k: float(v) for k, v in evaluation["mean"].items() if isinstance(v, int | float)}
        entry = ZooEntry.from_name(entry_name, namespace, revision=info.oid, files=files, metrics=metrics)
    registry_file = None
    if record and entry is not None:
        registry_file = record_entry(entry, None if record is True else Path(str(record)))
    return PublishResult(
        repo_id=repo_id,
        revision=revision or "main",
        commit=info.oid,
        commit_url=info.commit_url,
        files=files,
        entry=entry,
        card_written=card_written,
        registry=registry_file,
    )


def load_evaluation(path: str | Path | None) -> dict[str, Any] | None:
    """Read an evaluation JSON (``sslzoo evaluate`` output) or return ``None``."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read evaluation results ({exc}); pass the JSON 'sslzoo evaluate' wrote"
        ) from exc
