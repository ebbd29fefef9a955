"""A zoo folder: the output of ``sslzoo zoo build``, usable for name resolution via ``$SSLZOO_ZOO_DIR``.

Layout of a zoo folder ``DIR`` (one sub-folder per zoo entry, named by its zoo name)::

    DIR/<method>-<backbone>-<dataset>/          encoder: model.safetensors + config.json + README.md
                                                 (+ build state: entry.json, DONE, work/)
    DIR/<method>-<backbone>-<dataset>-<task>/   segmenter (the seed-0 probe): + segmenter.json

``$SSLZOO_ZOO_DIR`` names one or more zoo folders (separated by ``os.pathsep``). This module is torch-free and
imports nothing above the hub layer's names, so that the hub resolver can call :func:`zoo_folder_entries`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sslzoo.hub.names import is_zoo_name

ZOO_DIR_ENV = "SSLZOO_ZOO_DIR"
WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG = "config.json"
SEGMENTER_CONFIG = "segmenter.json"
#: Written last by the build into an encoder entry's folder; a folder with build state but no marker is unfinished.
DONE_MARKER = "DONE"
ENTRY_FILE = "entry.json"
WORK_DIR = "work"


def zoo_dirs(value: str | Path | None = None) -> list[Path]:
    """The zoo folders to search: ``value`` (a path, or several joined by ``os.pathsep``), else ``$SSLZOO_ZOO_DIR``."""
    raw = str(value) if value is not None else os.environ.get(ZOO_DIR_ENV, "")
    return [Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip()]


def is_entry_folder(folder: Path) -> bool:
    """True when ``folder`` is named like a zoo entry and holds a finished model (weights + its config)."""
    if not folder.is_dir() or not is_zoo_name(folder.name) or not (folder / WEIGHTS_FILE).is_file():
        return False
    has_state = (folder / ENTRY_FILE).exists() or (folder / WORK_DIR).is_dir()
    if has_state and not (folder / DONE_MARKER).is_file():
        return False  # an encoder entry whose build has not finished
    return (folder / SEGMENTER_CONFIG).is_file() or (folder / ENCODER_CONFIG).is_file()


def zoo_folder_entries(root: str | Path | None = None) -> dict[str, Path]:
    """``{zoo name: folder}`` of every finished entry in the zoo folder(s) ``root`` (default ``$SSLZOO_ZOO_DIR``).

    With several folders the first one holding a name wins. Missing folders are skipped (an unset variable
    means no zoo folder).
    """
    entries: dict[str, Path] = {}
    for directory in zoo_dirs(root):
        if not directory.is_dir():
            continue
        for child in sorted(directory.iterdir()):
            if child.name not in entries and is_entry_folder(child):
                entries[child.name] = child
    return entries


def find_in_zoo_dirs(name: str, root: str | Path | None = None) -> Path | None:
    """The folder of zoo entry ``name`` in the zoo folder(s) ``root`` / ``$SSLZOO_ZOO_DIR``, or ``None``."""
    for directory in zoo_dirs(root):
        folder = directory / name
        if is_entry_folder(folder):
            return folder
    return None
