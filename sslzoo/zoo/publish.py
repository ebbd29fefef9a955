"""``publish_zoo``: push every finished entry of a zoo folder to the Hub and record it in a zoo registry.

Each entry folder's model files (``model.safetensors``, ``config.json``, ``README.md`` and, for segmenters,
``segmenter.json``; never the build state) are copied to a clean staging folder and uploaded with
:func:`sslzoo.hub.publish.publish` to ``<namespace>/<entry>``. The registry (``sslzoo/hub/registry.py``'s format:
name, repo id, pinned commit, sha256 per file) gets one entry per upload, so ``sslzoo pull NAME`` works with it.
An entry whose registry record already pins the same files under the same repo is not uploaded again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel

from sslzoo.errors import NotFoundError
from sslzoo.hub.zoo_folder import ENCODER_CONFIG, SEGMENTER_CONFIG, WEIGHTS_FILE, zoo_folder_entries

UPLOADED_FILES = (WEIGHTS_FILE, ENCODER_CONFIG, SEGMENTER_CONFIG, "README.md")
PUBLISHED_FILE = "published.json"


class PublishedEntry(BaseModel):
    """One entry of ``DIR/published.json``."""

    name: str
    repo_id: str
    revision: str
    files: dict[str, str]
    uploaded: bool


def staged_copy(folder: Path, staging: Path) -> Path:
    """``staging/<entry>`` holding only the model files of ``folder``."""
    target = staging / folder.name
    target.mkdir(parents=True)
    for name in UPLOADED_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, target / name)
    return target


def publish_zoo(
    zoo_dir: str | Path,
    namespace: str,
    *,
    registry: str | Path | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    force: bool = False,
    report=print,
) -> list[PublishedEntry]:
    """Upload every finished entry of ``zoo_dir`` to ``namespace`` and record it in ``registry`` (default: the
    registry in use, ``$SSLZOO_HUB_REGISTRY`` or the packaged one); writes ``zoo_dir/published.json``."""
    from sslzoo.hub.files import file_hashes
    from sslzoo.hub.names import hub_namespace
    from sslzoo.hub.publish import publish
    from sslzoo.hub.registry import load_registry, registry_path

    namespace = hub_namespace(namespace)
    entries = zoo_folder_entries(zoo_dir)
    if not entries:
        raise NotFoundError(f"{zoo_dir}: no finished zoo entries to publish; run 'sslzoo zoo build' first")
    registry_file = registry_path(registry)
    known = load_registry(registry_file) if registry_file.is_file() else None
    published: list[PublishedEntry] = []
    with tempfile.TemporaryDirectory(prefix="sslzoo-zoo-publish-") as tmp:
        for name, folder in entries.items():
            staged = staged_copy(folder, Path(tmp))
            repo_id = f"{namespace}/{name}"
            hashes = file_hashes(staged)
            previous = known.get(name) if known else None
            if previous is not None and not force and previous.repo_id == repo_id and previous.files == hashes:
                report(f"{name}: already published as {repo_id}@{previous.revision[:12]} (same files)")
                published.append(
                    PublishedEntry(name=name, repo_id=repo_id, revision=previous.revision, files=hashes, uploaded=False)
                )
                continue
            result = publish(staged, repo_id, endpoint=endpoint, token=token, private=private, record=registry_file)
            report(f"{name}: published {repo_id}@{result.commit[:12]} ({len(result.files)} files)")
            published.append(
                PublishedEntry(name=name, repo_id=repo_id, revision=result.commit, files=result.files, uploaded=True)
            )
    summary = {"namespace": namespace, "registry": str(registry_file), "entries": [p.model_dump() for p in published]}
    (Path(zoo_dir) / PUBLISHED_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return published
