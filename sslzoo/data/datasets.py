"""Dataset readers: ISIC 2017, MoNuSeg, DSB 2018 and plain image folders.

:func:`open_dataset` detects the layout of a folder and returns a :class:`DatasetIndex`
(a list of :class:`Sample` rows plus readers). Layouts:

- ``isic2017-official``: the challenge folders ``ISIC-2017_<Training|Validation|Test_v2>_Data``,
  ``..._Part1_GroundTruth/<id>_segmentation.png`` and ``..._Part3_GroundTruth.csv``
  (splits ``train`` / ``val`` / ``test``; semantic task; see :mod:`sslzoo.data.isic`).
- ``monuseg-official``: ``Tissue Images/*.tif`` + ``Annotations/*.xml`` (split ``train``), or the
  test release's flat folder of ``<id>.tif`` + ``<id>.xml`` (split ``test`` when the folder name
  contains "test"); instance task; polygons rasterised by :mod:`sslzoo.data.monuseg_xml`.
- ``simple``: ``<split>/images/<id>.<ext>`` + optional ``<split>/masks/<id>.png`` and an optional
  ``labels.csv`` (``id,split,class``) at the root; a folder that itself holds ``images/`` is one split.
- ``folder``: any folder of images, searched recursively (files under ``masks/`` folders are skipped);
  no masks; split ``unlabeled``.

All pixel IO goes through :mod:`sslzoo.data.io`.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from sslzoo.data import io
from sslzoo.data.isic import is_isic2017_official, scan_isic2017_official
from sslzoo.data.monuseg_xml import rasterize_monuseg_xml, relabel_in_order
from sslzoo.errors import ConfigError, DataError
from sslzoo.vocabulary import DATASET_KINDS, DATASET_TASKS, Task

__all__ = [
    "DATASET_KINDS",
    "LAYOUTS",
    "DatasetIndex",
    "Sample",
    "open_dataset",
    "rasterize_monuseg_xml",
    "read_image_size",
    "unlabelled_images",
]

LAYOUTS = ("isic2017-official", "monuseg-official", "simple", "folder")

#: the task each known kind stands for; "folder" decides from its masks
KIND_TASKS: dict[str, Task] = dict(DATASET_TASKS)
#: splits listed first, in this order; others follow alphabetically
SPLIT_ORDER = ("train", "val", "test", "unlabeled")
UNLABELED_SPLIT = "unlabeled"
MONUSEG_IMAGE_DIRS = ("Tissue Images", "Tissue_Images")
MONUSEG_XML_DIR = "Annotations"
LABELS_CSV = "labels.csv"
#: words in a SOURCE.md / README.md title that name a kind
_KIND_HINTS: tuple[tuple[str, str], ...] = (
    (r"\bisic\b|isic[ _-]?2017", "isic2017"),
    (r"monuseg", "monuseg"),
    (r"data science bowl|\bdsb[ _-]?2018\b|\bdsb\b", "dsb2018"),
)


class Sample(BaseModel):
    """One image of a dataset: its id, split, image file, mask file (or annotation XML) and class."""

    model_config = ConfigDict(frozen=True)

    id: str
    split: str
    image: Path
    mask: Path | None = None
    label: str | None = None


def _split_sort_key(name: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


@dataclass
class DatasetIndex:
    """The samples of one dataset folder and how to read them.

    ``task`` is ``"semantic"`` (masks 0/1), ``"instance"`` (ids 0..N) or ``None`` when there are no masks.
    """

    root: Path
    kind: str
    layout: str
    task: Task | None
    samples: list[Sample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def splits(self) -> list[str]:
        """Split names present, ``train, val, test, unlabeled`` first."""
        return sorted({s.split for s in self.samples}, key=_split_sort_key)

    def split(self, name: str) -> list[Sample]:
        """The samples of split ``name``; raises ConfigError naming the available splits."""
        chosen = [s for s in self.samples if s.split == name]
        if not chosen:
            raise ConfigError(f"{self.root}: no split {name!r}; available splits: {', '.join(self.splits()) or 'none'}")
        return chosen

    def labelled(self) -> list[Sample]:
        """Samples that have a mask."""
        return [s for s in self.samples if s.mask is not None]

    def classes(self) -> list[str]:
        """Sorted class names found in the labels (empty when there are none)."""
        return sorted({s.label for s in self.samples if s.label is not None})

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Number of samples per class, over all splits or one."""
        rows = self.samples if split is None else self.split(split)
        return dict(sorted(Counter(s.label for s in rows if s.label is not None).items()))

    def read_image(self, sample: Sample) -> np.ndarray:
        """The sample's image as ``uint8`` RGB ``(H, W, 3)``."""
        return io.read_image(sample.image)

    def read_mask(self, sample: Sample) -> np.ndarray:
        """The sample's mask as ``int64 (H, W)``: 0/1 (semantic) or contiguous ids 0..N (instance).

        MoNuSeg XML annotations are rasterised here. The mask must have the image's height and width.
        """
        if sample.mask is None:
            raise DataError(
                f"{sample.image}: sample {sample.id!r} (split {sample.split!r}) has no mask; "
                "use DatasetIndex.labelled() to iterate over samples with masks"
            )
        height, width = read_image_size(sample.image)
        if sample.mask.suffix.lower() == ".xml":
            labels = rasterize_monuseg_xml(sample.mask, (height, width))
        else:
            labels = io.read_label_map(sample.mask)
            if labels.shape != (height, width):
                raise DataError(
                    f"{sample.mask}: mask is {labels.shape[0]}x{labels.shape[1]} (HxW) but its image "
                    f"{sample.image.name} is {height}x{width}; resize the mask with nearest-neighbour "
                    "interpolation to the image size (or fix the pairing)"
                )
        if self.task == "semantic":
            return (labels > 0).astype(np.int64)
        return relabel_in_order(labels)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image read from its header only (no pixel decoding)."""
    path = Path(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
        return int(height), int(width)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except (UnidentifiedImageError, OSError, ValueError) as pil_error:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            try:
                with tifffile.TiffFile(path) as tif:
                    shape = tif.series[0].shape
                    axes = tif.series[0].axes
                return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
            except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
                raise DataError(f"{path}: cannot read the TIFF header ({exc}); check the file is complete") from exc
        raise DataError(
            f"{path}: cannot read the image header ({pil_error}); check that it is a complete PNG, JPEG or TIFF"
        ) from pil_error


# --------------------------------------------------------------------------- labels.csv


def read_labels_csv(csv_path: str | Path) -> dict[tuple[str, str | None], str]:
    """Read ``id,split,class`` rows into ``{(id, split): class}``; split is ``None`` when the column is absent."""
    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("id", "class") if c not in columns]
        if missing:
            raise DataError(
                f"{csv_path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
                "labels.csv needs a header id,split,class (split optional)"
            )
        labels: dict[tuple[str, str | None], str] = {}
        for raw in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if row["id"] and row["class"]:
                labels[(row["id"], row.get("split") or None)] = row["class"]
    return labels


def _label_for(labels: dict[tuple[str, str | None], str], sample_id: str, split: str) -> str | None:
    return labels.get((sample_id, split), labels.get((sample_id, None)))


# --------------------------------------------------------------------------- layout scanners


def _unique_stems(paths: list[Path], folder: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in paths:
        if path.stem in by_stem:
            raise DataError(
                f"{folder}: two files share the id {path.stem!r} ({by_stem[path.stem].name}, {path.name}); "
                "keep one file per id"
            )
        by_stem[path.stem] = path
    return by_stem


def _monuseg_image_dir(root: Path) -> Path | None:
    return next((root / name for name in MONUSEG_IMAGE_DIRS if (root / name).is_dir()), None)


def _is_monuseg_flat(root: Path) -> bool:
    """A flat folder of ``<id>.tif`` + ``<id>.xml`` (the MoNuSeg test release)."""
    xml_stems = {p.stem for p in root.glob("*.xml")}
    return bool(xml_stems) and any(p.stem in xml_stems for p in io.list_images(root))


def _scan_monuseg_official(root: Path) -> list[Sample]:
    image_dir = _monuseg_image_dir(root)
    if image_dir is not None:
        xml_dir, split = root / MONUSEG_XML_DIR, "train"
        if not xml_dir.is_dir():
            raise DataError(
                f"{root}: has {image_dir.name}/ but no {MONUSEG_XML_DIR}/ folder; MoNuSeg needs "
                f"{MONUSEG_XML_DIR}/<id>.xml next to {image_dir.name}/<id>.tif"
            )
    else:
        image_dir = xml_dir = root
        split = "test" if "test" in root.name.lower() else "train"
    labels_csv = root / LABELS_CSV
    labels = read_labels_csv(labels_csv) if labels_csv.is_file() else {}
    samples = []
    for image_id, image in _unique_stems(io.list_images(image_dir), image_dir).items():
        xml = xml_dir / f"{image_id}.xml"
        if not xml.is_file():
            raise DataError(f"{image}: no annotation {xml.name} in {xml_dir}; add the Aperio XML or remove the image")
        samples.append(
            Sample(id=image_id, split=split, image=image, mask=xml, label=_label_for(labels, image_id, split))
        )
    return samples


def _simple_split_dirs(root: Path) -> list[tuple[str, Path]]:
    """``(split name, split folder)`` pairs of a simple layout; empty when ``root`` is not one."""
    if (root / "images").is_dir():
        name = root.name if root.name in SPLIT_ORDER + ("unlabelled",) else "train"
        return [(name, root)]
    return sorted(
        ((child.name, child) for child in root.iterdir() if child.is_dir() and (child / "images").is_dir()),
        key=lambda pair: _split_sort_key(pair[0]),
    )


def _scan_simple(root: Path, split_dirs: list[tuple[str, Path]]) -> list[Sample]:
    labels_csv = root / LABELS_CSV
    labels = read_labels_csv(labels_csv) if labels_csv.is_file() else {}
    samples = []
    for split, split_dir in split_dirs:
        images = _unique_stems(io.list_images(split_dir / "images"), split_dir / "images")
        masks_dir = split_dir / "masks"
        masks = _unique_stems(io.list_images(masks_dir, io.LABEL_SUFFIXES), masks_dir) if masks_dir.is_dir() else None
        if masks is not None:
            missing = [image_id for image_id in images if image_id not in masks]
            if missing:
                shown = ", ".join(images[i].name for i in missing[:3]) + (" ..." if len(missing) > 3 else "")
                raise DataError(
                    f"{split_dir}: {len(missing)} image(s) without a mask in {masks_dir} ({shown}); add "
                    f"masks/<id>.png for each, or move unannotated images to a separate '{UNLABELED_SPLIT}' split"
                )
        for image_id, image in images.items():
            mask = masks[image_id] if masks is not None else None
            samples.append(
                Sample(id=image_id, split=split, image=image, mask=mask, label=_label_for(labels, image_id, split))
            )
    return samples


def _scan_folder(root: Path) -> list[Sample]:
    samples = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (
            not path.is_file()
            or path.suffix.lower() not in io.IMAGE_SUFFIXES
            or any(part.startswith(".") or part == "masks" for part in relative.parts[:-1])
            or path.name.startswith(".")
        ):
            continue
        samples.append(Sample(id=relative.with_suffix("").as_posix(), split=UNLABELED_SPLIT, image=path))
    return samples


# --------------------------------------------------------------------------- kind and task


def _normalised(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _kind_from_names(*names: str) -> str | None:
    for name in names:
        for kind in KIND_TASKS:
            if kind in _normalised(name):
                return kind
    return None


def _kind_from_notes(root: Path) -> str | None:
    """Kind named in the first heading of a SOURCE.md / README.md in ``root`` (cheap hint)."""
    for note in ("SOURCE.md", "README.md"):
        path = root / note
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as handle:
            title = next((line for line in handle if line.strip()), "").lower()
        for pattern, kind in _KIND_HINTS:
            if re.search(pattern, title):
                return kind
    return None


def _task_from_masks(samples: list[Sample], max_masks: int = 5) -> Task:
    """``semantic`` when the first non-empty masks hold only {0, 1} or {0, 255}, else ``instance``."""
    for mask in [s.mask for s in samples if s.mask is not None][:max_masks]:
        values = set(np.unique(io.read_label_map(mask)).tolist())
        if values == {0}:
            continue
        return "semantic" if values <= {0, 1} or values <= {0, 255} else "instance"
    return "semantic"


# --------------------------------------------------------------------------- public API


def _check_kind(dataset: str | None) -> str | None:
    if dataset is not None and dataset not in DATASET_KINDS:
        raise ConfigError(f"unknown dataset kind {dataset!r}; choose one of {', '.join(DATASET_KINDS)}")
    return dataset


def _check_root(path: str | Path) -> Path:
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise DataError(f"{root}: no such folder; pass the folder that holds the dataset")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder; pass the folder that holds the dataset")
    return root


def _assert_kind(root: Path, layout: str, kind: str, dataset: str | None) -> None:
    if dataset is not None and dataset != kind:
        raise ConfigError(
            f"{root}: holds the {layout} layout (kind {kind!r}) but dataset {dataset!r} was requested; "
            f"drop the dataset option or pass {kind!r}"
        )


def open_dataset(path: str | Path, dataset: str | None = None) -> DatasetIndex:
    """Index the dataset at ``path``, detecting its layout.

    ``dataset`` (one of :data:`DATASET_KINDS`) sets the kind of a simple or folder layout and must
    agree with an official layout. Raises DataError for missing or malformed input.
    """
    dataset = _check_kind(dataset)
    root = _check_root(path)

    if is_isic2017_official(root):
        _assert_kind(root, "isic2017-official", "isic2017", dataset)
        samples = [
            Sample(id=i, split=s, image=image, mask=mask, label=label)
            for i, s, image, mask, label in scan_isic2017_official(root)
        ]
        index = DatasetIndex(root, "isic2017", "isic2017-official", "semantic", samples)
    elif _monuseg_image_dir(root) is not None or _is_monuseg_flat(root):
        _assert_kind(root, "monuseg-official", "monuseg", dataset)
        index = DatasetIndex(root, "monuseg", "monuseg-official", "instance", _scan_monuseg_official(root))
    elif split_dirs := _simple_split_dirs(root):
        samples = _scan_simple(root, split_dirs)
        kind = dataset or _kind_from_names(root.name) or _kind_from_notes(root)
        if kind is None and len(split_dirs) == 1 and split_dirs[0][1] == root:
            kind = _kind_from_names(root.parent.name) or _kind_from_notes(root.parent)
        kind = kind or "folder"
        has_masks = any(s.mask is not None for s in samples)
        task = (KIND_TASKS.get(kind) or _task_from_masks(samples)) if has_masks else None
        index = DatasetIndex(root, kind, "simple", task, samples)
    else:
        index = DatasetIndex(root, dataset or "folder", "folder", None, _scan_folder(root))

    if not index.samples:
        raise DataError(
            f"{root}: no images found ({index.layout} layout; looked for {', '.join(io.IMAGE_SUFFIXES)}); "
            "pass a folder with <split>/images/, the official ISIC 2017 or MoNuSeg folders, or plain images"
        )
    return index


def unlabelled_images(path: str | Path, dataset: str | None = None, skip_splits: Sequence[str] = ()) -> list[Path]:
    """Every image usable for pretraining: all splits of a dataset (``unlabeled/`` included) except
    ``skip_splits`` (e.g. ``("val",)`` to keep scored images out of pretraining) or, for a plain
    folder, every image found recursively. Sorted by split, then id."""
    index = open_dataset(path, dataset)
    splits, skipped = {s.split for s in index.samples}, set(skip_splits)
    if skipped - splits:
        raise ConfigError(
            f"{index.root}: no split named {', '.join(map(repr, sorted(skipped - splits)))} to skip; its splits "
            f"are {', '.join(sorted(splits))}"
        )
    kept = [s for s in index.samples if s.split not in skipped]
    return [s.image for s in sorted(kept, key=lambda s: (_split_sort_key(s.split), s.id))]
