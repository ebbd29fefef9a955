"""How a zoo encoder is measured: NQC on class-labelled images and a frozen-encoder few-label probe.

**NQC** (:func:`sslzoo.metrics.representation.nqc`): each image is seen as in pretraining (squeezed to
``resize`` when the dataset is pretrained so, then cut into ``input_size`` tiles, up to ``tiles_per_image`` of
them evenly spread); its embedding is the mean over those tiles of the global-average-pooled last stage. PCA to 10
dimensions on the evaluated set, nearest neighbour, share with the same class; reported with the chance levels
``sum_c (n_c/l)^2`` and the leave-one-out ``sum_c n_c (n_c - 1) / (l (l - 1))``.

**Probe** (:func:`run_probe`): :func:`sslzoo.downstream.finetune.finetune` with the encoder frozen, the decoder
trained for a fixed number of steps (``max_steps``; no validation tiles, so nothing stops it early) on a small
labelled subset (``rate`` of the training tiles), and scored on held-out images: DSC (semantic) or AJI+
(instance, after the seeded watershed), once per seed. Random init is measured the same way and is the reference.

**Gain** (:func:`gain_over_reference`): mean score minus the reference's mean, with the one-tailed two-sample
Student t-test (H0: method <= reference; ``scipy.stats.ttest_ind(..., alternative="greater")``).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from sslzoo.errors import DataError
from sslzoo.zoo.config import NQCSettings, ProbeSettings

PRIMARY_METRIC: dict[str, str] = {"semantic": "dice", "instance": "aji_plus"}


class NQCRecord(BaseModel):
    """``nqc.json`` of an entry."""

    nqc: float
    chance: float = Field(description="leave-one-out chance level sum_c n_c (n_c - 1) / (l (l - 1))")
    random_expectation: float = Field(description="the paper's chance level sum_c (n_c / l)^2")
    n_images: int
    classes: dict[str, int]
    images: str = Field(description="heldout | all")
    label: str = Field(description="what the classes are (diagnosis, organ)")
    seconds: float


class ProbeRecord(BaseModel):
    """``probe.json`` of an entry: the per-seed scores of the frozen-encoder probe."""

    metric: str
    scores: dict[int, float] = Field(description="seed -> mean over the held-out images of the primary metric")
    mean: float
    std: float = Field(description="sample standard deviation over seeds (ddof 1; 0 for one seed)")
    n_train_tiles: int
    n_eval_images: int
    eval_rule: str
    steps: int
    seconds: float


CLASS_LABELS: dict[str, str] = {"isic2017": "diagnosis", "monuseg": "organ", "dsb2018": "class"}


# ------------------------------------------------------------------------------------------------ images
def heldout_split(index: Any, eval_split: str | None) -> Any:
    """The probe's training and held-out images (``split_train_eval``: test/val split, else a fixed 20 %)."""
    from sslzoo.downstream.data import split_train_eval

    return split_train_eval(index, eval_split)


def encoder_views(image: np.ndarray, size: int, resize: int | None, tiles_per_image: int) -> list[np.ndarray]:
    """The ``size`` x ``size`` tiles an encoder sees of ``image`` (squeezed to ``resize`` first when given)."""
    from sslzoo.data.resize import resize_image
    from sslzoo.data.tiling import pad_to
    from sslzoo.downstream.data import image_tiles

    if resize:
        image = resize_image(image, resize)
    grid = image_tiles(image.shape[0], image.shape[1], size, tiles_per_image)
    return [np.ascontiguousarray(pad_to(image[t.y : t.y + t.h, t.x : t.x + t.w], size, size)) for t in grid]


def image_embeddings(
    encoder: Any,
    images: Sequence[np.ndarray],
    mean: Sequence[float],
    std: Sequence[float],
    size: int,
    resize: int | None,
    tiles_per_image: int,
    batch_size: int = 16,
) -> np.ndarray:
    """``(n, d)``: per image, the mean of :func:`sslzoo.metrics.representation.embed_images` over its views."""
    import torch

    from sslzoo.data.transforms import normalize_to_tensor
    from sslzoo.metrics.representation import embed_images

    rows = []
    for image in images:
        views = [normalize_to_tensor(v, mean, std) for v in encoder_views(image, size, resize, tiles_per_image)]
        batches = [torch.stack(views[i : i + batch_size]) for i in range(0, len(views), batch_size)]
        rows.append(embed_images(encoder, batches).mean(axis=0))
    return np.stack(rows)


def measure_nqc(
    encoder: Any,
    mean: Sequence[float],
    std: Sequence[float],
    index: Any,
    samples: Sequence[Any],
    settings: NQCSettings,
    size: int,
    resize: int | None,
    images: str,
) -> NQCRecord:
    """NQC of ``encoder`` on the class-labelled ``samples`` (see the module docstring)."""
    import time

    from sslzoo.metrics.representation import nqc

    started = time.perf_counter()
    labelled = [s for s in samples if s.label not in (None, "")]
    if len(labelled) < 2:
        raise DataError(
            f"{index.root}: NQC needs class labels for at least 2 images ({images} images), found {len(labelled)}; "
            "add a labels.csv (id,split,class) or set nqc.images: all"
        )
    pixels = [index.read_image(s) for s in labelled]
    embeddings = image_embeddings(encoder, pixels, mean, std, size, resize, settings.tiles_per_image)
    labels = [str(s.label) for s in labelled]
    result = nqc(embeddings, labels, n_components=settings.n_components)
    return NQCRecord(
        nqc=result.nqc,
        chance=result.loo_expectation,
        random_expectation=result.random_expectation,
        n_images=len(labelled),
        classes={str(k): int(v) for k, v in sorted(result.class_counts.items())},
        images=images,
        label=CLASS_LABELS.get(index.kind, "class"),
        seconds=round(time.perf_counter() - started, 3),
    )


# ------------------------------------------------------------------------------------------------ probe
def probe_config(init: str, backbone: str, kind: str, task: str | None, settings: ProbeSettings, seed: int) -> Any:
    """The :class:`~sslzoo.downstream.finetune.FinetuneConfig` of one probe seed (encoder frozen, fixed steps)."""
    from sslzoo.downstream.finetune import FinetuneConfig

    widths = {} if settings.decoder_channels is None else {"decoder_channels": settings.decoder_channels}
    return FinetuneConfig(
        **widths,
        init=init,
        backbone=backbone,
        task=task,
        dataset=kind,
        rate=settings.rate,
        frozen=True,
        seed=seed,
        epochs=1,  # unused: max_steps bounds the run
        max_steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        tile_size=settings.tile_size,
        inference_tile_size=settings.inference_tile_size,
        tiles_per_image=settings.tiles_per_image,
        input_size=settings.input_size,
        val_fraction=0.0,  # fixed steps: no validation tiles, no early stopping
        patience=max(1, settings.steps),
        eval_split=settings.eval_split,
        workers=settings.workers,
    )


def run_probe(
    init: str,
    backbone: str,
    data: Path,
    kind: str,
    task: str | None,
    settings: ProbeSettings,
    out_dir: Path,
    *,
    accelerator: str = "auto",
    devices: Any = "auto",
    precision: Any = None,
    keep_first: bool = True,
) -> ProbeRecord:
    """The probe of ``init`` (an encoder folder or ``random``), one finetune run per seed in ``out_dir/seed<k>``.

    Finished seeds are read back (``finetune`` returns a stored ``result.json``); an interrupted one resumes from
    its checkpoint. Checkpoints are deleted after each seed, and the weights of every seed but the first
    (``keep_first``: that one becomes the entry's segmenter).
    """
    import time

    from sslzoo.downstream.finetune import finetune

    started = time.perf_counter()
    scores: dict[int, float] = {}
    results = []
    for k, seed in enumerate(settings.seeds):
        run_dir = out_dir / f"seed{seed}"
        result = finetune(
            probe_config(init, backbone, kind, task, settings, seed),
            data,
            run_dir,
            accelerator=accelerator,
            devices=devices,
            precision=precision,
            resume=True,
            progress=False,
        )
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        if k > 0 or not keep_first:
            for name in ("model.safetensors",):
                (run_dir / name).unlink(missing_ok=True)
        scores[seed] = float(result.score)
        results.append(result)
    values = list(scores.values())
    first = results[0]
    eval_rule = json.loads((out_dir / f"seed{settings.seeds[0]}" / "segmenter.json").read_text())["training"].get(
        "eval_rule", ""
    )
    return ProbeRecord(
        metric=first.metric,
        scores=scores,
        mean=float(np.mean(values)),
        std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        n_train_tiles=first.n_train_tiles,
        n_eval_images=first.n_eval_images,
        eval_rule=eval_rule,
        steps=settings.steps,
        seconds=round(time.perf_counter() - started, 3),
    )


def gain_over_reference(scores: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """``(mean(scores) - mean(reference), p)``: one-tailed two-sample Student t-test, H0 scores <= reference.

    ``p`` is NaN when a side has fewer than 2 values or both have zero variance.
    """
    from scipy import stats

    a, b = np.asarray(scores, dtype=float), np.asarray(reference, dtype=float)
    gain = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return gain, math.nan
    p = float(stats.ttest_ind(a, b, equal_var=True, alternative="greater").pvalue)
    return gain, p
