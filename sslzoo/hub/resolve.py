"""The one model resolver: a spec → a model folder (or a baseline) and its kind, read from its files.

A spec is, in this order:

1. a baseline initialisation, ``random`` | ``imagenet`` (an encoder without a folder);
2. an existing path: a model folder, or a bare ``.safetensors`` encoder file;
3. a served alias (``nuclei``, ``lesion``, ``embed``; :mod:`sslzoo.hub.defaults`) → its zoo entry;
4. a zoo name (CONTRACTS.md section 1) or a repo id ``NAMESPACE/NAME``: the embedded default when the
   package ships it, else a finished entry of a zoo folder named by ``$SSLZOO_ZOO_DIR`` (the output of
   ``sslzoo zoo build``; :mod:`sslzoo.hub.zoo_folder`), else the Hugging Face cache, else the Hub
   (:func:`sslzoo.hub.pull.pull`, every file of a registry entry checked against its sha256 before use).

The kind is read from the folder, never guessed from the name: ``segmenter.json`` → a segmenter
(its ``task``), else ``config.json`` with an encoder's ``backbone`` / ``method`` (or weights alone)
→ an encoder. A zoo name also fixes the kind (``-semantic`` / ``-instance`` segmenters), which is
checked before anything is downloaded and again against the files. :func:`load_encoder` and
:func:`load_segmenter` are what the CLI, the Python API, serving, fine-tuning and the study call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sslzoo.errors import ConfigError, DataError, NotFoundError
from sslzoo.hub.defaults import packaged_folder, resolve_alias
from sslzoo.hub.names import Kind, parse_name, split_repo_id
from sslzoo.hub.zoo_folder import find_in_zoo_dirs
from sslzoo.vocabulary import BASELINES, Task, is_task

if TYPE_CHECKING:
    from torch import nn

    from sslzoo.models.encoders import EncoderConfig
    from sslzoo.models.segmenter import Segmenter

#: Baseline encoder initialisations (no folder).
BASELINE_SPECS: tuple[str, ...] = BASELINES
#: File names of the model formats (``sslzoo.models``); spelled here so that resolving needs no torch.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SEGMENTER_FILE = "segmenter.json"

#: Where a resolved model came from.
Source = Literal["baseline", "folder", "packaged", "zoo_dir", "cached", "hub"]


@dataclass(frozen=True)
class ResolvedModel:
    """What a spec names: its kind (from its files), where it lives and, for a zoo entry, its name."""

    spec: str
    kind: Kind
    source: Source
    path: Path | None = None  #: the model folder (or ``.safetensors`` file); ``None`` for a baseline
    task: Task | None = None  #: a segmenter's task
    name: str | None = None  #: the zoo entry (aliases resolved); ``None`` for paths and other repos
    baseline: str | None = None  #: ``random`` | ``imagenet`` for a baseline


def read_kind(path: str | Path) -> tuple[Kind, Task | None]:
    """``(kind, task)`` of a model folder from its files (see the module docstring); no torch needed."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".safetensors":
            return "encoder", None
        raise DataError(f"{path}: expected a model folder (model.safetensors + config.json), got a file")
    segmenter_json, config_json = path / SEGMENTER_FILE, path / CONFIG_FILE
    if segmenter_json.is_file():
        task = _read_json(segmenter_json).get("task")
        return "segmenter", task if is_task(task) else None  # loading rejects a bad task
    if config_json.is_file():
        config = _read_json(config_json)
        if "backbone" in config and "method" in config:
            return "encoder", None
        raise DataError(
            f"{path}: {CONFIG_FILE} is not an sslzoo encoder config (no backbone/method) and there is no "
            f"{SEGMENTER_FILE}; pass a folder made by 'sslzoo pretrain' or 'sslzoo finetune'"
        )
    if (path / WEIGHTS_FILE).is_file():
        return "encoder", None  # weights without config: the caller must name the backbone
    raise DataError(
        f"{path}: not a model folder; expected {SEGMENTER_FILE} (segmenter, from 'sslzoo finetune') or "
        f"{WEIGHTS_FILE} + {CONFIG_FILE} (encoder, from 'sslzoo pretrain')"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(("/", ".safetensors"))


def resolve_model(
    spec: str | Path,
    *,
    want: Kind | None = None,
    namespace: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> ResolvedModel:
    """Resolve ``spec`` (see the module docstring); ``want`` refuses the other kind with a clear error.

    Raises :class:`NotFoundError` for a missing path or a name that is neither an alias nor a zoo name
    nor a repo id, :class:`ConfigError` for the wrong kind.
    """
    text = str(spec)
    if text in BASELINE_SPECS:
        if want == "segmenter":
            raise ConfigError(f"{text!r} is an encoder initialisation, but a segmenter is needed")
        return ResolvedModel(spec=text, kind="encoder", source="baseline", baseline=text)
    path = Path(text).expanduser()
    if path.exists():
        kind, task = read_kind(path)
        return _checked(ResolvedModel(spec=text, kind=kind, source="folder", path=path, task=task), want, None)
    if _looks_like_path(text):
        raise NotFoundError(f"{text}: no such model folder")
    name = resolve_alias(text)
    expected = _expected_kind(text, name, want)
    repo_namespace, entry_name = split_repo_id(name)
    folder = packaged_folder(entry_name) if repo_namespace is None and revision is None else None
    source: Source = "packaged"
    if folder is None and repo_namespace is None and revision is None:
        folder, source = find_in_zoo_dirs(entry_name), "zoo_dir"  # $SSLZOO_ZOO_DIR (sslzoo zoo build output)
    if folder is None:
        from sslzoo.hub.pull import pull

        result = pull(name, revision=revision, namespace=namespace, cache_dir=cache_dir, endpoint=endpoint)
        folder, source = result.folder, "hub" if result.where == "hub" else "cached"
    kind, task = read_kind(folder)
    resolved = ResolvedModel(
        spec=text, kind=kind, source=source, path=folder, task=task, name=entry_name if expected else None
    )
    return _checked(resolved, want, expected)


def _expected_kind(spec: str, name: str, want: Kind | None) -> Kind | None:
    """The kind a zoo name fixes (``None`` for a repo id whose name is not a zoo name); refuses early the
    other kind than ``want`` and names that are nothing at all."""
    namespace, entry_name = split_repo_id(name)
    try:
        parsed = parse_name(entry_name)
    except ConfigError as exc:
        if namespace is not None:
            return None
        what = want or "model"
        raise NotFoundError(
            f"unknown {what} {spec!r}: not a folder, an alias (nuclei, lesion, embed), a baseline (random, imagenet) "
            f"or a zoo name ({exc}); 'sslzoo zoo list' shows the available entries"
        ) from exc
    if want is not None and parsed.kind != want:
        hint = f"; its encoder entry is {parsed.encoder_name}" if parsed.kind == "segmenter" else ""
        raise ConfigError(f"{spec!r} names {_a(parsed.kind)}, but {_a(want)} is needed{hint}")
    return parsed.kind


def _checked(resolved: ResolvedModel, want: Kind | None, expected: Kind | None) -> ResolvedModel:
    if expected is not None and resolved.kind != expected:
        raise DataError(
            f"{resolved.spec!r} names {_a(expected)}, but its files ({resolved.path}) hold {_a(resolved.kind)}"
        )
    if want is not None and resolved.kind != want:
        raise ConfigError(f"{resolved.spec!r} is {_a(resolved.kind)} ({resolved.path}), but {_a(want)} is needed")
    return resolved


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def locate(
    spec: str | Path,
    *,
    namespace: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """The local folder of the model ``spec`` names (baselines have none: :class:`ConfigError`)."""
    resolved = resolve_model(spec, namespace=namespace, revision=revision, cache_dir=cache_dir, endpoint=endpoint)
    if resolved.path is None:
        raise ConfigError(
            f"{resolved.spec!r} is a baseline initialisation without a folder; export it with "
            f"'sslzoo pretrain --method {resolved.spec} --out DIR' first"
        )
    return resolved.path


def load_encoder(
    spec: str | Path, backbone: str | None = None, *, namespace: str | None = None, revision: str | None = None
) -> tuple[nn.Module, EncoderConfig]:
    """Encoder + :class:`~sslzoo.models.encoders.EncoderConfig` from a baseline, folder, alias or zoo name.

    ``backbone`` is the baseline's backbone (default ``resnet50``) and the backbone of a folder without
    ``config.json``; a stored config wins over it.
    """
    from sslzoo.models.encoders import EncoderConfig, baseline_encoder, load_encoder_folder

    resolved = resolve_model(spec, want="encoder", namespace=namespace, revision=revision)
    if resolved.baseline is not None:
        return baseline_encoder(resolved.baseline, backbone or "resnet50")
    assert resolved.path is not None
    has_config = (resolved.path / CONFIG_FILE).is_file()
    encoder, config = load_encoder_folder(resolved.path, backbone=None if has_config else backbone)
    if config is None:
        assert backbone is not None  # load_encoder_folder refuses a config-less folder without one
        config = EncoderConfig(backbone=backbone, method="unknown", dataset="unknown")
    return encoder, config


def load_segmenter(
    spec: str | Path, *, device: str = "cpu", namespace: str | None = None, revision: str | None = None
) -> Segmenter:
    """:class:`~sslzoo.models.segmenter.Segmenter` from a folder, an alias or a zoo name, on ``device``."""
    from sslzoo.models.segmenter import Segmenter

    resolved = resolve_model(spec, want="segmenter", namespace=namespace, revision=revision)
    assert resolved.path is not None
    return Segmenter.from_pretrained(resolved.path, device=device)
