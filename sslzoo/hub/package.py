"""``sslzoo zoo package``: a compact zoo entry (the embedded defaults in ``sslzoo/zoo/<entry>/``).

:func:`package` copies only what an entry needs from a training output folder (encoder:
``model.safetensors`` + ``config.json``; segmenter: those + ``segmenter.json``; never checkpoints, logs or
result files), stores the floating-point tensors of ``model.safetensors`` in ``dtype`` (default float16;
integer buffers such as ``num_batches_tracked`` and the file's metadata are kept), records that dtype as
``weights_dtype`` in the sslzoo config (``config.json`` of an encoder, ``segmenter.json`` of a segmenter;
smp's ``config.json`` is copied unchanged) and writes the model card ``README.md``. The entry name must
agree with the folder's config (method, backbone, dataset, task). Loading a packaged entry gives a float32
model: ``load_state_dict`` copies the stored tensors into the float32 modules.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sslzoo.errors import ConfigError, DataError
from sslzoo.hub.cards import CARD_FILE, entry_name_for, read_folder_config, write_card
from sslzoo.hub.names import Kind, ZooName, parse_name
from sslzoo.models.encoders import CONFIG_FILE, WEIGHTS_DTYPES, WEIGHTS_FILE, EncoderConfig, WeightsDtype
from sslzoo.models.segmenter import SEGMENTER_FILE, SegmenterConfig

#: The files a zoo entry holds besides its card, per kind.
ENTRY_FILES: dict[Kind, tuple[str, ...]] = {
    "encoder": (WEIGHTS_FILE, CONFIG_FILE),
    "segmenter": (WEIGHTS_FILE, CONFIG_FILE, SEGMENTER_FILE),
}
#: A segmenter's evaluation from ``sslzoo finetune`` (mean + pooled scores): the card's results by default.
EVALUATION_FILE = "evaluation.json"


class PackagedFile(BaseModel):
    """One file of a packaged entry: its size in the source folder (``None``: written new) and packaged."""

    name: str
    source_bytes: int | None
    bytes: int


class PackageResult(BaseModel):
    """What :func:`package` wrote."""

    name: str
    kind: Kind
    weights_dtype: WeightsDtype
    folder: Path
    files: list[PackagedFile]
    card_copy: Path | None = None


def check_entry_name(name: str, config: EncoderConfig | SegmenterConfig) -> ZooName:
    """``name`` parsed; :class:`ConfigError` when it disagrees with ``config`` on kind or any name part."""
    parsed = parse_name(name)
    implied = entry_name_for(config)
    kind = "segmenter" if isinstance(config, SegmenterConfig) else "encoder"
    if parsed.kind != kind:
        raise ConfigError(
            f"--name {name!r} names {'an encoder' if parsed.kind == 'encoder' else 'a segmenter'}, but the folder "
            f"holds {'an encoder' if kind == 'encoder' else 'a segmenter'} (its config implies {implied!r})"
        )
    task = getattr(config, "task", None)
    wrong = [
        f"{part} {mine!r} (config: {theirs!r})"
        for part, mine, theirs in (
            ("method", parsed.method, config.method),
            ("backbone", parsed.backbone, config.backbone),
            ("dataset", parsed.dataset, config.dataset),
            ("task", parsed.task, task),
        )
        if mine != theirs
    ]
    if wrong:
        raise ConfigError(
            f"--name {name!r} disagrees with the folder's config on {', '.join(wrong)}; the config implies "
            f"{implied!r}: package it under that name, or package the right folder"
        )
    return parsed


def convert_weights(source: Path, target: Path, dtype: WeightsDtype) -> WeightsDtype:
    """Copy a safetensors file with its floating-point tensors cast to ``dtype`` (others and metadata kept).

    Returns the dtype actually stored: when the cast would turn a finite value into ``inf`` (e.g. a batch-norm
    ``running_var`` above float16's 65504, which an encoder with large activations reaches) the file is kept in
    float32 instead, with a warning, because one overflowed buffer silently breaks every prediction.
    """
    import warnings

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(source))
    torch_dtype = getattr(torch, dtype)
    limit = torch.finfo(torch_dtype).max
    overflow = [
        k for k, v in state.items() if v.is_floating_point() and bool((v[torch.isfinite(v)].abs() > limit).any())
    ]
    if overflow:
        warnings.warn(
            f"{source}: {len(overflow)} tensor(s) exceed {dtype}'s range (e.g. {overflow[0]}); stored as float32",
            stacklevel=2,
        )
        dtype, torch_dtype = "float32", torch.float32
    state = {k: v.to(torch_dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(target), metadata=metadata)
    target.chmod(0o644)  # safetensors writes 0600: package data must be readable by every user (e.g. in Docker)
    return dtype


def _target_folder(out: Path, name: str, source: Path) -> Path:
    """``out/name`` (or ``out`` itself when it is named ``name``), emptied of a previous package only."""
    target = out if out.name == name else out / name
    if target.resolve() == source.resolve():
        raise ConfigError(f"{target}: cannot package a folder into itself; choose another --out")
    if target.exists():
        allowed = set(ENTRY_FILES["segmenter"]) | {CARD_FILE}
        stray = sorted(p.name for p in target.iterdir() if p.name not in allowed)
        if stray:
            raise ConfigError(
                f"{target} exists and is not a packaged zoo entry (it holds {', '.join(stray[:5])}); "
                "remove it or choose another --out"
            )
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return target


def package(
    source: str | Path,
    name: str,
    out: str | Path,
    *,
    dtype: WeightsDtype = "float16",
    evaluation: dict[str, Any] | None = None,
    card_to: str | Path | None = None,
    provenance: str | None = None,
) -> PackageResult:
    """Write the compact zoo entry ``name`` made from ``source`` into ``out/name`` (see the module docstring).

    ``evaluation`` (an ``sslzoo evaluate`` JSON) goes into the card; without it a segmenter's own
    ``evaluation.json`` is used, else its ``segmenter.json`` metrics. ``card_to`` also receives the card as
    ``<name>.md`` (the repository's ``model_cards/``). ``provenance`` (Markdown) becomes the card's "How this
    model was made" section. A previous package of the entry is replaced.
    """
    if dtype not in WEIGHTS_DTYPES:
        raise ConfigError(f"unsupported weights dtype {dtype!r}; choose one of {', '.join(WEIGHTS_DTYPES)}")
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: no such folder; pass the folder written by 'sslzoo pretrain' or 'sslzoo finetune'")
    config = read_folder_config(source)
    parsed = check_entry_name(name, config)
    missing = [f for f in ENTRY_FILES[parsed.kind] if not (source / f).is_file()]
    if missing:
        raise DataError(f"{source}: {', '.join(missing)} missing; export the model again")
    if evaluation is None and (source / EVALUATION_FILE).is_file():
        from sslzoo.hub.publish import load_evaluation

        evaluation = load_evaluation(source / EVALUATION_FILE)

    target = _target_folder(Path(out), parsed.name, source)
    dtype = convert_weights(source / WEIGHTS_FILE, target / WEIGHTS_FILE, dtype)
    packaged = config.model_copy(update={"weights_dtype": dtype})
    config_file = SEGMENTER_FILE if parsed.kind == "segmenter" else CONFIG_FILE
    (target / config_file).write_text(packaged.model_dump_json(indent=2) + "\n")
    if parsed.kind == "segmenter":
        shutil.copyfile(source / CONFIG_FILE, target / CONFIG_FILE)  # smp's model config, unchanged
    card = write_card(target, name=parsed.name, evaluation=evaluation, provenance=provenance)

    card_copy = None
    if card_to is not None:
        card_copy = Path(card_to) / f"{parsed.name}.md"
        card_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(card, card_copy)
    files = [
        PackagedFile(
            name=f,
            source_bytes=(source / f).stat().st_size if f != CARD_FILE else None,
            bytes=(target / f).stat().st_size,
        )
        for f in (*ENTRY_FILES[parsed.kind], CARD_FILE)
    ]
    return PackageResult(
        name=parsed.name, kind=parsed.kind, weights_dtype=dtype, folder=target, files=files, card_copy=card_copy
    )
