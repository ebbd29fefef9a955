"""Dataset summaries for ``sslzoo data info``: images per split, instances, image sizes, classes.

Image sizes come from file headers (no pixel decoding). For instance datasets every mask is read to
count ``n_instances`` = number of distinct non-zero ids, summed over all masks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from sslzoo.data.datasets import DatasetIndex, Sample, open_dataset, read_image_size

#: at most this many distinct sizes are listed; min / max are always given
MAX_LISTED_SIZES = 8
#: a progress bar is shown when more masks than this are read
PROGRESS_MIN_FILES = 20


class ImageSize(BaseModel):
    """How many images have one (height, width)."""

    height: int
    width: int
    count: int


class SizeSummary(BaseModel):
    """Distinct image sizes: the most common ones (up to ``MAX_LISTED_SIZES``), and the smallest and
    largest by pixel count."""

    n_distinct: int
    most_common: list[ImageSize]
    smallest: tuple[int, int] | None
    largest: tuple[int, int] | None

    @classmethod
    def from_sizes(cls, sizes: list[tuple[int, int]]) -> SizeSummary:
        counts = Counter(sizes)
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        by_area = sorted(counts, key=lambda hw: (hw[0] * hw[1], hw))
        return cls(
            n_distinct=len(counts),
            most_common=[ImageSize(height=h, width=w, count=c) for (h, w), c in ordered[:MAX_LISTED_SIZES]],
            smallest=by_area[0] if by_area else None,
            largest=by_area[-1] if by_area else None,
        )

    def describe(self) -> str:
        """``256x256 (1600)``: size (count) when there are up to 3 sizes, else ``N sizes, smallest .. largest``."""
        if self.n_distinct == 0:
            return "-"
        if self.n_distinct <= 3:
            return ", ".join(f"{s.height}x{s.width} ({s.count})" for s in self.most_common)
        (h0, w0), (h1, w1) = self.smallest or (0, 0), self.largest or (0, 0)
        return f"{self.n_distinct} sizes, {h0}x{w0} .. {h1}x{w1}"


class SplitInfo(BaseModel):
    """Summary of one split."""

    name: str
    n_images: int
    n_labelled: int
    n_instances: int | None = None
    image_sizes: SizeSummary
    class_counts: dict[str, int]


class DatasetInfo(BaseModel):
    """Summary of a dataset folder (what ``sslzoo data info --json`` prints)."""

    path: str
    kind: str
    layout: str
    task: str | None
    n_images: int
    n_labelled: int
    n_instances: int | None = None
    image_sizes: SizeSummary
    class_counts: dict[str, int]
    splits: list[SplitInfo]


def _count_instances(index: DatasetIndex, samples: list[Sample], progress: bool | None) -> dict[str, int]:
    """Distinct non-zero ids per sample id (masks are relabelled contiguous by ``read_mask``)."""
    from tqdm.auto import tqdm

    disable = (not progress) if progress is not None else (True if len(samples) <= PROGRESS_MIN_FILES else None)
    counts: dict[str, int] = {}
    for sample in tqdm(samples, desc="reading masks", unit="mask", disable=disable, leave=False):
        counts[f"{sample.split}/{sample.id}"] = int(index.read_mask(sample).max(initial=0))
    return counts


def _class_counts(samples: list[Sample]) -> dict[str, int]:
    return dict(sorted(Counter(s.label for s in samples if s.label is not None).items()))


def dataset_info(
    path: str | Path | DatasetIndex, dataset: str | None = None, *, progress: bool | None = None
) -> DatasetInfo:
    """Summarise the dataset at ``path`` (or an already opened index).

    ``progress``: ``None`` shows a bar when more than ``PROGRESS_MIN_FILES`` masks are read and stderr
    is a terminal; ``True`` / ``False`` force it on / off.
    """
    index = path if isinstance(path, DatasetIndex) else open_dataset(path, dataset)
    sizes = {f"{s.split}/{s.id}": read_image_size(s.image) for s in index.samples}
    instances = (
        _count_instances(index, index.labelled(), progress) if index.task == "instance" and index.labelled() else None
    )

    def keys(samples: list[Sample]) -> list[str]:
        return [f"{s.split}/{s.id}" for s in samples]

    splits = []
    for name in index.splits():
        rows = index.split(name)
        labelled = [s for s in rows if s.mask is not None]
        splits.append(
            SplitInfo(
                name=name,
                n_images=len(rows),
                n_labelled=len(labelled),
                n_instances=sum(instances[k] for k in keys(labelled)) if instances is not None and labelled else None,
                image_sizes=SizeSummary.from_sizes([sizes[k] for k in keys(rows)]),
                class_counts=_class_counts(rows),
            )
        )
    return DatasetInfo(
        path=str(index.root),
        kind=index.kind,
        layout=index.layout,
        task=index.task,
        n_images=len(index.samples),
        n_labelled=len(index.labelled()),
        n_instances=sum(instances.values()) if instances is not None else None,
        image_sizes=SizeSummary.from_sizes(list(sizes.values())),
        class_counts=_class_counts(index.samples),
        splits=splits,
    )


def format_dataset_info(info: DatasetInfo) -> str:
    """Human-readable summary: a header and one aligned table row per split plus a total."""
    header = [("path", info.path), ("kind", info.kind), ("layout", info.layout), ("task", info.task or "-")]
    lines = [f"{key:<7} {value}" for key, value in header]

    def classes(counts: dict[str, int]) -> str:
        return ", ".join(f"{name} {n}" for name, n in counts.items()) or "-"

    def instances(n: int | None) -> str:
        return "-" if n is None else str(n)

    rows = [("split", "images", "labelled", "instances", "sizes", "classes")]
    for s in info.splits:
        rows.append(
            (
                s.name,
                str(s.n_images),
                str(s.n_labelled),
                instances(s.n_instances),
                s.image_sizes.describe(),
                classes(s.class_counts),
            )
        )
    if len(info.splits) > 1:
        rows.append(
            (
                "total",
                str(info.n_images),
                str(info.n_labelled),
                instances(info.n_instances),
                info.image_sizes.describe(),
                classes(info.class_counts),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    numeric = {1, 2, 3}
    lines.append("")
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines)
