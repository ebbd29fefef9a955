"""Representation figures of a study for ``REPORT.md``: CKA bars (Table III), nearest-neighbour grid + NQC (Fig. 4)
and a Grad-CAM panel (Fig. 5) of the paper.

Per dataset, S is the supervised reference of Table III: the run of ``random`` at rate 1.0 with the encoder
fine-tuned (lowest seed s) in ``<work>/runs/<run_id>/``; E(m) is the encoder method m starts from:
``<work>/pretrain/<method>-<backbone>-<dataset>/``, for ``random`` the init that ``build_unet`` draws after
``seed_everything(s)``, for ``imagenet`` the download. C(m) are the runs of Fig. 5: encoder FROZEN at the rate
nearest to 2 % (:data:`CAM_RATE`; fine-tuned runs only when the study has no frozen ones), lowest seed.

- ``figures/cka_<dataset>.png`` + ``cka.csv``: Table III, minibatch linear CKA (:func:`reference_stage_cka`) of
  stages Conv1..Conv4 (layer1..layer4) between every E(m) and the ONE reference S, on tiles of the held-out images
  (``segmenter.json`` ``training.eval_ids``) cut as the segmenters saw them in training.
- ``figures/neighbours_<dataset>.png``: NQC (:func:`nqc`) of every E(m) on one view per image of the scored split
  (``split_train_eval``: the images left out of pretraining and fine-tuning) with a class label (MoNuSeg: organ,
  ISIC 2017: diagnosis) and its Fig. 4 grid (:func:`plot_neighbours`), same queries for all.
- ``figures/gradcam_<dataset>.png``: Grad-CAM (:func:`encoder_gradcam`, the encoder's last stage) of C(m) on the
  held-out tiles; CAM quality = sum(cam * mask) / sum(cam) (:func:`cam_quality`). A uniform map scores the
  tile's foreground fraction (the chance level).

A part whose inputs are missing (work folder, runs, dataset, class labels) is skipped with a one-line note.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from sslzoo.errors import DataError, SslzooError
from sslzoo.study.config import BASELINE_METHODS, StudyConfig
from sslzoo.study.folders import RUNS_DIR, pretrain_folder
from sslzoo.study.results import write_csv_atomic
from sslzoo.study.tables import markdown_table

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sslzoo.data.datasets import DatasetIndex
    from sslzoo.models.encoders import EncoderConfig
    from sslzoo.models.segmenter import Segmenter, SegmenterConfig

log = logging.getLogger(__name__)

CKA_FILE = "cka.csv"
STAGES = (1, 2, 3, 4)  # Conv1..Conv4 of Table III (sslzoo.metrics.representation.STAGE_MODULES)
SECTION = "## Representations (Table III, Figs. 4-5 style)"
#: Fig. 5's annotation rate (the paper shows frozen encoders at 2 %); the study's nearest rate is used
CAM_RATE = 0.02


@dataclass(frozen=True)
class FigureSettings:
    """How much is evaluated (small: the report runs on CPU)."""

    tiles: int = 32  # held-out tiles for CKA and Grad-CAM
    batch_size: int = 16  # CKA minibatch (the unbiased HSIC needs >= 4)
    crop_size: int = 256  # NQC view of a tiled segmenter's image: centre crop at native resolution
    queries: int = 4  # rows of the neighbour grid
    columns: int = 4  # held-out tiles shown in the Grad-CAM panel


@dataclass
class HeldOut:
    """Held-out inputs: uint8 tiles (n, s, s, 3), their label maps (n, s, s) and names ``<id>@<y>,<x>``."""

    tiles: np.ndarray
    masks: np.ndarray
    names: list[str]
    n_images: int


# ------------------------------------------------------------------------------------------------ inputs
def supervised_reference(rows: Sequence[Mapping[str, Any]], dataset: str) -> tuple[int | None, str | None]:
    """Seed s and run id of Table III's reference S: ``random``, rate 1.0, encoder fine-tuned, the lowest seed."""
    full = [r for r in rows if r["dataset"] == dataset and r["method"] == "random" and not r["frozen"]
            and math.isclose(r["rate"], 1.0)]  # fmt: skip
    if not full:
        return None, None
    best = min(full, key=lambda r: r["seed"])
    return int(best["seed"]), str(best["run_id"])


@dataclass(frozen=True)
class CamSetting:
    """The runs of Fig. 5: their rate, encoder state, seed and ``{method: run_id}``."""

    rate: float
    frozen: bool
    seed: int
    run_ids: dict[str, str]


def cam_runs(rows: Sequence[Mapping[str, Any]], dataset: str, target: float = CAM_RATE) -> CamSetting | None:
    """Fig. 5's runs: frozen encoder (fine-tuned only when the study has no frozen run), at the study's rate
    nearest to ``target`` (in log scale; the lower one on a tie), lowest seed there; None without runs."""
    subset = [r for r in rows if r["dataset"] == dataset]
    if not subset:
        return None
    frozen = any(r["frozen"] for r in subset)
    subset = [r for r in subset if r["frozen"] == frozen]
    rate = min({r["rate"] for r in subset}, key=lambda v: (abs(math.log(v / target)), v))
    subset = [r for r in subset if math.isclose(r["rate"], rate)]
    seed = min(r["seed"] for r in subset)
    return CamSetting(rate, frozen, seed, {r["method"]: r["run_id"] for r in subset if r["seed"] == seed})


def initial_encoder(
    method: str, backbone: str, dataset: str, work_dir: Path, seed: int
) -> tuple[nn.Module, EncoderConfig]:
    """E(m): the study's pretrained folder, or for a baseline what fine-tuning drew after seeding with ``seed``."""
    import torch

    from sslzoo.hub import load_encoder

    if method in BASELINE_METHODS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # finetune: pl.seed_everything(seed), then load_encoder -> build_unet
            return load_encoder(method, backbone)
    return load_encoder(pretrain_folder(work_dir, method, backbone, dataset), backbone)


def _view(image: np.ndarray, config: SegmenterConfig, crop: int) -> np.ndarray:
    """One image as the model sees it whole: squeezed to ``resize_to`` when set, else its native centre ``crop``."""
    from sslzoo.downstream.data import resize_image

    if config.resize_to:
        return resize_image(image, config.resize_to)
    y, x = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
    return image[y : y + crop, x : x + crop]


def heldout_tiles(index: DatasetIndex, ids: Sequence[str], config: SegmenterConfig, count: int) -> HeldOut:
    """Up to ``count`` held-out inputs as the segmenter saw them in training: each image squeezed to ``resize_to``
    when set, else the non-overlapping ``tile_size`` grids of all images, ``count`` cells picked evenly."""
    from sslzoo.data.datasets import read_image_size
    from sslzoo.data.tiling import Tile, pad_to, tile_grid
    from sslzoo.downstream.data import resize_image, resize_labels

    wanted = set(ids)
    samples = [s for s in index.samples if s.id in wanted and s.mask is not None]
    if not samples:
        raise DataError(f"{index.root}: none of the {len(wanted)} held-out images (training.eval_ids) has a mask")
    size = config.resize_to or config.tile_size
    cells: list[tuple[int, Tile | None]] = []
    for k, sample in enumerate(samples):
        grid = None if config.resize_to else tile_grid(*read_image_size(sample.image), size, overlap=0)
        cells += [(k, None)] if grid is None else [(k, t) for t in grid]
    picks = np.unique(np.linspace(0, len(cells) - 1, min(count, len(cells))).round().astype(int))
    decoded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    tiles, masks, names = [], [], []
    for k, tile in (cells[i] for i in picks):
        if k not in decoded:
            decoded[k] = (index.read_image(samples[k]), index.read_mask(samples[k]))
        image, mask = decoded[k]
        if tile is None:
            tiles.append(resize_image(image, size))
            masks.append(resize_labels(mask, size))
            names.append(samples[k].id)
            continue
        window = (slice(tile.y, tile.y + tile.h), slice(tile.x, tile.x + tile.w))
        tiles.append(pad_to(image[window], size, size))
        masks.append(pad_to(mask[window], size, size, mode="constant"))
        names.append(f"{samples[k].id}@{tile.y},{tile.x}")
    return HeldOut(np.stack(tiles), np.stack(masks), names, len(decoded))


def _batches(
    images: Sequence[np.ndarray] | np.ndarray, mean: Sequence[float], std: Sequence[float], size: int
) -> list[torch.Tensor]:
    """Normalised float32 batches (B, 3, H, W) of uint8 RGB images, in order."""
    import torch

    from sslzoo.data.transforms import normalize_to_tensor

    return list(torch.stack([normalize_to_tensor(im, mean, std) for im in images]).split(size))


def _dataset_path(dataset: str, config: StudyConfig | None, run: SegmenterConfig, data_root: Path | None) -> Path:
    """The dataset folder: ``data_root/<folder name>`` when given, else study.json's path (else the run's)."""
    stored = Path(config.datasets[dataset].path if config else run.training.get("data", dataset))
    return data_root / stored.name if data_root is not None else stored


def _save_photo_png(fig: Any, path: Path, dpi: int) -> Path:
    """Save a figure of photos as a 256-colour PNG (median-cut palette, no dither): about a quarter of the bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(buffer).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


# ------------------------------------------------------------------------------------------------ CKA
def cka_rows(
    dataset: str,
    starts: Mapping[str, tuple[nn.Module, EncoderConfig]],
    reference: Segmenter,
    reference_id: str,
    held: HeldOut,
    batch_size: int,
) -> list[dict[str, Any]]:
    """Table III: one ``cka.csv`` row per starting encoder E(m), CKA per stage (Conv1..Conv4) against the ONE
    supervised reference S (:func:`reference_stage_cka`) and their mean."""
    from sslzoo.metrics.representation import reference_stage_cka, stage_means

    if not starts:
        return []
    size = min(batch_size, len(held.tiles))
    batches = _batches(held.tiles, reference.config.mean, reference.config.std, size)
    encoders = {method: encoder for method, (encoder, _) in starts.items()}
    values = reference_stage_cka(encoders, cast("nn.Module", reference.model.encoder), batches, STAGES, size)
    return [{"dataset": dataset, "method": method, "reference_run": reference_id,
             "n_tiles": len(held.tiles) // size * size, **stage_means(values[method])}
            for method in encoders]  # fmt: skip


def plot_cka(rows: Sequence[Mapping[str, Any]], colours: Mapping[str, int], path: Path, title: str) -> Path:
    """Grouped bars: CKA per stage, one bar per method (colours as in the score curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sslzoo.metrics.representation import STAGE_LABELS

    labels = [STAGE_LABELS[s] for s in STAGES]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    width = 0.8 / len(rows)
    cmap = plt.get_cmap("tab10")
    for k, row in enumerate(rows):
        x = np.arange(len(labels)) + (k - (len(rows) - 1) / 2) * width
        bars = ax.bar(x, [row[label] for label in labels], width, label=row["method"],
                      color=cmap(colours[row["method"]] % 10))  # fmt: skip
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("linear CKA vs the supervised reference")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left", ncols=len(rows))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ NQC
def neighbour_figure(
    index: DatasetIndex,
    kind: str | None,
    starts: Mapping[str, tuple[nn.Module, EncoderConfig]],
    view: SegmenterConfig,
    settings: FigureSettings,
    path: Path,
    scored_ids: Sequence[str] | None = None,
) -> tuple[dict[str, Any], int, int, dict[str, int]]:
    """NQC of every E(m) on one view per labelled image (of ``scored_ids`` when given: the scored split), and
    their Fig. 4 grids (two per row) in ``path``.

    The native crop is ``settings.crop_size`` or the smallest image side. Returns ``({method: NQCResult}, n images,
    crop, class counts)``; raises DataError when fewer than 2 of those images have a class.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image
    import matplotlib.pyplot as plt

    from sslzoo.metrics.representation import embed_images, nqc, plot_neighbours, select_samples

    if not starts:
        raise DataError("no starting encoder could be loaded")
    _, samples = select_samples(index.root, kind, labelled=True)
    if scored_ids is not None:
        wanted = set(scored_ids)
        samples = [s for s in samples if s.id in wanted]
        if len(samples) < 2:
            raise DataError(f"{index.root}: NQC needs a class label for at least 2 images of the scored split, "
                            f"found {len(samples)} of {len(wanted)}")  # fmt: skip
    images = [index.read_image(s) for s in samples]
    crop = min(settings.crop_size, *(min(im.shape[:2]) for im in images))
    views = [_view(im, view, crop) for im in images]
    labels = [str(s.label) for s in samples]
    results = {}
    for method, (encoder, config) in starts.items():
        results[method] = nqc(embed_images(encoder, _batches(views, config.mean, config.std, 8)), labels)
    rng = np.random.default_rng(0)  # as `sslzoo neighbours`
    queries = sorted(rng.choice(len(samples), size=min(settings.queries, len(samples)), replace=False).tolist())
    ncols = min(2, len(results))
    nrows = -(-len(results) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, (2.6 * len(queries) + 0.4) * nrows), squeeze=False)
    with tempfile.TemporaryDirectory() as tmp:
        for ax, (method, result) in zip(axes.flat, results.items(), strict=False):
            grid = plot_neighbours(views, labels, result.nearest_index, result.farthest_index, queries,
                                   Path(tmp) / f"{method}.png")  # fmt: skip
            ax.imshow(matplotlib.image.imread(grid))
            ax.set_title(f"{method}: NQC {result.nqc:.2f} (chance {result.loo_expectation:.2f})", fontsize=14)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    _save_photo_png(fig, path, dpi=70)
    plt.close(fig)
    counts = next(iter(results.values())).class_counts
    return results, len(samples), crop, {str(k): v for k, v in sorted(counts.items())}


# ------------------------------------------------------------------------------------------------ Grad-CAM
def gradcam_qualities(segmenters: Mapping[str, Segmenter], held: HeldOut) -> dict[str, tuple[np.ndarray, list[float]]]:
    """``{method: (CAMs (n, s, s), CAM quality per tile)}`` of each segmenter (frozen ones included, as Fig. 5)
    on the held-out tiles."""
    from sslzoo.metrics.cam import cam_quality, encoder_gradcam

    out = {}
    for method, segmenter in segmenters.items():
        batches = _batches(held.tiles, segmenter.config.mean, segmenter.config.std, 8)
        cams = np.concatenate([encoder_gradcam(segmenter.model, batch) for batch in batches])
        out[method] = (cams, [cam_quality(c, m) for c, m in zip(cams, held.masks, strict=True)])
    return out


def plot_gradcam(cams: Mapping[str, tuple[np.ndarray, list[float]]], held: HeldOut, columns: int, path: Path) -> Path:
    """Fig. 5 style: first row the tiles with the ground-truth outline, then one row of CAM overlays per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sslzoo.metrics.cam import overlay

    shown = np.unique(np.linspace(0, len(held.tiles) - 1, min(columns, len(held.tiles))).round().astype(int))
    rows = 1 + len(cams)
    fig, axes = plt.subplots(rows, len(shown), figsize=(2.3 * len(shown) + 0.4, 2.3 * rows), squeeze=False)
    for col, j in enumerate(shown):
        ax = axes[0][col]
        ax.imshow(held.tiles[j])
        ax.contour(held.masks[j] > 0, levels=[0.5], colors="lime", linewidths=0.6)
        image_id, _, position = held.names[j].partition("@")
        short = image_id if len(image_id) <= 14 else image_id[:13] + "…"
        ax.set_title(f"{short} {position}\nforeground {np.mean(held.masks[j] > 0):.2f}", fontsize=8)
        for row, (maps, quality) in enumerate(cams.values(), start=1):
            axes[row][col].imshow(overlay(held.tiles[j], maps[j]))
            axes[row][col].set_title(f"q = {quality[j]:.2f}", fontsize=8)
    for row, label in enumerate(["image + mask", *cams]):
        axes[row][0].set_ylabel(label, fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    _save_photo_png(fig, path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ report section
def _skip_note(name: str, exc: Exception) -> list[str]:
    log.warning("%s skipped", name, exc_info=exc)
    return [f"_{name} skipped: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}_", ""]


def _inputs(held: HeldOut, config: SegmenterConfig) -> str:
    how = "whole images squeezed" if config.resize_to else "native resolution"
    return f"{len(held.tiles)} tiles of {held.tiles.shape[1]} px from the {held.n_images} held-out images ({how})"


@dataclass
class DatasetInputs:
    """What the parts of one dataset's section share: Table III's reference S (None when its run is missing),
    Fig. 5's segmenters C(m) (``cam``: which runs), the starting encoders E(m), the dataset, the scored split's
    ids, and the held-out tiles (cut on first use, :func:`heldout_tiles`)."""

    dataset: str
    methods: Sequence[str]
    seed: int
    reference: Segmenter | None
    reference_id: str | None
    cam: CamSetting | None
    cam_segmenters: dict[str, Segmenter]
    starts: dict[str, tuple[nn.Module, EncoderConfig]]
    index: DatasetIndex
    kind: str | None
    scored_ids: list[str]
    figures: Path
    settings: FigureSettings

    @property
    def first(self) -> SegmenterConfig:
        """The config of a loaded segmenter (the reference first): tiling, resizing, held-out ids."""
        if self.reference is not None:
            return self.reference.config
        return next(iter(self.cam_segmenters.values())).config

    @functools.cached_property
    def held(self) -> HeldOut:
        """The held-out tiles of :attr:`first` (computed again after a failure, never cached then)."""
        return heldout_tiles(self.index, self.first.training.get("eval_ids", []), self.first, self.settings.tiles)


def dataset_section(
    dataset: str,
    rows: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    out: Path,
    work: Path,
    config: StudyConfig | None,
    data_root: Path | None,
    settings: FigureSettings,
) -> tuple[list[str], list[dict[str, Any]]]:
    """The Markdown of one dataset (figures written into ``out/figures``) and its ``cka.csv`` rows.

    Phases: find Table III's supervised reference and Fig. 5's runs and load their segmenters, find the dataset
    and its scored split, load the starting encoders, then the CKA, NQC and Grad-CAM parts (each replaced by a
    one-line note when it fails).
    """
    from sslzoo.data.datasets import open_dataset
    from sslzoo.downstream.data import split_train_eval

    lines = [f"### {dataset}", ""]
    seed, reference_id = supervised_reference(rows, dataset)
    reference_found = runs_found({"random": reference_id} if reference_id else {}, work)
    cam = cam_runs(rows, dataset)
    cam_found = runs_found(cam.run_ids, work) if cam else {}
    if not reference_found and not cam_found:
        return lines + [f"_Skipped: neither the supervised reference (random, rate 100 %, fine-tuned) nor the "
                        f"Grad-CAM runs have a segmenter in {work / RUNS_DIR}._", ""], []  # fmt: skip
    reference = load_segmenters(reference_found, ["random"], work).get("random")
    cam_segmenters = load_segmenters(cam_found, methods, work)
    first = reference.config if reference is not None else next(iter(cam_segmenters.values())).config
    path = _dataset_path(dataset, config, first, data_root)
    if not path.is_dir():
        return lines + [f"_Skipped: dataset folder {path} not found (pass `--data-root`)._", ""], []
    kind = config.datasets[dataset].kind if config else None
    index = open_dataset(path, kind)
    eval_split = config.finetune.eval_split if config else first.training.get("eval_split")
    scored = [s.id for s in split_train_eval(index, eval_split).eval]
    backbone = config.backbone if config else first.backbone
    start_seed = seed if seed is not None else (cam.seed if cam else 0)
    starts, unloaded = starting_encoders(methods, backbone, dataset, work, start_seed)
    inputs = DatasetInputs(dataset, methods, start_seed, reference, reference_id if reference else None, cam,
                           cam_segmenters, starts, index, kind, scored, out / "figures", settings)  # fmt: skip
    missing = sorted(set(cam.run_ids.values()) - set(cam_found.values())) if cam else []
    if reference_id and not reference_found:
        missing.insert(0, reference_id)
    lines += reference_lines(inputs, missing, unloaded, work)
    cka_lines, cka = cka_part(inputs)
    lines += cka_lines
    lines += _guarded("NQC / neighbour grid", neighbour_part, inputs)
    lines += _guarded("Grad-CAM", gradcam_part, inputs)
    return lines, cka


def runs_found(run_ids: Mapping[str, str], work: Path) -> dict[str, str]:
    """``{method: run_id}`` of the runs whose segmenter is in ``work/runs``."""
    from sslzoo.models.segmenter import SEGMENTER_FILE

    return {m: r for m, r in run_ids.items() if (work / RUNS_DIR / r / SEGMENTER_FILE).is_file()}


def load_segmenters(present: Mapping[str, str], methods: Sequence[str], work: Path) -> dict[str, Segmenter]:
    """The segmenters of ``present`` (``{method: run_id}``), in the order of ``methods``."""
    from sslzoo.models.segmenter import Segmenter

    return {m: Segmenter.from_pretrained(work / RUNS_DIR / present[m]) for m in methods if m in present}


def starting_encoders(
    methods: Sequence[str], backbone: str, dataset: str, work: Path, seed: int
) -> tuple[dict[str, tuple[nn.Module, EncoderConfig]], list[str]]:
    """E(m) of every method that loads (:func:`initial_encoder`), and ``"<method> (<error>)"`` of those that do not."""
    starts, unloaded = {}, []
    for method in methods:
        try:
            starts[method] = initial_encoder(method, backbone, dataset, work, seed)
        except SslzooError as exc:
            unloaded.append(f"{method} ({type(exc).__name__}: {exc})")
    return starts, unloaded


def _state(frozen: bool) -> str:
    return "frozen" if frozen else "fine-tuned"


def reference_lines(inputs: DatasetInputs, missing: Sequence[str], unloaded: Sequence[str], work: Path) -> list[str]:
    """Which runs were used (Table III's reference, Fig. 5's runs), which were not found, which starting
    encoders did not load."""
    lines = []
    if inputs.reference_id:
        lines.append(f"Table III reference S: `{inputs.reference_id}` (random init, encoder fine-tuned, rate 100 %, "
                     f"seed {inputs.seed}), one network for every method.")  # fmt: skip
    if inputs.cam is not None and inputs.cam_segmenters:
        cam = inputs.cam
        lines.append(f"Fig. 5 runs (encoder {_state(cam.frozen)}, rate {100 * cam.rate:g} %, seed {cam.seed}): "
                     + ", ".join(f"`{cam.run_ids[m]}`" for m in inputs.cam_segmenters) + ".")  # fmt: skip
    if missing:
        lines.append(f"Runs not found in {work / RUNS_DIR}: {', '.join(missing)}.")
    if unloaded:
        lines.append(f"Starting encoders not loaded: {'; '.join(unloaded)}.")
    return [" ".join(lines), ""] if lines else []


def _guarded(name: str, part: Callable[[DatasetInputs], list[str]], inputs: DatasetInputs) -> list[str]:
    """``part(inputs)``, or the one-line skip note of ``name`` when it raises."""
    try:
        return part(inputs)
    except Exception as exc:
        return _skip_note(name, exc)


def cka_part(inputs: DatasetInputs) -> tuple[list[str], list[dict[str, Any]]]:
    """The CKA rows (:func:`cka_rows`) and their Markdown; rows computed before a failing figure are kept."""
    if inputs.reference is None or inputs.reference_id is None:
        return ["_CKA skipped: Table III needs the supervised reference run (random, encoder fine-tuned, "
                "rate 100 %)._", ""], []  # fmt: skip
    try:
        cka = cka_rows(inputs.dataset, inputs.starts, inputs.reference, inputs.reference_id, inputs.held,
                       inputs.settings.batch_size)  # fmt: skip
    except Exception as exc:
        return _skip_note("CKA", exc), []
    try:
        return cka_lines(inputs, cka), cka
    except Exception as exc:
        return _skip_note("CKA", exc), cka


def cka_lines(inputs: DatasetInputs, cka: Sequence[Mapping[str, Any]]) -> list[str]:
    """Table III style: the CKA figure (``figures/cka_<dataset>.png``) and table."""
    from sslzoo.metrics.representation import STAGE_LABELS

    dataset, settings, held = inputs.dataset, inputs.settings, inputs.held
    if not cka:
        return ["_CKA skipped: no starting encoder could be loaded._", ""]
    name = f"cka_{dataset}.png"
    plot_cka(cka, {m: k for k, m in enumerate(inputs.methods)}, inputs.figures / name,
             f"{dataset}: starting encoders vs the supervised reference (seed {inputs.seed})")  # fmt: skip
    labels = [STAGE_LABELS[s] for s in STAGES]
    body = [[r["method"], *(f"{r[k]:.3f}" for k in [*labels, "mean"])] for r in cka]
    return [
        "#### CKA per encoder stage (Table III style)",
        "",
        f"Minibatch linear CKA (unbiased HSIC, minibatches of {min(settings.batch_size, len(held.tiles))}) "
        "between each method's starting encoder E(m) (pretrained; for random the seeded init) and ONE network "
        f"trained supervised on the whole training set (`{inputs.reference_id}`: random init, encoder "
        f"fine-tuned, rate 100 %), on {_inputs(held, inputs.first)}; 1 = the same representation up to a "
        "rotation and scale. Conv1..Conv4 = layer1..layer4 (the authors' backbone.1..4). Numbers in `cka.csv`.",
        "",
        *markdown_table(["method", *labels, "mean"], body).splitlines(),
        "",
        f"![{dataset} CKA](figures/{name})",
        "",
    ]


def neighbour_part(inputs: DatasetInputs) -> list[str]:
    """Fig. 4 style: NQC of every starting encoder on the scored split and the neighbour grid."""
    dataset, first = inputs.dataset, inputs.first
    name = f"neighbours_{dataset}.png"
    results, n, crop, counts = neighbour_figure(inputs.index, inputs.kind, inputs.starts, first, inputs.settings,
                                                inputs.figures / name, inputs.scored_ids)  # fmt: skip
    what = (f"whole image squeezed to {first.resize_to} px" if first.resize_to
            else f"centre crop of {crop} px at native resolution")  # fmt: skip
    body = [[m, f"{r.nqc:.3f}", f"{r.loo_expectation:.3f}", f"{r.random_expectation:.3f}"]
            for m, r in results.items()]  # fmt: skip
    return [
        "#### Nearest neighbours and NQC (Fig. 4 style)",
        "",
        "NQC = share of images whose nearest neighbour (Euclidean, 10-d PCA of the pooled last stage; not the "
        f"image itself) has the same class, for each starting encoder on the {n} images of the scored split "
        f"with a class label (of {len(inputs.scored_ids)} scored-split images; none of them was seen in "
        f"pretraining or fine-tuning; {what}; classes: "
        + ", ".join(f"{c} {k}" for c, k in counts.items())
        + "). Chance: the leave-one-out expectation sum n_c (n_c - 1) / (l (l - 1)); the paper's sum (n_c/l)^2 "
        "is listed too. Grid: query, nearest and farthest neighbour; green frame = same class.",
        "",
        *markdown_table(["method", "NQC", "chance (leave-one-out)", "sum (n_c/l)^2"], body).splitlines(),
        "",
        f"![{dataset} neighbours](figures/{name})",
        "",
    ]


def gradcam_part(inputs: DatasetInputs) -> list[str]:
    """Fig. 5 style: CAM quality of the Grad-CAM runs and the panel (``figures/gradcam_<dataset>.png``)."""
    dataset, settings, held, cam = inputs.dataset, inputs.settings, inputs.held, inputs.cam
    if cam is None or not inputs.cam_segmenters:
        return ["_Grad-CAM skipped: no segmenter of the Grad-CAM runs was found._", ""]
    name = f"gradcam_{dataset}.png"
    cams = gradcam_qualities(inputs.cam_segmenters, held)
    plot_gradcam(cams, held, settings.columns, inputs.figures / name)
    chance = float(np.mean([np.mean(m > 0) for m in held.masks]))
    body = [[m, f"{np.mean(q):.3f} ± {np.std(q, ddof=1) if len(q) > 1 else 0.0:.3f}", f"{min(q):.2f}",
             f"{max(q):.2f}"] for m, (_, q) in cams.items()]  # fmt: skip
    setting = (f"encoder {_state(cam.frozen)} at rate {100 * cam.rate:g} % (the study's rate nearest to the "
               f"paper's {100 * CAM_RATE:g} %), seed {cam.seed}")  # fmt: skip
    if not cam.frozen:
        setting += "; the study has no frozen runs, the paper shows frozen encoders"
    return [
        "#### Grad-CAM (Fig. 5 style)",
        "",
        f"Grad-CAM of each method's segmenter ({setting}) at its encoder's last stage (target: the sum of the "
        f"predicted foreground outputs), on {_inputs(held, inputs.first)}. CAM quality = sum(cam * mask) / "
        f"sum(cam); a uniform map scores the foreground fraction, here {chance:.3f} on average (chance level). "
        f"Panel: {min(settings.columns, len(held.tiles))} of the tiles, q = that tile's CAM quality.",
        "",
        *markdown_table(["method", "CAM quality (mean ± std over tiles)", "min", "max"], body).splitlines(),
        "",
        f"![{dataset} Grad-CAM](figures/{name})",
        "",
    ]


def representation_figures(
    out_dir: str | Path,
    work_dir: str | Path | None,
    rows: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    config: StudyConfig | None = None,
    data_root: str | Path | None = None,
    settings: FigureSettings = FigureSettings(),
) -> list[str]:
    """Write the figures and ``out_dir/cka.csv``; return the report's Markdown section (notes for skipped parts).

    ``rows`` are ``runs.csv`` rows, ``methods`` the order of bars and table rows, ``work_dir`` the study's
    ``--work``; ``data_root`` replaces the folder holding the datasets (``data_root/<dataset folder name>``).
    """
    out = Path(out_dir)
    lines = [SECTION, ""]
    if work_dir is None or not Path(work_dir).is_dir():
        reason = "no work folder given" if work_dir is None else f"work folder {work_dir} not found"
        return lines + [f"_Skipped: {reason}; pass `--work DIR` (the `--work` of `sslzoo study run`)._", ""]
    work = Path(work_dir)
    started = time.perf_counter()
    cka: list[dict[str, Any]] = []
    for dataset in sorted({r["dataset"] for r in rows}):
        present = [m for m in methods if any(r["method"] == m and r["dataset"] == dataset for r in rows)]
        try:
            section, rows_cka = dataset_section(dataset, rows, present, out, work, config,
                                                None if data_root is None else Path(data_root), settings)  # fmt: skip
        except Exception as exc:
            section, rows_cka = [f"### {dataset}", "", *_skip_note("Representation figures", exc)], []
        lines += section
        cka += rows_cka
    if cka:
        columns = ["dataset", "method", "reference_run", "n_tiles", *(f"Conv{s}" for s in STAGES), "mean"]
        write_csv_atomic(out / CKA_FILE, columns, cka)
    lines += [f"Computed in {time.perf_counter() - started:.0f} s from the work folder `{work}`.", ""]
    return lines
