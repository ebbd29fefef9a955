"""The study grid: one :class:`RunSpec` per (seed, dataset, frozen, method, rate), in a fixed order.

Order (outermost first): seed, dataset, frozen (config order, ``false`` first by default), method, rate
(ascending). Seed is outermost so that a study stopped half-way already holds whole curves of every method for
the first seeds. ``run_id`` is a stable, readable name (``simclr-monuseg-frozen-rate0.04-seed1``); shard ``i`` of
``n`` takes the runs whose grid index ``k`` has ``k % n == i`` (round-robin).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sslzoo.errors import ConfigError
from sslzoo.study.config import StudyConfig, Task


def format_rate(rate: float) -> str:
    """``0.01 -> '0.01'``, ``1.0 -> '1'`` (``%g``: shortest exact form, as used in run ids and tables)."""
    return f"{rate:g}"


class RunSpec(BaseModel):
    """One fine-tuning run of the study."""

    model_config = ConfigDict(frozen=True)

    method: str
    dataset: str
    task: Task | None
    rate: float
    frozen: bool
    seed: int

    @property
    def run_id(self) -> str:
        """``<method>-<dataset>-<frozen|tuned>-rate<rate>-seed<seed>``: unique within a study, stable across runs."""
        state = "frozen" if self.frozen else "tuned"
        return f"{self.method}-{self.dataset}-{state}-rate{format_rate(self.rate)}-seed{self.seed}"


def build_grid(config: StudyConfig) -> list[RunSpec]:
    """Every run of the study, in the deterministic order of the module docstring."""
    return [
        RunSpec(method=method, dataset=name, task=spec.task, rate=rate, frozen=frozen, seed=seed)
        for seed in config.seeds
        for name, spec in config.datasets.items()
        for frozen in config.frozen
        for method in config.methods
        for rate in config.rates
    ]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n`` (0-based, like SLURM array indices)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as exc:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4 for the first of 4 shards), got {text!r}") from exc
    check_shard((index, count))
    return index, count


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_grid(grid: list[RunSpec], shard: tuple[int, int] = (0, 1)) -> list[RunSpec]:
    """The runs of shard ``i`` of ``n``: grid indices ``k`` with ``k % n == i``."""
    index, count = check_shard(shard)
    return [spec for k, spec in enumerate(grid) if k % count == index]
