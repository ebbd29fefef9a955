"""Build a TorchServe model store (``no-archive`` format) from segmenter / encoder folders or zoo names.

Each entry ``<store>/<name>/`` holds ``MAR-INF/MANIFEST.json`` (written with torch-model-archiver's
own manifest generator), the handler file from ``handlers/``, the model folder ``model/`` (copied, or
saved from a zoo entry), and ``sslzoo_model.json`` (:class:`~sslzoo.serving.schemas.ServedModel`)
telling the handler what to load. Every model is loaded once while building, so a broken folder is
reported here with a clear message instead of as a crashing TorchServe worker.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sslzoo.errors import ConfigError, DataError, NotFoundError, SslzooError
from sslzoo.serving.adapter import SPEC_FILE
from sslzoo.serving.ranking import RANK
from sslzoo.serving.schemas import ServedModel
from sslzoo.serving.services import EVALUATE, EmbeddingService, SegmentationService

if TYPE_CHECKING:
    from sslzoo.hub.resolve import ResolvedModel

#: Handler file per model kind (in ``handlers/``).
HANDLER_FILES: dict[str, str] = {
    "segmenter": "segmentation.py",
    "encoder": "embedding.py",
    "evaluate": "evaluation.py",
    "rank": "ranking.py",
}
#: Model-store entries that are services without a model of their own.
SERVICES = (EVALUATE, RANK)
MODEL_FOLDER = "model"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def handlers_dir() -> Path:
    """``$SSLZOO_HANDLERS_DIR``, else ``handlers/`` beside the sslzoo package (source checkout), else ``./handlers``."""
    import sslzoo

    candidates = []
    if os.environ.get("SSLZOO_HANDLERS_DIR"):
        candidates.append(Path(os.environ["SSLZOO_HANDLERS_DIR"]))
    candidates += [Path(sslzoo.__file__).resolve().parents[1] / "handlers", Path.cwd() / "handlers"]
    for folder in candidates:
        if all((folder / name).is_file() for name in HANDLER_FILES.values()):
            return folder
    raise NotFoundError(
        "cannot find the TorchServe handlers (handlers/segmentation.py, embedding.py, evaluation.py, ranking.py); "
        "run from the sslzoo source tree or set SSLZOO_HANDLERS_DIR to that folder"
    )


def parse_model_args(items: list[str] | None) -> dict[str, str]:
    """``["name=PATH", "PATH", "zoo-name"]`` → ``{name: source}``; a bare path is named after its folder."""
    models: dict[str, str] = {}
    for item in items or []:
        name, sep, source = item.partition("=")
        if not sep:
            source = item
            name = Path(item.rstrip("/")).name if Path(item).exists() else item
        name, source = name.strip(), source.strip()
        if not _NAME.match(name):
            raise ConfigError(
                f"bad model name {name!r} in {item!r}; use letters, digits, '-', '_' or '.' (e.g. nuclei=PATH)"
            )
        if not source:
            raise ConfigError(f"no model path after '=' in {item!r}; write NAME=PATH")
        if name in models:
            raise ConfigError(f"model name {name!r} given twice")
        models[name] = source
    return models


def default_models() -> dict[str, str]:
    """The embedded defaults ``nuclei``, ``lesion``, ``embed`` (resolved by ``sslzoo.hub``), ``evaluate`` and
    ``rank``."""
    from sslzoo.hub.defaults import ALIAS_TARGETS

    return {**{alias: alias for alias in ALIAS_TARGETS}, EVALUATE: EVALUATE, RANK: RANK}


def _write_manifest(entry: Path, name: str, handler: str) -> None:
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging_utils import ModelExportUtils

    config = ModelArchiverConfig(model_name=name, handler=handler, version="1.0", archive_format="no-archive")
    (entry / "MAR-INF").mkdir(parents=True, exist_ok=True)
    (entry / "MAR-INF" / "MANIFEST.json").write_text(ModelExportUtils.generate_manifest_json(config))


def _save_model(resolved: ResolvedModel, target: Path) -> str | None:
    """Copy the resolved model folder into ``target`` and load it back (validation); returns a segmenter's task.

    A zoo name or alias was resolved to its local folder (embedded default, HF cache, or pulled now), so every
    model is copied as stored: compact fp16 entries stay fp16.
    """
    if resolved.path is None or not resolved.path.is_dir():
        raise ConfigError(
            f"{resolved.spec!r} is not a model folder; serve a folder made by 'sslzoo pretrain' / 'sslzoo finetune' "
            "or a zoo name"
        )
    shutil.copytree(resolved.path, target)
    if resolved.kind == "segmenter":
        return SegmentationService.load("check", target, "cpu").task
    EmbeddingService.load("check", target, "cpu")
    return None


def _resolve(name: str, source: str) -> ResolvedModel:
    """The model behind ``source`` (:func:`sslzoo.hub.resolve_model`), its errors naming the served ``name``."""
    from sslzoo.hub.resolve import resolve_model

    try:
        return resolve_model(source)
    except SslzooError as exc:
        raise type(exc)(f"model {name!r} ({source}): {exc}") from exc


def build_model_store(
    models: Mapping[str, str], store: str | Path, max_pixels: int | None = None
) -> dict[str, ServedModel]:
    """Write one store entry per ``{name: source}`` (source: folder, zoo name, alias, ``evaluate`` or ``rank``).

    ``evaluate`` entries can run every segmenter of the same store. Raises
    :class:`~sslzoo.errors.SslzooError` subclasses naming the model that failed.
    """
    if not models:
        raise ConfigError("no models to serve; pass --models NAME=PATH ...")
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    handlers = handlers_dir()
    specs: dict[str, ServedModel] = {}
    for name, source in models.items():
        if not _NAME.match(name):
            raise ConfigError(f"bad model name {name!r}; use letters, digits, '-', '_' or '.'")
        resolved = None if source in SERVICES else _resolve(name, source)
        kind = source if resolved is None else resolved.kind
        entry = store / name
        if entry.exists():
            shutil.rmtree(entry)
        entry.mkdir(parents=True)
        task = None
        if resolved is not None:
            try:
                task = _save_model(resolved, entry / MODEL_FOLDER)
            except SslzooError as exc:
                shutil.rmtree(entry, ignore_errors=True)
                raise type(exc)(f"model {name!r} ({source}): {exc}") from exc
            except Exception as exc:
                shutil.rmtree(entry, ignore_errors=True)
                detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
                raise DataError(
                    f"model {name!r} ({source}) cannot be loaded ({detail}); check that the folder was written by "
                    "'sslzoo finetune' / 'sslzoo pretrain' and is complete"
                ) from exc
        specs[name] = ServedModel(
            name=name,
            kind=kind,
            task=task,
            folder=MODEL_FOLDER if kind not in SERVICES else None,
            max_pixels=max_pixels,
        )
        handler = HANDLER_FILES[kind]
        shutil.copy2(handlers / handler, entry / handler)
        _write_manifest(entry, name, handler)
    segmenters = {
        name: str((store / name / MODEL_FOLDER).resolve()) for name, spec in specs.items() if spec.kind == "segmenter"
    }
    for name, spec in specs.items():
        if spec.kind == EVALUATE:
            spec.segmenters = segmenters
        (store / name / SPEC_FILE).write_text(spec.model_dump_json(indent=2) + "\n")
    return specs
