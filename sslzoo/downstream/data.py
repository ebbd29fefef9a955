"""Fine-tuning data: which images train and which are scored, training tiles, rate subsets.

The split rules (the same for every method, rate and seed, so runs compare):

1. **Evaluation images** (:func:`split_train_eval`): the labelled images of ``eval_split`` when
   given; else of the dataset's ``test`` split, else its ``val`` split; else a fixed image-level
   hold-out of ``HOLDOUT_FRACTION`` (20 %) of the training images, drawn with
   ``train_val_split(image ids, 0.2, seed=HOLDOUT_SEED)`` — seed 0 whatever the run's seed.
   Training images are the labelled images of the ``train`` split (every other labelled image
   when there is no ``train`` split) minus the evaluation images.
2. **Tiles** (:func:`training_tiles`): each training image is cut along
   ``tile_grid(H, W, tile_size, overlap=0)`` (an ISIC 256x256 image is one tile; a MoNuSeg
   1000x1000 image 16). Tile id = ``<image id>@<y>_<x>``. ``tiles_per_image`` keeps that many
   tiles per image, evenly spread over the grid (a cap for CPU configurations).
3. **Annotation-rate subset** (the labelled tiles of the run): ``rate_subset(all tile ids, rate,
   seed)`` — nested over rates for one seed (CONTRACTS.md section 4).
4. **Validation tiles**: ``train_val_split(rate subset, val_fraction, seed)`` — drawn from INSIDE
   the labelled rate subset (at least one tile when the subset holds two or more), as the authors'
   data module does (``init_val_dataset``: 20 % of the labelled samples, at least one); the rest of
   the subset trains. A 1 % run thus validates on its own few labels, not on a larger pool, and
   validation scales with the rate. A subset of a single tile trains on it without validation
   (the training loss is then monitored).

Only the chosen tiles are read into memory (:class:`TileSet`); instance targets are the
per-object distance map (``distance_map_target``) of the whole image, cropped to each tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from sslzoo.data.datasets import DatasetIndex, Sample
from sslzoo.data.resize import resize_image, resize_labels
from sslzoo.data.subsets import rate_subset, train_val_split
from sslzoo.data.targets import distance_map_target
from sslzoo.data.tiling import Tile, pad_to, tile_grid
from sslzoo.errors import ConfigError, DataError
from sslzoo.vocabulary import Task

#: share of the training images held out for scoring when the dataset has no val/test split
HOLDOUT_FRACTION = 0.2
#: seed of that hold-out: fixed, so every run (any method, rate, seed) is scored on the same images
HOLDOUT_SEED = 0
#: splits used for scoring when ``eval_split`` is not given, in order of preference
EVAL_SPLITS = ("test", "val")


@dataclass(frozen=True)
class TrainEvalSplit:
    """Training images, scored images, and the rule that chose them (for the record)."""

    train: list[Sample]
    eval: list[Sample]
    rule: str


def split_train_eval(index: DatasetIndex, eval_split: str | None = None) -> TrainEvalSplit:
    """Training and evaluation images of a labelled dataset (rule 1 of the module docstring)."""
    labelled = index.labelled()
    if index.task is None or not labelled:
        raise DataError(
            f"{index.root}: no masks found ({index.layout} layout), so there is nothing to fine-tune on; "
            "pass a dataset with <split>/masks/<id>.png next to <split>/images/ (or an official ISIC/MoNuSeg folder)"
        )
    splits = {s.split for s in labelled}
    train_split = "train" if "train" in splits else None
    if eval_split is not None:
        if eval_split not in splits:
            raise ConfigError(
                f"{index.root}: no labelled split {eval_split!r} to evaluate on; labelled splits: "
                f"{', '.join(sorted(splits))}"
            )
        if eval_split == train_split:
            raise ConfigError(
                f"eval_split {eval_split!r} is the training split; leave it unset for the default rule "
                "(test/val split, else a fixed 20 % hold-out of the training images) or name another split"
            )
        chosen: str | None = eval_split
    else:
        chosen = next((name for name in EVAL_SPLITS if name in splits), None)
    if chosen is not None and chosen != train_split:
        evaluated = [s for s in labelled if s.split == chosen]
        train = (
            [s for s in labelled if s.split == train_split]
            if train_split
            else [s for s in labelled if s.split != chosen]
        )
        if not train:
            raise DataError(f"{index.root}: no labelled training images besides the {chosen!r} split")
        return TrainEvalSplit(train, evaluated, f"split {chosen!r}")
    pool = [s for s in labelled if s.split == train_split] if train_split else labelled
    if len(pool) < 2:
        raise DataError(
            f"{index.root}: only {len(pool)} labelled image(s); need at least 2 to hold one out for scoring "
            "(or add a val/ or test/ split)"
        )
    keys = {_key(s): s for s in pool}
    kept, held_out = train_val_split(sorted(keys), HOLDOUT_FRACTION, seed=HOLDOUT_SEED)
    rule = f"hold-out of {len(held_out)}/{len(pool)} images (train_val_split fraction {HOLDOUT_FRACTION}, seed 0)"
    return TrainEvalSplit([keys[k] for k in kept], [keys[k] for k in held_out], rule)


def _key(sample: Sample) -> str:
    return f"{sample.split}/{sample.id}"


def tile_id(sample: Sample, tile: Tile) -> str:
    """``<split>/<image id>@<y>_<x>`` (zero-padded, so ids sort by image, then position)."""
    return f"{_key(sample)}@{tile.y:05d}_{tile.x:05d}"


def image_tiles(height: int, width: int, tile_size: int, tiles_per_image: int | None = None) -> list[Tile]:
    """Non-overlapping ``tile_grid`` of one image; ``tiles_per_image`` keeps that many, evenly spread."""
    grid = tile_grid(height, width, size=tile_size, overlap=0)
    if tiles_per_image is not None and tiles_per_image < len(grid):
        keep = np.unique(np.linspace(0, len(grid) - 1, tiles_per_image).round().astype(int))
        grid = [grid[i] for i in keep]
    return grid


@dataclass(frozen=True)
class TileSelection:
    """Tile ids of one run: ``labelled`` (the rate subset, in draw order), split into ``train`` (in draw
    order) and ``val`` (sorted); ``all_ids``: every candidate tile."""

    train: list[str]
    val: list[str]
    all_ids: list[str]
    labelled: list[str]


#: default share of the labelled rate subset held out for validation (authors: ``val_to_train_ratio`` 0.2)
VAL_FRACTION = 0.2


def select_tiles(all_ids: Sequence[str], rate: float, seed: int, val_fraction: float = VAL_FRACTION) -> TileSelection:
    """Draw the rate subset (``rate_subset``), then carve its validation tiles (``train_val_split``).

    ``val`` holds ``max(1, round(val_fraction * n))`` of the ``n`` labelled tiles (none when
    ``val_fraction`` is 0 or ``n == 1``); ``train`` the other labelled tiles, in draw order.
    """
    labelled = rate_subset(list(all_ids), rate, seed)
    if val_fraction > 0 and len(labelled) >= 2:
        _, val = train_val_split(labelled, val_fraction, seed)
    else:
        val = []
    held = set(val)
    train = [tid for tid in labelled if tid not in held]
    return TileSelection(train, val, sorted(all_ids), labelled)


class TileSet(Dataset):
    """Tiles held in memory: ``uint8`` image, ``int32`` labels, ``float32`` distance target (instance).

    Tiles are ``tile_size`` square (edge images smaller than that are reflect-padded); ``extent``
    keeps each tile's unpadded ``(h, w)``. ``__getitem__`` returns ``(image 3xSxS float, target 1xSxS
    float)``: the 0/1 mask (semantic) or the distance map (instance), after ``transform``.
    """

    def __init__(
        self,
        ids: list[str],
        images: np.ndarray,
        labels: np.ndarray,
        distances: np.ndarray | None,
        extents: list[tuple[int, int]],
        task: Task,
        transform=None,
    ) -> None:
        self.ids, self.images, self.labels, self.distances = ids, images, labels, distances
        self.extents, self.task, self.transform = extents, task, transform

    def __len__(self) -> int:
        return len(self.ids)

    def with_transform(self, transform) -> TileSet:
        return TileSet(self.ids, self.images, self.labels, self.distances, self.extents, self.task, transform)

    def subset(self, ids: Sequence[str]) -> TileSet:
        """The tiles with these ids, in the given order (shares no arrays with ``self``)."""
        position = {tid: i for i, tid in enumerate(self.ids)}
        missing = [tid for tid in ids if tid not in position]
        if missing:
            raise DataError(f"unknown tile ids {missing[:3]}")
        rows = [position[tid] for tid in ids]
        return TileSet(
            list(ids),
            self.images[rows],
            self.labels[rows],
            None if self.distances is None else self.distances[rows],
            [self.extents[i] for i in rows],
            self.task,
            self.transform,
        )

    def target(self, item: int) -> np.ndarray:
        """Regression / segmentation target of tile ``item`` (float32, S x S)."""
        if self.task == "instance":
            assert self.distances is not None
            return self.distances[item]
        return (self.labels[item] > 0).astype(np.float32)

    def ground_truth(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Unpadded ``(image, labels)`` of tile ``item`` (for watershed tuning)."""
        h, w = self.extents[item]
        return self.images[item, :h, :w], self.labels[item, :h, :w]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.images[item], self.target(item)
        if self.transform is None:
            from sslzoo.data.transforms import normalize_to_tensor

            return normalize_to_tensor(image), torch.from_numpy(np.ascontiguousarray(target))[None]
        out = self.transform(image=image, mask=self.labels[item], distance=target)
        return out["image"], torch.as_tensor(out["distance"], dtype=torch.float32)[None]


def _image_size(sample: Sample, resize_to: int | None) -> tuple[int, int]:
    """``(H, W)`` of a sample's image as tiled: its own size, or ``resize_to`` squared."""
    from sslzoo.data.datasets import read_image_size

    return (resize_to, resize_to) if resize_to else read_image_size(sample.image)


def load_tiles(
    index: DatasetIndex,
    samples: Sequence[Sample],
    wanted: set[str] | None,
    tile_size: int,
    tiles_per_image: int | None,
    task: Task,
    progress: bool = False,
    resize_to: int | None = None,
) -> TileSet:
    """Read the tiles of ``samples`` whose ids are in ``wanted`` (all when ``None``) into a :class:`TileSet`.

    ``resize_to``: each whole image is first squeezed to ``resize_to x resize_to`` (area interpolation;
    masks nearest-neighbour), then tiled.
    """
    from tqdm.auto import tqdm

    ids: list[str] = []
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    extents: list[tuple[int, int]] = []
    for sample in tqdm(samples, desc="reading tiles", disable=not progress, leave=False):
        grid = image_tiles(*_image_size(sample, resize_to), tile_size, tiles_per_image)
        chosen = [t for t in grid if wanted is None or tile_id(sample, t) in wanted]
        if not chosen:  # only images with a chosen tile are decoded
            continue
        image = index.read_image(sample)
        mask = index.read_mask(sample)
        if resize_to:
            image, mask = resize_image(image, resize_to), resize_labels(mask, resize_to)
        distance = distance_map_target(mask) if task == "instance" else None
        for t in chosen:
            window = (slice(t.y, t.y + t.h), slice(t.x, t.x + t.w))
            ids.append(tile_id(sample, t))
            extents.append((t.h, t.w))
            images.append(pad_to(image[window], tile_size, tile_size))
            labels.append(pad_to(mask[window].astype(np.int32), tile_size, tile_size))
            if distance is not None:
                distances.append(pad_to(distance[window], tile_size, tile_size))
    if not ids:
        raise DataError("no training tiles were selected; check the dataset and --tile-size")
    return TileSet(
        ids,
        np.stack(images),
        np.stack(labels),
        np.stack(distances) if distances else None,
        extents,
        task,
    )


def all_tile_ids(
    samples: Sequence[Sample], sizes: Sequence[tuple[int, int]], tile_size: int, tiles_per_image: int | None
) -> list[str]:
    """Ids of every candidate training tile of ``samples`` (image sizes given as ``(H, W)``)."""
    return [
        tile_id(sample, t)
        for sample, (h, w) in zip(samples, sizes, strict=True)
        for t in image_tiles(h, w, tile_size, tiles_per_image)
    ]


@dataclass
class FinetuneData:
    """Everything one fine-tuning run reads: tiles for training/validation and the images to score."""

    task: Task
    split: TrainEvalSplit
    selection: TileSelection
    train: TileSet
    val: TileSet | None


def prepare_data(
    index: DatasetIndex,
    task: Task,
    rate: float,
    seed: int,
    val_fraction: float,
    tile_size: int,
    tiles_per_image: int | None = None,
    eval_split: str | None = None,
    progress: bool = False,
    resize_to: int | None = None,
) -> FinetuneData:
    """Apply the rules of the module docstring and read the chosen tiles (``resize_to``: see :func:`load_tiles`)."""
    split = split_train_eval(index, eval_split)
    sizes = [_image_size(s, resize_to) for s in split.train]
    selection = select_tiles(all_tile_ids(split.train, sizes, tile_size, tiles_per_image), rate, seed, val_fraction)
    wanted = set(selection.train) | set(selection.val)
    tiles = load_tiles(index, split.train, wanted, tile_size, tiles_per_image, task, progress, resize_to)
    train = tiles.subset(selection.train)
    val = tiles.subset(selection.val) if selection.val else None
    return FinetuneData(task, split, selection, train, val)
