"""File hashes of model folders: what publish records, pull verifies and the registry pins."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Never hashed nor uploaded (huggingface_hub skips these too).
IGNORED_PARTS = (".git", ".cache")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(folder: str | Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``folder`` (not ``.git``/``.cache``), sorted."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part in IGNORED_PARTS for part in p.relative_to(folder).parts)
    }
