"""Records of a zoo build: what an entry is (:class:`EntrySpec`), what its build measured
(:class:`EntryRecord`, ``DIR/<entry>/entry.json``), and reading them back from a zoo folder.

Below :mod:`sslzoo.zoo.build` (which writes them) and :mod:`sslzoo.zoo.leaderboard` (which reads them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from sslzoo.errors import ConfigError
from sslzoo.hub.zoo_folder import DONE_MARKER, ENTRY_FILE
from sslzoo.vocabulary import DATASET_TASKS, join_name
from sslzoo.zoo.config import REFERENCE_METHODS, ZooConfig
from sslzoo.zoo.probe import NQCRecord, ProbeRecord, gain_over_reference


class EntrySpec(BaseModel):
    """One zoo entry: a method (or the random reference) on one dataset."""

    method: str
    dataset: str = Field(description="the dataset's key in the config")
    kind: str
    backbone: str
    task: str

    @property
    def name(self) -> str:
        """Zoo encoder name ``<method>-<backbone>-<kind>`` (CONTRACTS.md section 1)."""
        return join_name(self.method, self.backbone, self.kind)

    @property
    def segmenter_name(self) -> str:
        return join_name(self.method, self.backbone, self.kind, self.task)

    @property
    def is_reference(self) -> bool:
        return self.method in REFERENCE_METHODS


class PretrainRecord(BaseModel):
    """``work/pretrain.json``: what the encoder's pretraining did."""

    steps: int
    budget: str = Field(description="'N steps', 'N epochs' or 'M min' (as configured)")
    lr: float | None = None
    seconds_per_step: float | None = Field(None, description="timed before training (minutes budgets)")
    seconds: float = Field(description="wall time of training, summed over interrupted and resumed parts")
    final_loss: float | None = Field(None, description="mean pretext loss over the last 10 logged steps")
    n_images: int
    n_views: int = Field(description="view tiles per epoch")
    batch_size: int
    input_size: int


class EntryRecord(BaseModel):
    """``DIR/<entry>/entry.json``: every number of one finished entry."""

    name: str
    method: str
    dataset: str
    kind: str
    backbone: str
    task: str
    reference: bool
    pretrain: PretrainRecord | None
    nqc: NQCRecord
    probe: ProbeRecord
    segmenter: str | None = None
    seconds: float = Field(description="wall time of the entry in the call(s) that built it")
    finished: str
    config: str
    command: str
    machine: str


class BuildSummary(BaseModel):
    """What one ``build_zoo`` call did."""

    total: int
    skipped: list[str] = Field(default_factory=list)
    built: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict, description="entry -> error (traceback in work/error.txt)")
    seconds: dict[str, float] = Field(default_factory=dict)
    busy: list[str] = Field(default_factory=list, description="entries another process was building (left to it)")


def build_entries(config: ZooConfig) -> list[EntrySpec]:
    """Every entry of the config in build order (references first, then methods x datasets)."""
    entries = []
    for method in [*REFERENCE_METHODS, *config.methods]:
        for key, spec in config.datasets.items():
            task = spec.task or DATASET_TASKS[spec.kind]
            entries.append(EntrySpec(method=method, dataset=key, kind=spec.kind, backbone=config.backbone, task=task))
    return entries


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n`` (0-based, like SLURM array indices)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as exc:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4 for the first of 4 shards), got {text!r}") from exc
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_entries(entries: Sequence[EntrySpec], shard: tuple[int, int] = (0, 1)) -> list[EntrySpec]:
    """The entries of shard ``i`` of ``n``: indices ``k`` with ``k % n == i``."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need n >= 1 and 0 <= i < n")
    return [entry for k, entry in enumerate(entries) if k % count == index]


def is_done(out_dir: Path, entry: EntrySpec) -> bool:
    return (out_dir / entry.name / DONE_MARKER).is_file()


def read_entry(folder: Path) -> EntryRecord | None:
    """The record of a finished entry folder (``None`` without a ``DONE`` marker)."""
    if not (folder / DONE_MARKER).is_file() or not (folder / ENTRY_FILE).is_file():
        return None
    return EntryRecord.model_validate_json((folder / ENTRY_FILE).read_text())


def finished_entries(out_dir: str | Path) -> list[EntryRecord]:
    """Records of every finished entry in the zoo folder ``out_dir`` (any shard), sorted by name."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    records = [read_entry(child) for child in sorted(root.iterdir()) if child.is_dir()]
    return [r for r in records if r is not None]


def reference_of(records: Sequence[EntryRecord], record: EntryRecord) -> EntryRecord | None:
    """The random-init record of the same dataset and backbone."""
    return next(
        (
            r
            for r in records
            if r.reference and r.kind == record.kind and r.backbone == record.backbone and r.name != record.name
        ),
        None,
    )


def gain_of(record: EntryRecord, reference: EntryRecord | None) -> tuple[float, float] | None:
    """``(gain, p)`` of a record's probe over the reference's (``None`` without a reference)."""
    if reference is None or record.reference:
        return None
    return gain_over_reference(list(record.probe.scores.values()), list(reference.probe.scores.values()))


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
