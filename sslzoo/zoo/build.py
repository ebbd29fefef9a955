"""``build_zoo``: pretrain, measure, card and package every (method, dataset) encoder of a zoo config.

Entries, in build order: the ``random`` reference of every dataset first (measured, not packaged), then each
pretext method on each dataset. Shard ``i`` of ``n`` takes the entries whose index ``k`` has ``k % n == i``.
Each entry's state lives in ``DIR/<entry>/``::

    work/pretrain/            pretext export + Lightning checkpoint (resumed when the build was killed)
    work/pretrain-plan.json   the step budget (a minutes budget is turned into steps once, by a timing run)
    work/pretrain.json        steps, wall time, final pretext loss (pretraining done)
    work/nqc.json             NQC with its chance levels (done)
    work/probe/seed<k>/       one frozen-encoder probe per seed (finetune's result.json: done)
    model.safetensors, config.json, README.md   the packaged encoder (fp16 by default) and its card
    entry.json, DONE          every number of the entry; DONE is written last (the done marker)

and the seed-0 probe is packaged as the segmenter entry ``DIR/<entry>-<task>/``. A rerun skips entries with a
``DONE`` marker and every finished step of the others; nothing finished is redone. After each entry the
leaderboard of all finished entries (also other shards') is rewritten to ``DIR/LEADERBOARD.md`` and
``DIR/leaderboard.png``, so a partial build always has one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sslzoo.errors import ConfigError
from sslzoo.hub.zoo_folder import DONE_MARKER, ENTRY_FILE
from sslzoo.zoo.config import PretrainSettings, ZooConfig
from sslzoo.zoo.probe import NQCRecord, ProbeRecord
from sslzoo.zoo.records import (
    BuildSummary,
    EntryRecord,
    EntrySpec,
    PretrainRecord,
    build_entries,
    finished_entries,
    format_seconds,
    gain_of,
    is_done,
    reference_of,
    shard_entries,
)

log = logging.getLogger(__name__)

ZOO_FILE = "zoo.json"
WORK_DIR = "work"
LOCK_FILE = ".building"
PACKAGE_FILES = ("model.safetensors", "config.json", "README.md")
Report = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ helpers
def _write_json(path: Path, model: BaseModel | dict[str, Any]) -> None:
    """Atomic write (tmp + rename), so a killed build never leaves half a file behind."""
    text = model.model_dump_json(indent=2) if isinstance(model, BaseModel) else json.dumps(model, indent=2)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


@contextmanager
def entry_lock(entry_dir: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``entry_dir/.building`` while one process builds the entry.

    Yields False (and holds nothing) when another process holds it: two builds of one folder (a second shard, or a
    command started twice) never write the same entry; the lock dies with its process, so a killed build leaves no
    stale lock behind.
    """
    import fcntl

    entry_dir.mkdir(parents=True, exist_ok=True)
    with open(entry_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def machine_description(accelerator: str = "auto") -> str:
    import torch

    device = "cpu"
    if torch.cuda.is_available() and accelerator not in ("cpu",):
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {device}"
    )


def _comparable(config: ZooConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", exclude={"description"})
    for spec in data["datasets"].values():
        spec.pop("path", None)
        for section in ("pretrain", "probe"):
            spec[section].pop("workers", None)
    data["pretrain"].pop("workers", None)
    data["probe"].pop("workers", None)
    return data


def store_config(config: ZooConfig, out_dir: Path) -> None:
    """Write ``DIR/zoo.json``; refuse to mix two different zoo configs in one folder."""
    path = out_dir / ZOO_FILE
    if path.is_file():
        stored = ZooConfig.model_validate_json(path.read_text())
        if _comparable(stored) != _comparable(config):
            raise ConfigError(
                f"{out_dir} holds a zoo built with another config ({path}); build this one into another --out, or "
                "delete the folder to start again (paths, worker counts and the description may differ)"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(path, config)


# ------------------------------------------------------------------------------------------------ data
def _index(config: ZooConfig, entry: EntrySpec) -> Any:
    from sslzoo.data.datasets import open_dataset

    return open_dataset(config.datasets[entry.dataset].path, entry.kind)


def pretext_images(index: Any, heldout: Sequence[Any], resize: int | None) -> list[Any]:
    """Every image of the dataset (all splits, unlabelled ones included) except the held-out ones; squeezed to
    ``resize`` x ``resize`` (``uint8`` arrays) when given, else file paths."""
    from sslzoo.data.datasets import unlabelled_images
    from sslzoo.data.io import read_image
    from sslzoo.data.resize import resize_image

    held = {Path(s.image).resolve() for s in heldout}
    kept = [p for p in unlabelled_images(index.root, index.kind) if Path(p).resolve() not in held]
    if resize:
        return [resize_image(read_image(p), resize) for p in kept]
    return kept


def time_pretext_steps(config: Any, dataset: Any, steps: int, workers: int, accelerator: str) -> float:
    """Seconds per optimiser step of ``config``'s method on ``dataset``: ``steps`` timed after one warm-up step
    (forward, backward, SGD step, momentum update; data loading included)."""
    import torch
    from torch.utils.data import DataLoader

    from sslzoo.pretext.registry import build_method

    samples_per_epoch = (len(dataset) // config.batch_size) * config.batch_size
    method = build_method(config.model_copy(update={"samples_per_epoch": samples_per_epoch}))
    use_cuda = torch.cuda.is_available() and accelerator not in ("cpu",)
    device = torch.device("cuda" if use_cuda else "cpu")
    method.to(device).train()
    optimizer = torch.optim.SGD(
        [p for p in method.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    started = 0.0
    done = 0
    while done < steps + 1:
        for batch in loader:
            if done == 1:
                if use_cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
            view1, view2 = method.split_views(batch)
            loss, _ = method.training_loss(view1.to(device), view2.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_optimizer_step()
            done += 1
            if done == steps + 1:
                break
    if use_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def final_pretext_loss(folder: Path, last: int = 10) -> float | None:
    """Mean ``train/loss_step`` of the last ``last`` logged steps (all CSV log versions, by step)."""
    import csv

    rows: dict[int, float] = {}
    for path in sorted((folder / "logs").glob("version_*/metrics.csv")):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                value = row.get("train/loss_step") or ""
                if value and row.get("step"):
                    rows[int(float(row["step"]))] = float(value)
    if not rows:
        return None
    values = [rows[k] for k in sorted(rows)[-last:]]
    return float(sum(values) / len(values))


# ------------------------------------------------------------------------------------------------ steps
def pretrain_step(
    config: ZooConfig,
    entry: EntrySpec,
    work: Path,
    index: Any,
    heldout: Sequence[Any],
    *,
    accelerator: str,
    devices: Any,
    precision: Any,
    report: Report,
) -> PretrainRecord:
    """Pretrain (or resume, or read back) the entry's encoder into ``work/pretrain``."""
    from sslzoo.data.pretext_dataset import TwoViewDataset
    from sslzoo.data.transforms import two_view_transform
    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.train import pretrain

    record_path = work / "pretrain.json"
    if record_path.is_file():
        return PretrainRecord.model_validate_json(record_path.read_text())
    settings: PretrainSettings = config.pretrain_for(entry.dataset)
    images = pretext_images(index, heldout, settings.resize)
    dataset = TwoViewDataset(images, two_view_transform(entry.kind, settings.input_size), settings.input_size)
    base = PretextConfig(
        method=entry.method,
        backbone=entry.backbone,
        dataset=entry.kind,
        input_size=settings.input_size,
        batch_size=settings.batch_size,
        lr=settings.lr_by_method.get(entry.method, settings.lr),
        max_steps=1,
        seed=settings.seed,
        params=settings.params.get(entry.method, {}),
    )
    if len(dataset) < settings.batch_size:
        raise ConfigError(
            f"{entry.name}: only {len(dataset)} view tiles for batch size {settings.batch_size}; lower "
            "pretrain.batch_size or add images"
        )
    plan_path = work / "pretrain-plan.json"
    plan: dict[str, Any] = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    if not plan:
        if settings.minutes is None:
            plan = {"max_steps": settings.max_steps, "max_epochs": settings.max_epochs, "seconds_per_step": None}
        else:
            per_step = time_pretext_steps(base, dataset, settings.calibration_steps, settings.workers, accelerator)
            steps = max(1, math.floor(settings.minutes * 60 / per_step))
            plan = {"max_steps": steps, "max_epochs": None, "seconds_per_step": round(per_step, 4)}
            report(f"    {entry.name}: {per_step:.2f} s/step timed, so {steps} steps fill {settings.minutes:g} min")
        plan["budget"] = settings.budget
        plan["attempts"] = []
        work.mkdir(parents=True, exist_ok=True)
        _write_json(plan_path, plan)
    folder = work / "pretrain"
    pretext_config = base.model_copy(update={"max_steps": plan["max_steps"], "max_epochs": plan["max_epochs"]})
    started = time.perf_counter()
    last = folder / "checkpoints" / "last.ckpt"
    pretrain(
        pretext_config,
        dataset,
        folder,
        devices=devices,
        accelerator=accelerator,
        precision=precision,
        resume=last.is_file(),
        workers=settings.workers,
        progress=False,
    )
    plan["attempts"] = [*plan.get("attempts", []), round(time.perf_counter() - started, 3)]
    _write_json(plan_path, plan)
    training = json.loads((folder / "config.json").read_text()).get("training", {})
    record = PretrainRecord(
        steps=int(training.get("global_step") or plan["max_steps"] or 0),
        budget=plan["budget"],
        seconds_per_step=plan.get("seconds_per_step"),
        seconds=round(sum(plan["attempts"]), 3),
        final_loss=final_pretext_loss(folder),
        lr=base.lr,
        n_images=len(images),
        n_views=len(dataset),
        batch_size=settings.batch_size,
        input_size=settings.input_size,
    )
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # big, and pretrain.json now says it is done
    _write_json(record_path, record)
    return record


def nqc_step(config: ZooConfig, entry: EntrySpec, work: Path, index: Any, heldout: Sequence[Any]) -> NQCRecord:
    """NQC of the entry's encoder (random init for the reference) into ``work/nqc.json``."""
    import torch

    from sslzoo.data.normalization import IMAGENET_MEAN, IMAGENET_STD
    from sslzoo.models.encoders import create_encoder, load_encoder_folder
    from sslzoo.zoo.probe import measure_nqc

    path = work / "nqc.json"
    if path.is_file():
        return NQCRecord.model_validate_json(path.read_text())
    settings = config.nqc_for(entry.dataset)
    pretrain_settings = config.pretrain_for(entry.dataset)
    if entry.is_reference:
        torch.manual_seed(pretrain_settings.seed)
        encoder = create_encoder(entry.backbone)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        encoder, enc_config = load_encoder_folder(work / "pretrain")
        assert enc_config is not None
        mean, std = enc_config.mean, enc_config.std
    samples = list(heldout) if settings.images == "heldout" else list(index.samples)
    record = measure_nqc(
        encoder,
        mean,
        std,
        index,
        samples,
        settings,
        size=pretrain_settings.input_size,
        resize=pretrain_settings.resize,
        images=settings.images,
    )
    work.mkdir(parents=True, exist_ok=True)
    _write_json(path, record)
    return record


def probe_step(
    config: ZooConfig, entry: EntrySpec, work: Path, *, accelerator: str, devices: Any, precision: Any
) -> ProbeRecord:
    """The frozen-encoder probe over every seed into ``work/probe.json``."""
    from sslzoo.zoo.probe import run_probe

    path = work / "probe.json"
    if path.is_file():
        return ProbeRecord.model_validate_json(path.read_text())
    init = "random" if entry.is_reference else str(work / "pretrain")
    spec = config.datasets[entry.dataset]
    record = run_probe(
        init,
        entry.backbone,
        spec.path,
        entry.kind,
        spec.task,
        config.probe_for(entry.dataset),
        work / "probe",
        accelerator=accelerator,
        devices=devices,
        precision=precision,
    )
    _write_json(path, record)
    return record


# ------------------------------------------------------------------------------------------------ cards
def card_metrics(record: EntryRecord, reference: EntryRecord | None) -> dict[str, float]:
    """The numbers a card's model-index carries (finite ones only)."""
    metric = record.probe.metric
    values: dict[str, float] = {
        "nqc": record.nqc.nqc,
        "nqc_chance": record.nqc.chance,
        f"probe_{metric}": record.probe.mean,
        f"probe_{metric}_std": record.probe.std,
    }
    gain = gain_of(record, reference)
    if gain is not None:
        values["probe_gain_over_random"] = gain[0]
        values["probe_gain_p"] = gain[1]
    return {k: round(float(v), 6) for k, v in values.items() if math.isfinite(v)}


def provenance(record: EntryRecord, reference: EntryRecord | None, segmenter: bool = False) -> str:
    """Markdown for the card's "How this model was made": the exact command, data split, numbers, machine."""
    metric = record.probe.metric
    probe = record.probe
    lines = [
        f"Built by `sslzoo zoo build` (zoo config `{record.config}`), entry `{record.name}`; "
        f"finished {record.finished}.",
        "",
        "```",
        record.command,
        "```",
        "",
    ]
    if record.pretrain is not None:
        p = record.pretrain
        loss = f"{p.final_loss:.4f}" if p.final_loss is not None else "n/a"
        timed = f" ({p.seconds_per_step:.2f} s/step timed first)" if p.seconds_per_step else ""
        lines.append(
            f"- Pretraining: {record.method}, {p.steps} steps of batch {p.batch_size} at "
            f"{p.input_size}x{p.input_size}, "
            f"SGD lr {p.lr if p.lr is not None else 'n/a'} with cosine annealing "
            f"(budget {p.budget}{timed}), {p.seconds:.0f} s wall time, final pretext loss {loss}; "
            f"{p.n_images} images ({p.n_views} view tiles) of every split, the held-out images excluded."
        )
    nqc = record.nqc
    lines.append(
        f"- NQC ({nqc.label}, {nqc.n_images} {nqc.images} images): {nqc.nqc:.4f} "
        f"(chance {nqc.chance:.4f}; paper's expectation {nqc.random_expectation:.4f})."
    )
    scores = ", ".join(f"{v:.4f}" for v in probe.scores.values())
    lines.append(
        f"- Frozen-encoder probe ({metric} on {probe.n_eval_images} held-out images, {probe.eval_rule}): "
        f"{probe.mean:.4f} ± {probe.std:.4f} over seeds {list(probe.scores)} ({scores}); decoder trained "
        f"{probe.steps} steps on {probe.n_train_tiles} labelled tiles, encoder frozen."
    )
    gain = gain_of(record, reference)
    if gain is not None:
        p_text = "n/a" if math.isnan(gain[1]) else f"{gain[1]:.4f}"
        lines.append(
            f"- Gain over random init ({reference.probe.mean:.4f} ± {reference.probe.std:.4f}): "  # type: ignore[union-attr]
            f"{gain[0]:+.4f}, one-tailed t-test p = {p_text}."
        )
    elif not record.reference:
        lines.append("- Gain over random init: the reference was not measured yet.")
    if segmenter:
        lines.append(
            f"- This segmenter is the seed-{next(iter(probe.scores))} probe itself: the frozen `{record.name}` "
            "encoder with the decoder trained as above. It is a measurement, not a tuned model: fine-tune for "
            "real use (`sslzoo finetune --init " + record.name + "`)."
        )
    lines.append(f"- Machine: {record.machine}; entry wall time {record.seconds:.0f} s.")
    return "\n".join(lines)


def write_cards(out_dir: Path, record: EntryRecord, reference: EntryRecord | None) -> None:
    """(Re)write the cards of the entry's packaged encoder and segmenter with the current numbers."""
    from sslzoo.hub.cards import write_card

    folder = out_dir / record.name
    if (folder / "model.safetensors").is_file():
        write_card(
            folder,
            name=record.name,
            evaluation=card_metrics(record, reference),
            provenance=provenance(record, reference),
        )
    if record.segmenter and (out_dir / record.segmenter / "model.safetensors").is_file():
        evaluation_file = out_dir / record.name / WORK_DIR / "probe" / f"seed{next(iter(record.probe.scores))}"
        evaluation = None
        if (evaluation_file / "evaluation.json").is_file():
            evaluation = json.loads((evaluation_file / "evaluation.json").read_text())
        write_card(
            out_dir / record.segmenter,
            name=record.segmenter,
            evaluation=evaluation,
            provenance=provenance(record, reference, segmenter=True),
        )


def refresh_cards(out_dir: str | Path, cards_to: str | Path | None = None) -> list[Path]:
    """Rewrite every finished entry's cards (gains need the reference, maybe built later or by another shard);
    ``cards_to`` also receives a copy of each card as ``<entry>.md``, except for the names of the embedded
    defaults (``sslzoo.hub.defaults.ALIAS_TARGETS``): their committed cards describe the packaged weights, which a
    zoo entry of the same name (e.g. the CPU zoo's DenseCL probe) must not overwrite. Returns the card paths."""
    from sslzoo.hub.defaults import ALIAS_TARGETS

    embedded = set(ALIAS_TARGETS.values())
    out = Path(out_dir)
    records = finished_entries(out)
    paths = []
    for record in records:
        write_cards(out, record, reference_of(records, record))
        for name in (record.name, record.segmenter):
            card = out / name / "README.md" if name else None
            if card is not None and card.is_file():
                paths.append(card)
                if cards_to is not None and name not in embedded:
                    Path(cards_to).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(card, Path(cards_to) / f"{name}.md")
    return paths


def package_step(config: ZooConfig, entry: EntrySpec, out_dir: Path, work: Path) -> str | None:
    """Package the encoder into ``DIR/<entry>/`` and the seed-0 probe as ``DIR/<entry>-<task>/``; returns the
    segmenter's name (``None`` for the reference, which is not packaged)."""
    from sslzoo.hub.package import package

    if entry.is_reference:
        return None
    staging = work / "package"
    shutil.rmtree(staging, ignore_errors=True)
    result = package(work / "pretrain", entry.name, staging, dtype=config.dtype)
    for name in PACKAGE_FILES:
        os.replace(result.folder / name, out_dir / entry.name / name)
    shutil.rmtree(staging, ignore_errors=True)
    first_seed = config.probe_for(entry.dataset).seeds[0]
    package(work / "probe" / f"seed{first_seed}", entry.segmenter_name, out_dir, dtype=config.dtype)
    return entry.segmenter_name


# ------------------------------------------------------------------------------------------------ API
def build_entry(
    config: ZooConfig,
    entry: EntrySpec,
    out_dir: Path,
    *,
    accelerator: str = "auto",
    devices: Any = "auto",
    precision: Any = None,
    command: str = "",
    report: Report = print,
) -> EntryRecord:
    """Build one entry (pretrain, NQC, probe, package, cards), skipping the steps already done."""
    from sslzoo.zoo.probe import heldout_split

    started = time.perf_counter()
    folder = out_dir / entry.name
    work = folder / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    index = _index(config, entry)
    heldout = heldout_split(index, config.probe_for(entry.dataset).eval_split).eval
    pretrain_record = None
    if not entry.is_reference:
        report(f"    {entry.name}: pretraining ({config.pretrain_for(entry.dataset).budget})")
        pretrain_record = pretrain_step(
            config, entry, work, index, heldout, accelerator=accelerator, devices=devices, precision=precision,
            report=report,
        )  # fmt: skip
    nqc_record = nqc_step(config, entry, work, index, heldout)
    report(f"    {entry.name}: NQC {nqc_record.nqc:.3f} (chance {nqc_record.chance:.3f}); probing")
    probe_record = probe_step(config, entry, work, accelerator=accelerator, devices=devices, precision=precision)
    segmenter = package_step(config, entry, out_dir, work)
    seconds = time.perf_counter() - started
    record = EntryRecord(
        name=entry.name,
        method=entry.method,
        dataset=entry.dataset,
        kind=entry.kind,
        backbone=entry.backbone,
        task=entry.task,
        reference=entry.is_reference,
        pretrain=pretrain_record,
        nqc=nqc_record,
        probe=probe_record,
        segmenter=segmenter,
        seconds=round(seconds, 3),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        config=config.name,
        command=command,
        machine=machine_description(accelerator),
    )
    records = [*finished_entries(out_dir), record]
    write_cards(out_dir, record, reference_of(records, record))
    _write_json(folder / ENTRY_FILE, record)
    (folder / DONE_MARKER).write_text(record.finished + "\n")
    return record


def build_zoo(
    config: ZooConfig,
    out_dir: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    accelerator: str = "auto",
    devices: Any = "auto",
    precision: Any = None,
    command: str | None = None,
    report: Report = print,
    keep_going: bool = True,
) -> BuildSummary:
    """Build every entry of this shard that is not done yet, writing the leaderboard after each one.

    With ``keep_going`` an entry that fails is reported (traceback in ``DIR/<entry>/work/error.txt``) and the build
    goes on with the next; a rerun retries it from its last finished step.
    """
    from sslzoo.zoo.leaderboard import write_leaderboard

    out = Path(out_dir)
    store_config(config, out)
    command = command or f"sslzoo zoo build <config {config.name}> --out {out}"
    entries = shard_entries(build_entries(config), shard)
    summary = BuildSummary(total=len(entries))
    todo = [e for e in entries if not is_done(out, e)]
    summary.skipped = [e.name for e in entries if is_done(out, e)]
    if summary.skipped:
        report(f"{len(summary.skipped)} of {len(entries)} entries of shard {shard[0]}/{shard[1]} are done already")
    for position, entry in enumerate(todo, start=1):
        label = f"[{len(summary.skipped) + position}/{len(entries)}]"
        try:
            with entry_lock(out / entry.name) as mine:
                if not mine:
                    summary.busy.append(entry.name)
                    report(f"{label} {entry.name}: another process is building it (see {entry.name}/{LOCK_FILE}); "
                           "skipped")  # fmt: skip
                    continue
                if is_done(out, entry):  # finished by another process since this build started
                    summary.skipped.append(entry.name)
                    continue
                report(f"{label} {entry.name}: building")
                record = build_entry(
                    config, entry, out, accelerator=accelerator, devices=devices, precision=precision,
                    command=command, report=report,
                )  # fmt: skip
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken entry must not stop an unattended build; a rerun retries it
            if not keep_going:
                raise
            import traceback

            (out / entry.name / WORK_DIR).mkdir(parents=True, exist_ok=True)
            (out / entry.name / WORK_DIR / "error.txt").write_text(traceback.format_exc())
            summary.failed[entry.name] = f"{type(exc).__name__}: {exc}"
            report(f"{label} {entry.name}: FAILED ({type(exc).__name__}: {exc}); see {entry.name}/work/error.txt")
            continue
        summary.built.append(entry.name)
        summary.seconds[entry.name] = record.seconds
        remaining = len(todo) - position
        mean = sum(summary.seconds.values()) / len(summary.seconds)
        (out / entry.name / WORK_DIR / "error.txt").unlink(missing_ok=True)
        probe = record.probe
        pretrain = (
            f"pretrain {record.pretrain.steps} steps {format_seconds(record.pretrain.seconds)}, "
            if record.pretrain
            else ""
        )
        report(
            f"{label} {entry.name}: done in {format_seconds(record.seconds)} ({pretrain}NQC {record.nqc.nqc:.3f}, "
            f"probe {probe.metric} {probe.mean:.3f} ± {probe.std:.3f}); "
            + (f"ETA {format_seconds(mean * remaining)} for {remaining} more" if remaining else "shard finished")
        )
        write_leaderboard(out)
    if not todo:
        write_leaderboard(out)
    refresh_cards(out)
    return summary
