"""The official ISIC 2017 challenge layout (as downloaded from the challenge site).

```
ISIC-2017_Training_Data/ISIC_0000000.jpg            (+ *_superpixels.png, ignored)
ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png   (0 / 255)
ISIC-2017_Training_Part3_GroundTruth.csv            (image_id, melanoma, seborrheic_keratosis)
... the same with Validation and Test_v2
```
Split names: Training -> ``train``, Validation -> ``val``, Test_v2 -> ``test``.
Class: ``melanoma`` if melanoma = 1, ``seborrheic_keratosis`` if seborrheic_keratosis = 1,
``nevus`` when neither is set (the challenge's benign nevi).
"""

from __future__ import annotations

import csv
from pathlib import Path

from sslzoo.data.io import list_images
from sslzoo.errors import DataError

#: split name -> the tag in the official folder and file names
ISIC2017_SPLIT_TAGS: dict[str, str] = {"train": "Training", "val": "Validation", "test": "Test_v2"}
ISIC2017_CLASSES = ("melanoma", "seborrheic_keratosis", "nevus")
PART3_COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")


def isic2017_data_dir(root: Path, split: str) -> Path:
    return root / f"ISIC-2017_{ISIC2017_SPLIT_TAGS[split]}_Data"


def isic2017_mask_path(root: Path, split: str, image_id: str) -> Path:
    return root / f"ISIC-2017_{ISIC2017_SPLIT_TAGS[split]}_Part1_GroundTruth" / f"{image_id}_segmentation.png"


def isic2017_part3_csv(root: Path, split: str) -> Path:
    return root / f"ISIC-2017_{ISIC2017_SPLIT_TAGS[split]}_Part3_GroundTruth.csv"


def is_isic2017_official(root: Path) -> bool:
    """True when ``root`` holds at least one ``ISIC-2017_<Training|Validation|Test_v2>_Data`` folder."""
    return any(isic2017_data_dir(root, split).is_dir() for split in ISIC2017_SPLIT_TAGS)


def _flag(value: str, csv_path: Path, row_number: int, column: str) -> bool:
    try:
        number = float(value)
    except ValueError as exc:
        raise DataError(
            f"{csv_path}: row {row_number}, column {column!r} is {value!r}; expected 0 or 1 (0.0 / 1.0)"
        ) from exc
    if number not in (0.0, 1.0):
        raise DataError(f"{csv_path}: row {row_number}, column {column!r} is {value!r}; expected 0 or 1")
    return number == 1.0


def read_isic2017_part3(csv_path: str | Path) -> dict[str, str]:
    """Map image id -> class from an official Part 3 ground-truth CSV."""
    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in PART3_COLUMNS if c not in columns]
        if missing:
            raise DataError(
                f"{csv_path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
                f"the ISIC 2017 Part 3 CSV needs a header {','.join(PART3_COLUMNS)}"
            )
        classes: dict[str, str] = {}
        for row_number, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            melanoma = _flag(row["melanoma"], csv_path, row_number, "melanoma")
            keratosis = _flag(row["seborrheic_keratosis"], csv_path, row_number, "seborrheic_keratosis")
            if melanoma and keratosis:
                raise DataError(
                    f"{csv_path}: row {row_number} ({row['image_id']}) sets both melanoma and "
                    "seborrheic_keratosis; the two labels are exclusive, fix that row"
                )
            classes[row["image_id"]] = "melanoma" if melanoma else "seborrheic_keratosis" if keratosis else "nevus"
    return classes


def scan_isic2017_official(root: str | Path) -> list[tuple[str, str, Path, Path | None, str | None]]:
    """Rows ``(id, split, image, mask or None, class or None)`` of an official ISIC 2017 folder.

    A split's masks are expected for every image once its ``Part1_GroundTruth`` folder exists;
    its classes come from the ``Part3_GroundTruth.csv`` when present.
    """
    root = Path(root)
    rows: list[tuple[str, str, Path, Path | None, str | None]] = []
    for split in ISIC2017_SPLIT_TAGS:
        data_dir = isic2017_data_dir(root, split)
        if not data_dir.is_dir():
            continue
        images = [p for p in list_images(data_dir) if not p.stem.endswith("_superpixels")]
        gt_dir = isic2017_mask_path(root, split, "x").parent
        has_masks = gt_dir.is_dir()
        part3 = isic2017_part3_csv(root, split)
        classes = read_isic2017_part3(part3) if part3.is_file() else {}
        for image in images:
            mask = isic2017_mask_path(root, split, image.stem) if has_masks else None
            if mask is not None and not mask.is_file():
                raise DataError(
                    f"{image}: no mask {mask.name} in {gt_dir}; add the segmentation PNG "
                    f"or remove the image from {data_dir.name}"
                )
            rows.append((image.stem, split, image, mask, classes.get(image.stem)))
    return rows
