"""Dataset-level evaluation of segmentations against ground truth (CONTRACTS.md section 3).

:func:`evaluate_pairs` scores an iterable of ``(id, prediction, ground_truth)`` arrays and returns
an :class:`EvaluationResult`, whose JSON form is the output of ``POST /predictions/evaluate``.
:func:`evaluate_folders` matches two folders of label images by file stem and calls it.

Per dataset: ``mean`` = mean of the per-image scores (challenge convention, primary);
``pooled`` = sums over all images before dividing (AJI: ΣC/ΣU, AJI+ likewise, PQ from the
pooled TP/FP/FN/IoU sums, Dice 2Σ|A∩B| / Σ(|A| + |B|)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from sslzoo.data.io import LABEL_SUFFIXES, list_images, read_array, read_label_map
from sslzoo.errors import ConfigError, DataError
from sslzoo.metrics.segmentation import as_label_map, dice_sums, instance_scores, pq_from_counts
from sslzoo.vocabulary import TASKS, Task

#: Metrics reported per task, in output order.
METRICS: dict[str, tuple[str, ...]] = {
    "semantic": ("dice",),
    "instance": ("aji", "aji_plus", "pq", "dq", "sq", "dice"),
}
#: Raw sums summed over images for the pooled scores.
_SUM_KEYS: dict[str, tuple[str, ...]] = {
    "semantic": ("dice_inter", "dice_total"),
    "instance": (
        "aji_inter",
        "aji_union",
        "aji_plus_inter",
        "aji_plus_union",
        "tp",
        "fp",
        "fn",
        "iou_sum",
        "dice_inter",
        "dice_total",
    ),
}

Pair = tuple[str, np.ndarray, np.ndarray]


class EvaluationResult(BaseModel):
    """Scores of one labelled set: the JSON body of ``POST /predictions/evaluate``."""

    task: Task
    model: str | None = None
    n_images: int = Field(ge=1)
    mean: dict[str, float] = Field(description="mean of the per-image scores (primary)")
    pooled: dict[str, float] = Field(description="sums over all images before dividing (secondary)")
    per_image: list[dict[str, str | float]] = Field(description='[{"id": ..., metric: value, ...}] in input order')


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose 'semantic' or 'instance'")


def binarize_semantic(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Hard foreground mask of a semantic prediction or ground truth.

    Floats in [0, 1] are probabilities: foreground = value > 0.5. Other maps (integer, bool,
    whole-valued floats) count every value > 0 as foreground. Fractional values outside [0, 1],
    NaN or infinity raise :class:`DataError`.
    """
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{name}: mask contains NaN or infinite values")
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            return arr > 0.5
        if not np.all(arr == np.round(arr)):
            raise DataError(
                f"{name}: float mask with values outside [0, 1] that are not whole numbers; "
                "give probabilities in [0, 1] or an integer mask (0 = background)"
            )
        return arr > 0
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: unsupported mask dtype {arr.dtype}; give an integer or float mask")
    return arr > 0


def _score_pair(image_id: str, pred: np.ndarray, gt: np.ndarray, task: str) -> dict[str, float | int]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise DataError(
            f"{image_id}: prediction shape {pred.shape} differs from ground-truth shape {gt.shape}; "
            "predictions must have the image's height and width"
        )
    if task == "semantic":
        inter, total = dice_sums(binarize_semantic(pred, f"{image_id} (prediction)"), binarize_semantic(gt, image_id))
        return {"dice": 1.0 if total == 0 else 2 * inter / total, "dice_inter": inter, "dice_total": total}
    return instance_scores(as_label_map(pred, f"{image_id} (prediction)"), as_label_map(gt, image_id))


def pooled_scores(sums: dict[str, float], task: str) -> dict[str, float]:
    """Dataset scores from raw sums over images (the keys of :func:`instance_scores`)."""

    def ratio(num: float, den: float) -> float:
        return 1.0 if den == 0 else float(num) / float(den)

    out: dict[str, float] = {}
    if task == "instance":
        out["aji"] = ratio(sums["aji_inter"], sums["aji_union"])
        out["aji_plus"] = ratio(sums["aji_plus_inter"], sums["aji_plus_union"])
        panoptic = pq_from_counts(sums["tp"], sums["fp"], sums["fn"], sums["iou_sum"])
        out.update(pq=panoptic.pq, dq=panoptic.dq, sq=panoptic.sq)
    out["dice"] = ratio(2 * sums["dice_inter"], sums["dice_total"])
    return {name: out[name] for name in METRICS[task]}


def evaluate_pairs(pairs: Iterable[Pair], task: Task, model: str | None = None) -> EvaluationResult:
    """Score ``(id, prediction, ground_truth)`` triples.

    Semantic: both arrays are binarised (:func:`binarize_semantic`), metric ``dice``.
    Instance: integer label maps (0 = background), metrics ``aji``, ``aji_plus``, ``pq``, ``dq``,
    ``sq``, ``dice``. Shapes must match per pair. Raises :class:`DataError` for bad input and
    when ``pairs`` is empty.
    """
    _check_task(task)
    names = METRICS[task]
    sums: dict[str, float] = dict.fromkeys(_SUM_KEYS[task], 0)
    per_image: list[dict[str, str | float]] = []
    for image_id, pred, gt in pairs:
        scores = _score_pair(str(image_id), pred, gt, task)
        for key in sums:
            sums[key] += scores[key]
        per_image.append({"id": str(image_id), **{name: float(scores[name]) for name in names}})
    if not per_image:
        raise DataError("nothing to evaluate: no (prediction, ground truth) pairs were given")
    mean = {name: math.fsum(float(row[name]) for row in per_image) / len(per_image) for name in names}
    return EvaluationResult(
        task=task,
        model=model,
        n_images=len(per_image),
        mean=mean,
        pooled=pooled_scores(sums, task),
        per_image=per_image,
    )


def _files_by_stem(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{role} folder {folder} does not exist or is not a folder")
    files: dict[str, Path] = {}
    for path in list_images(folder, LABEL_SUFFIXES):
        if path.stem in files:
            raise DataError(
                f"{role} folder {folder}: two files share the stem {path.stem!r} "
                f"({files[path.stem].name}, {path.name}); keep one per image"
            )
        files[path.stem] = path
    if not files:
        raise DataError(f"{role} folder {folder} holds no label images ({', '.join(LABEL_SUFFIXES)})")
    return files


def match_folders(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """``(stem, prediction file, ground-truth file)`` for every stem, sorted by stem.

    Raises :class:`DataError` when a folder is missing or empty, a stem occurs twice, or a file
    has no partner in the other folder.
    """
    preds = _files_by_stem(Path(pred_dir), "prediction")
    gts = _files_by_stem(Path(gt_dir), "ground-truth")
    problems = []
    checks = (
        (sorted(gts.keys() - preds.keys()), gt_dir, pred_dir),
        (sorted(preds.keys() - gts.keys()), pred_dir, gt_dir),
    )
    for missing, here, there in checks:
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            problems.append(f"{len(missing)} file(s) in {here} have no partner in {there}: {shown}")
    if problems:
        raise DataError("; ".join(problems) + " (files are matched by name without suffix)")
    return [(stem, preds[stem], gts[stem]) for stem in sorted(gts)]


def read_semantic_prediction(path: str | Path) -> np.ndarray:
    """Read a semantic prediction as a hard mask: float TIFF probabilities in [0, 1] are
    thresholded at 0.5; integer masks (and whole-valued floats) count values > 0."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        arr = read_array(path)
        if np.issubdtype(arr.dtype, np.floating) and (arr.ndim == 2 or arr.shape[-1] == 1):
            return binarize_semantic(arr, str(path))
    return read_label_map(path) > 0


def _read_pairs(matched: list[tuple[str, Path, Path]], task: str) -> Iterator[Pair]:
    for stem, pred_path, gt_path in matched:
        gt = read_label_map(gt_path)
        pred = read_semantic_prediction(pred_path) if task == "semantic" else read_label_map(pred_path)
        if pred.shape != gt.shape:
            raise DataError(
                f"{pred_path}: size {pred.shape[1]}x{pred.shape[0]} (WxH) differs from its ground truth "
                f"{gt_path} ({gt.shape[1]}x{gt.shape[0]}); predictions must have the image's size"
            )
        yield stem, pred, gt


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    task: Task,
    model: str | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate the label images of ``pred_dir`` against those of ``gt_dir`` (PNG/TIF/TIFF,
    matched by stem). ``progress`` shows a bar on stderr when there are more than 20 images."""
    _check_task(task)
    matched = match_folders(pred_dir, gt_dir)
    pairs: Iterable[Pair] = _read_pairs(matched, task)
    if progress and len(matched) > 20:
        from tqdm import tqdm

        pairs = tqdm(pairs, total=len(matched), desc="evaluate", unit="image")
    return evaluate_pairs(pairs, task, model=model)
