"""Which encoder for my data? Rank candidate encoders on a user's few labelled images, without training a decoder.

The proxy of few-label fine-tuning quality is a frozen-encoder **hypercolumn read-out** (docs/rank.md):

1. **Features.** Each image is normalised with the encoder's mean/std, reflect-padded to a multiple of 32 and
   passed once through the frozen encoder. Every stage (strides 2..32) is brought to one grid of stride
   :data:`GRID_STRIDE` (4): the stride-2 stage by 2x2 average pooling, the coarser ones by bilinear upsampling; the
   stages are concatenated per grid cell (a *hypercolumn*: 64+64+128+256+512 = 1024 values for a ResNet-18).
   Stages wider than :data:`MAX_STAGE_CHANNELS` are reduced by a fixed seeded random orthogonal projection.
2. **Targets** per grid cell (the mask averaged over the cell's 4x4 pixels): the foreground share, and for
   ``instance`` also the per-object distance map (:func:`sslzoo.data.targets.distance_map_target`, the
   fine-tuning target).
3. **Read-out.** A closed-form ridge regression per target on standardised features (intercept included),
   fitted on the training images of a split from per-image sufficient statistics (``X^T X``, ``X^T y``, sums)
   of ``pixels_per_image`` seeded grid cells per image, so every split costs one eigendecomposition and no pass
   over the pixels. Ridge strengths :data:`LAMBDAS` (relative to the standardised features' unit variance) are
   all tried; the best mean score over the splits is kept (one strength per encoder and proxy).
4. **Scores** on the held-out images of each of ``splits`` repeated seeded splits (``test_fraction`` of the
   images held out); the predicted map is upsampled bilinearly to the image's own size:

   - ``dice``/``fg_dice``: DSC of the foreground read-out thresholded at 0.5 (the semantic proxy);
   - ``dist_r2``: R² of the distance-map read-out (pooled over the split's held-out pixels; read-outs are clipped to
     the targets' range [0, 1] first, so one unusual image cannot dominate);
   - ``aji_plus``: AJI+ after the fixed seeded watershed (the fine-tuning post-processing) of the distance
     read-out, at the ridge strength that ``dist_r2`` chose.

   An encoder's ``score`` is the mean over splits of the task's proxy (:data:`DEFAULT_PROXY`), ``std`` its
   sample standard deviation over splits; every split uses the same held-out images for all encoders, so
   differences between encoders are paired.

Candidates (:func:`available_encoders`): the packaged encoders, the finished encoder entries of the zoo folders
named by ``$SSLZOO_ZOO_DIR`` (``sslzoo zoo build``), and ``random`` init (built with a fixed seed, at the backbone
most candidates share). Nothing is downloaded: ``imagenet`` and Hub-only entries are used only when named and
already local. :func:`rank_encoders` (arrays) and :func:`rank_folder` (a dataset folder) are what the CLI
(``sslzoo rank``) and the REST endpoint (``POST /predictions/rank``) call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from pydantic import BaseModel, Field, model_validator

from sslzoo.errors import ConfigError, DataError, NotFoundError
from sslzoo.vocabulary import RANK_PROBES, TASKS, RankBudget, RankProbe, RankProxy, Task

if TYPE_CHECKING:
    import torch

#: Grid of the hypercolumns: one cell per GRID_STRIDE x GRID_STRIDE pixels.
GRID_STRIDE = 4
#: Encoder stages wider than this are reduced by a seeded random orthogonal projection (ResNet-50: 1024, 2048).
MAX_STAGE_CHANNELS = 512
#: Ridge strengths tried, relative to the unit variance of the standardised features.
LAMBDAS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: The proxies each task computes (the first is the semantic default).
PROXIES: dict[str, tuple[str, ...]] = {"semantic": ("dice",), "instance": ("fg_dice", "dist_r2", "aji_plus")}
#: The proxies of ``probe="finetune"`` (:mod:`sslzoo.downstream.rank_finetune`), the first the task's default.
FINETUNE_PROXIES: dict[str, tuple[str, ...]] = {
    "semantic": ("finetune_dice", "finetune_loss", "finetune_train_loss"),
    "instance": ("finetune_aji_plus", "finetune_dice", "finetune_loss", "finetune_train_loss"),
}
Proxy = RankProxy
Probe = RankProbe
PROBES: tuple[str, ...] = RANK_PROBES
#: The proxy an encoder is ranked by, per task. Instance: chosen on DSB 2018 (docs/rank.md, bench/rank_validation.py).
DEFAULT_PROXY: dict[str, Proxy] = {"semantic": "dice", "instance": "fg_dice"}
PROXY_DESCRIPTIONS: dict[str, str] = {
    "dice": "foreground DSC of a ridge read-out",
    "fg_dice": "foreground DSC of a ridge read-out",
    "dist_r2": "R² of a ridge read-out of the distance map",
    "aji_plus": "AJI+ after watershed of a ridge read-out of the distance map",
    "finetune_dice": "foreground DSC of a short frozen-encoder U-Net fine-tune",
    "finetune_aji_plus": "AJI+ after watershed of a short frozen-encoder U-Net fine-tune",
    "finetune_loss": "minus the held-out training loss (Dice / smooth L1) of a short frozen-encoder U-Net fine-tune",
    "finetune_train_loss": "minus the mean training-batch loss before each step of a short frozen-encoder U-Net "
    "fine-tune (learning speed)",
}
#: ``--budget`` presets: repeated splits and grid cells per image fitted.
BUDGETS: dict[str, tuple[int, int]] = {"quick": (3, 1024), "standard": (5, 2048), "thorough": (10, 4096)}
#: ``--budget`` presets of ``probe="finetune"``: repeated splits and decoder steps per split.
FINETUNE_BUDGETS: dict[str, tuple[int, int]] = {"quick": (1, 20), "standard": (2, 15), "thorough": (3, 40)}
Budget = RankBudget
#: Fewer labelled images than this: the ranking is reported with a warning.
FEW_IMAGES = 8
#: Below this split agreement a ranking carries a warning that its order is mostly noise (docs/rank.md).
UNSTABLE_AGREEMENT = 0.5
#: Baseline backbone when no other candidate fixes one.
DEFAULT_BACKBONE = "resnet18"
#: Hypercolumns of held-out images kept (float16) between the fitting and the scoring pass; beyond it they are
#: computed again (20 images of 360x360 px at 1024 channels: 330 MB).
FEATURE_CACHE_BYTES = 512 * 1024**2
#: Cached features whose magnitude reaches this stay float32 (float16 overflows at 65504).
FLOAT16_SAFE = 6.0e4
EPS = 1e-8


class RankSettings(BaseModel):
    """How the ranking is computed (see the module docstring)."""

    splits: int = Field(5, ge=1, le=100, description="repeated seeded train/test splits of the images")
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of the images held out per split")
    pixels_per_image: int = Field(2048, ge=64, le=1_000_000, description="grid cells per image used for fitting")
    proxy: Proxy | None = Field(None, description="None: the task's default (DEFAULT_PROXY)")
    seed: int = 0
    lambdas: tuple[float, ...] = LAMBDAS
    backbone: str | None = Field(None, description="backbone of the random/imagenet baselines (None: the majority)")
    first_stage: int = Field(
        0, ge=0, le=4, description="experimental: skip the first N encoder stages (0: all, 3: layer3-4 of a ResNet)"
    )
    probe: Probe = Field("readout", description="readout: ridge on hypercolumns; finetune: short decoder fine-tune")
    finetune_steps: int = Field(15, ge=1, le=10_000, description="probe=finetune: decoder steps per split")

    @model_validator(mode="after")
    def _check(self) -> RankSettings:
        if not self.lambdas or any(not (lam > 0) for lam in self.lambdas):
            raise ConfigError("lambdas must be a non-empty list of positive ridge strengths")
        return self

    @classmethod
    def from_budget(cls, budget: str = "standard", **overrides: Any) -> RankSettings:
        """Settings of a named budget (:data:`BUDGETS`), with explicit overrides (``None`` values ignored)."""
        if budget not in BUDGETS:
            raise ConfigError(f"unknown budget {budget!r}; choose {', '.join(BUDGETS)}")
        splits, pixels = BUDGETS[budget]
        values: dict[str, Any] = {"splits": splits, "pixels_per_image": pixels}
        if overrides.get("probe") == "finetune":
            values["splits"], values["finetune_steps"] = FINETUNE_BUDGETS[budget]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class EncoderScore(BaseModel):
    """One ranked encoder."""

    encoder: str
    rank: int = Field(ge=1)
    score: float = Field(description="mean over splits of the proxy")
    std: float = Field(description="sample standard deviation over splits (0 for one split)")
    split_scores: list[float]
    proxies: dict[str, float] = Field(description="mean over splits of every proxy of the task")
    ridge_lambda: float | None = Field(description="ridge strength of the read-out (None: probe=finetune)")
    source: str = Field(description="packaged | zoo-folder | baseline | folder | cached")
    backbone: str
    method: str
    dataset: str
    feature_dim: int
    seconds: float


class Ranking(BaseModel):
    """The answer of ``sslzoo rank`` / ``POST /predictions/rank``: encoders best first."""

    task: Task
    probe: Probe = "readout"
    proxy: Proxy
    proxy_description: str
    n_images: int
    n_splits: int
    test_images_per_split: int
    ranking: list[EncoderScore]
    recommendation: str
    split_agreement: float | None = Field(
        default=None,
        description="mean Spearman rho between the encoder orders of every two splits (1: every split orders the "
        "encoders alike; ~0: the order is noise); stability, not accuracy; None with < 3 encoders or 1 split",
    )
    warnings: list[str] = Field(default_factory=list)
    seconds: float
    seed: int


# ---------------------------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    """An encoder to rank: display ``name``, the ``spec`` :func:`sslzoo.hub.resolve.load_encoder` takes, origin."""

    name: str
    spec: str
    source: str


def available_encoders(include_baselines: bool = True) -> list[Candidate]:
    """Packaged encoders, then finished encoder entries of ``$SSLZOO_ZOO_DIR`` (a name the package ships wins),
    then ``random``. Only local models: nothing is downloaded."""
    from sslzoo.hub.defaults import packaged_names
    from sslzoo.hub.zoo_folder import zoo_folder_entries
    from sslzoo.vocabulary import parse_name

    found: dict[str, Candidate] = {}
    for name in packaged_names():
        if parse_name(name).kind == "encoder":
            found[name] = Candidate(name, name, "packaged")
    for name in zoo_folder_entries():
        if name not in found and parse_name(name).kind == "encoder":
            found[name] = Candidate(name, name, "zoo-folder")
    candidates = list(found.values())
    if include_baselines:
        candidates.append(Candidate("random", "random", "baseline"))
    return candidates


def resolve_candidates(encoders: Sequence[str] | None, allow_paths: bool = True) -> list[Candidate]:
    """The candidates ``encoders`` names (``None``, ``[]`` or ``["all"]``: :func:`available_encoders`).

    A name is ``random`` | ``imagenet``, a local zoo entry (packaged or in ``$SSLZOO_ZOO_DIR``) or, with
    ``allow_paths``, an encoder folder. Unknown names raise :class:`NotFoundError` listing what is available.
    """
    from sslzoo.hub.defaults import packaged_folder, resolve_alias
    from sslzoo.hub.zoo_folder import find_in_zoo_dirs
    from sslzoo.vocabulary import BASELINES, is_zoo_name, parse_name

    names = [str(n).strip() for n in encoders or [] if str(n).strip()]
    if not names or names == ["all"]:
        return available_encoders()
    if "all" in names:
        raise ConfigError("'all' cannot be combined with encoder names; pass 'all' alone or the names")
    chosen: list[Candidate] = []
    for raw in names:
        if raw in BASELINES:
            chosen.append(Candidate(raw, raw, "baseline"))
            continue
        path = Path(raw).expanduser()
        if allow_paths and path.is_dir():
            chosen.append(Candidate(path.name, str(path), "folder"))
            continue
        name = resolve_alias(raw) if raw in ("embed",) else raw
        if is_zoo_name(name) and parse_name(name).kind != "encoder":
            raise ConfigError(
                f"{_short(raw)!r} is a segmenter; rank encoders (its encoder entry is {parse_name(name).encoder_name})"
            )
        if is_zoo_name(name) and packaged_folder(name) is not None:
            chosen.append(Candidate(name, name, "packaged"))
        elif is_zoo_name(name) and find_in_zoo_dirs(name) is not None:
            chosen.append(Candidate(name, name, "zoo-folder"))
        else:
            known = ", ".join(c.name for c in available_encoders()) or "none"
            where = "an encoder folder, " if allow_paths else ""
            raise NotFoundError(
                f"unknown encoder {_short(raw)!r}: not {where}a baseline (random, imagenet) or a local zoo entry; "
                f"available here: {known} ('sslzoo zoo list' shows the zoo; $SSLZOO_ZOO_DIR adds a zoo folder)"
            )
    if len({c.name for c in chosen}) != len(chosen):
        raise ConfigError("an encoder is named twice; name each once")
    return chosen


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class LoadedEncoder:
    """A frozen encoder in eval mode with what the read-out needs from its config."""

    module: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    backbone: str
    method: str
    dataset: str


def load_candidate(candidate: Candidate, backbone: str, seed: int = 0) -> LoadedEncoder:
    """Load ``candidate`` (a baseline at ``backbone``, built from a fixed seed so ``random`` is reproducible)."""
    import torch

    from sslzoo.hub.resolve import load_encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, config = load_encoder(candidate.spec, backbone)
    return LoadedEncoder(module.eval(), config.mean, config.std, config.backbone, config.method, config.dataset)


def _config_backbone(candidate: Candidate) -> str | None:
    """The backbone in a candidate's ``config.json`` without loading weights (``None`` for baselines)."""
    import json

    from sslzoo.hub.resolve import resolve_model

    if candidate.source == "baseline":
        return None
    try:
        resolved = resolve_model(candidate.spec, want="encoder")
        if resolved.path is None or not (resolved.path / "config.json").is_file():
            return None
        return str(json.loads((resolved.path / "config.json").read_text()).get("backbone")) or None
    except (OSError, ValueError, NotFoundError, ConfigError, DataError):
        return None


def baseline_backbone(candidates: Sequence[Candidate], requested: str | None = None) -> str:
    """``requested``, else the backbone most non-baseline candidates share, else :data:`DEFAULT_BACKBONE`."""
    if requested:
        return requested
    from collections import Counter

    counts = Counter(b for b in (_config_backbone(c) for c in candidates) if b)
    return counts.most_common(1)[0][0] if counts else DEFAULT_BACKBONE


# ---------------------------------------------------------------------------------------------- features
def _projection(channels: int, keep: int, seed: int) -> torch.Tensor:
    """A fixed ``channels x keep`` matrix with orthonormal columns (seeded)."""
    import torch

    generator = torch.Generator().manual_seed(seed * 7919 + channels)
    q, _ = torch.linalg.qr(torch.randn(channels, keep, generator=generator, dtype=torch.float64))
    return q.to(torch.float32)


def hypercolumns(encoder: LoadedEncoder, image: np.ndarray, seed: int = 0, first_stage: int = 0) -> np.ndarray:
    """``(C, h * w)`` float32 hypercolumns of an RGB ``uint8`` image on the stride-:data:`GRID_STRIDE` grid,
    ``h = ceil(H / 4)``, ``w = ceil(W / 4)`` (row-major cells), from the encoder's stages after the first
    ``first_stage`` ones."""
    import torch
    from torch.nn import functional as F

    from sslzoo.data.transforms import normalize_to_tensor

    height, width = image.shape[:2]
    tensor = normalize_to_tensor(image, encoder.mean, encoder.std)[None]
    pad_h, pad_w = (-height) % 32, (-width) % 32
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        tensor = F.pad(tensor, (0, pad_w, 0, pad_h), mode=mode)
    grid = (tensor.shape[-2] // GRID_STRIDE, tensor.shape[-1] // GRID_STRIDE)
    h, w = math.ceil(height / GRID_STRIDE), math.ceil(width / GRID_STRIDE)
    device = next(encoder.module.parameters()).device
    with torch.no_grad():
        stages = encoder.module(tensor.to(device))
        stages = list(stages[1 + first_stage :]) if isinstance(stages, list | tuple) else [stages]
        parts = []
        for stage in stages:
            stage = stage.float().cpu()
            if stage.shape[1] > MAX_STAGE_CHANNELS:
                proj = _projection(stage.shape[1], MAX_STAGE_CHANNELS, seed)
                stage = torch.einsum("nchw,ck->nkhw", stage, proj)
            if stage.shape[-2] > grid[0]:
                stage = F.adaptive_avg_pool2d(stage, grid)
            elif stage.shape[-2] < grid[0]:
                stage = F.interpolate(stage, size=grid, mode="bilinear", align_corners=False)
            parts.append(stage[0, :, :h, :w].reshape(stage.shape[1], h * w))
        features = torch.cat(parts, dim=0)
    return features.numpy()


def cell_means(values: np.ndarray) -> np.ndarray:
    """Mean of a ``(H, W)`` map over each grid cell (edge cells: over their pixels inside the image)."""
    height, width = values.shape
    h, w = math.ceil(height / GRID_STRIDE), math.ceil(width / GRID_STRIDE)
    padded = np.zeros((h * GRID_STRIDE, w * GRID_STRIDE), np.float64)
    counts = np.zeros_like(padded)
    padded[:height, :width] = values
    counts[:height, :width] = 1.0
    shape = (h, GRID_STRIDE, w, GRID_STRIDE)
    return (padded.reshape(shape).sum(axis=(1, 3)) / counts.reshape(shape).sum(axis=(1, 3))).astype(np.float32)


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class LabelledImage:
    """One labelled image: RGB ``uint8``, the label map for the task, and its full-resolution targets."""

    id: str
    image: np.ndarray
    labels: np.ndarray  # semantic: 0/1; instance: 0..N
    foreground: np.ndarray  # bool (H, W)
    distance: np.ndarray | None  # instance: float32 (H, W)


def prepare_images(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], task: str, ids: Sequence[str] | None = None
) -> list[LabelledImage]:
    """Check and convert the user's pairs: sizes must match, semantic masks become 0/1, instance masks
    0..N (a 0/1 or 0/255 mask is split into connected components)."""
    from scipy import ndimage

    from sslzoo.data.io import to_rgb_uint8
    from sslzoo.data.targets import distance_map_target

    if task not in TASKS:
        raise ConfigError(f"unknown task {_short(str(task))!r}; choose {' or '.join(TASKS)}")
    if len(images) != len(masks):
        raise DataError(f"{len(images)} image(s) but {len(masks)} mask(s); send one mask per image")
    names = list(ids) if ids is not None else [str(i) for i in range(len(images))]
    if len(images) < 2:
        raise DataError(
            f"{len(images)} labelled image(s); ranking needs at least 2 (better {FEW_IMAGES} or more): some images "
            "fit the read-out while others score it"
        )
    prepared = []
    for name, image, mask in zip(names, images, masks, strict=True):
        rgb = to_rgb_uint8(np.asarray(image), f"image {name}")
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] in (1, 3, 4) and np.all(mask == mask[..., :1]):
            mask = mask[..., 0]
        if mask.ndim != 2:
            raise DataError(f"mask {name}: expected a single-channel label image, got shape {mask.shape}")
        if mask.shape != rgb.shape[:2]:
            raise DataError(
                f"mask {name}: size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
                f"({rgb.shape[1]}x{rgb.shape[0]}); send pairs of the same size"
            )
        integer = np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.bool_)
        if not integer and not np.all(np.mod(mask, 1) == 0):
            raise DataError(f"mask {name}: holds non-integer values; send a label image (0 = background)")
        if task == "semantic":
            labels = (mask > 0).astype(np.int32)
        else:
            values = np.unique(mask)
            binary = set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}
            labels = ndimage.label(mask > 0)[0] if binary else mask.astype(np.int64)
            from sslzoo.data.targets import relabel_contiguous

            labels = relabel_contiguous(labels).astype(np.int32)
        distance = distance_map_target(labels) if task == "instance" else None
        prepared.append(LabelledImage(name, rgb, labels, labels > 0, distance))
    if not any(p.foreground.any() for p in prepared):
        raise DataError("every mask is empty (no foreground pixel); send masks that mark the objects")
    return prepared


def make_splits(n: int, splits: int, test_fraction: float, seed: int) -> list[np.ndarray]:
    """``splits`` boolean test masks over ``n`` images: ``max(1, round(test_fraction * n))`` held out each
    (at most ``n - 1``), drawn with ``default_rng(seed)``; the same for every encoder."""
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(splits):
        mask = np.zeros(n, bool)
        mask[rng.permutation(n)[:n_test]] = True
        out.append(mask)
    return out


def make_folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` boolean test masks partitioning ``n`` images (each image held out exactly once; ``folds=1``: a
    quarter held out), from ``default_rng(seed)``; at most ``n`` folds."""
    if folds <= 1:
        return make_splits(n, 1, 0.25, seed)
    order = np.random.default_rng(seed).permutation(n)
    out = []
    for part in np.array_split(order, min(folds, n)):
        mask = np.zeros(n, bool)
        mask[part] = True
        out.append(mask)
    return out


# ---------------------------------------------------------------------------------------------- read-out
@dataclass
class _Stats:
    """Sufficient statistics of one image's fitted grid cells."""

    n: int
    sum_x: np.ndarray  # (d,)
    gram: np.ndarray  # (d, d) float64
    cross: np.ndarray  # (d, t)
    sum_y: np.ndarray  # (t,)


def _targets(item: LabelledImage, task: str) -> np.ndarray:
    """``(h, w, t)`` cell targets: foreground share (+ distance map for instance)."""
    maps = [cell_means(item.foreground.astype(np.float32))]
    if task == "instance":
        assert item.distance is not None
        maps.append(cell_means(item.distance))
    return np.stack(maps, axis=-1)


def _image_stats(features: np.ndarray, targets: np.ndarray, pixels: int, rng: np.random.Generator) -> _Stats:
    """Statistics of ``pixels`` seeded cells (all when fewer) of ``features`` ``(d, N)`` and ``targets`` ``(N, t)``."""
    import torch

    x, y = features, targets.reshape(-1, targets.shape[-1]).astype(np.float64)
    if x.shape[1] > pixels:
        keep = np.sort(rng.choice(x.shape[1], pixels, replace=False))
        x, y = x[:, keep], y[keep]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    gram = (xt @ xt.T).double().numpy()
    cross = (xt @ torch.from_numpy(y.astype(np.float32))).double().numpy()
    return _Stats(x.shape[1], x.sum(axis=1, dtype=np.float64), gram, cross, y.sum(axis=0))


def _fit(stats: Sequence[_Stats], lambdas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on standardised features from summed statistics: weights ``(d, L, t)`` and biases ``(L, t)`` in the
    raw feature space, one per ridge strength (a Cholesky solve each)."""
    from scipy.linalg import cho_factor, cho_solve

    n = float(sum(s.n for s in stats))
    mean_x = sum(s.sum_x for s in stats) / n
    mean_y = sum(s.sum_y for s in stats) / n
    gram = sum(s.gram for s in stats) / n - np.outer(mean_x, mean_x)
    cross = sum(s.cross for s in stats) / n - np.outer(mean_x, mean_y)
    scale = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    live = scale > 1e-6 * max(float(scale.max()), EPS)
    inv = np.where(live, 1.0 / np.where(live, scale, 1.0), 0.0)
    corr = gram * np.outer(inv, inv)
    corr[~live, :] = 0.0
    corr[:, ~live] = 0.0
    rhs = cross * inv[:, None]
    eye = np.eye(len(corr))
    weights, biases = [], []
    for lam in lambdas:
        try:
            w = cho_solve(cho_factor(corr + lam * eye, check_finite=False), rhs, check_finite=False)
        except np.linalg.LinAlgError:  # numerically indefinite (huge, nearly collinear features): least squares
            w = np.linalg.lstsq(corr + lam * eye, rhs, rcond=None)[0]
        w = w * inv[:, None]
        weights.append(w)
        biases.append(mean_y - mean_x @ w)
    return np.stack(weights, axis=1), np.stack(biases)


def _r2_parts(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float]:
    """``(SSE, sum y, sum y², n)`` of one image, for a pooled R²."""
    diff = pred.astype(np.float64) - truth
    return float(np.sum(diff * diff)), float(truth.sum()), float(np.sum(truth.astype(np.float64) ** 2)), truth.size


def _pooled_r2(parts: Sequence[tuple[float, float, float, float]]) -> float:
    sse = sum(p[0] for p in parts)
    total, squares, count = sum(p[1] for p in parts), sum(p[2] for p in parts), sum(p[3] for p in parts)
    sst = squares - total * total / max(count, 1)
    return 1.0 - sse / sst if sst > EPS else (1.0 if sse <= EPS else 0.0)


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@dataclass
class _EncoderResult:
    proxies: dict[str, list[float]]  # proxy -> per split, at its chosen lambda
    lambdas: dict[str, float]
    feature_dim: int
    nonfinite_images: int = 0


def score_encoder(
    encoder: LoadedEncoder, items: Sequence[LabelledImage], task: str, settings: RankSettings, splits: list[np.ndarray]
) -> _EncoderResult:
    """Every proxy of ``task`` for one encoder, per split (see the module docstring).

    Features of the images some split holds out are kept (float16, float32 when they exceed its range) for the
    scoring pass up to :data:`FEATURE_CACHE_BYTES`; the others are computed again. Non-finite features (a broken
    encoder) are zeroed and counted in ``nonfinite_images``.
    """
    from sslzoo.data.resize import resize_map
    from sslzoo.metrics.segmentation import aji_plus, dice
    from sslzoo.models.postprocess import FIXED_WATERSHED, distance_to_instances

    lambdas = list(settings.lambdas)
    held_out = np.any(np.stack(splits), axis=0)
    stats, shapes, cache, cached = [], [], {}, 0

    def features_of(item: LabelledImage) -> tuple[np.ndarray, float]:
        """The image's hypercolumns with non-finite values zeroed (a broken encoder, e.g. overflowed weights:
        score what is left, and say so), and their largest magnitude before that (``inf``/``nan`` if any)."""
        features = hypercolumns(encoder, item.image, settings.seed, settings.first_stage)
        peak = float(np.abs(features).max(initial=0.0))
        if not math.isfinite(peak):
            features = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
        return features, peak

    nonfinite = 0
    for index, item in enumerate(items):
        features, peak = features_of(item)
        nonfinite += not math.isfinite(peak)
        rng = np.random.default_rng([settings.seed, index])
        stats.append(_image_stats(features, _targets(item, task), settings.pixels_per_image, rng))
        shapes.append((math.ceil(item.labels.shape[0] / GRID_STRIDE), math.ceil(item.labels.shape[1] / GRID_STRIDE)))
        compact = np.dtype(np.float16 if peak < FLOAT16_SAFE else np.float32)  # zeroed non-finite: float32 too
        if held_out[index] and cached + features.size * compact.itemsize <= FEATURE_CACHE_BYTES:
            cache[index] = features.astype(compact)
            cached += features.size * compact.itemsize
    dim = int(stats[0].sum_x.shape[0])
    fits = [_fit([s for s, test in zip(stats, mask, strict=True) if not test], lambdas) for mask in splits]
    # second pass: the read-outs of every split and strength on every image that split holds out
    n_l, n_t = len(lambdas), 2 if task == "instance" else 1
    fg_scores = np.zeros((len(splits), n_l))
    r2_parts: list[list[list[tuple[float, float, float, float]]]] = [[[] for _ in lambdas] for _ in splits]
    dist_maps: dict[tuple[int, int], list[np.ndarray]] = {}
    for index, item in enumerate(items):
        held = [r for r, mask in enumerate(splits) if mask[index]]
        if not held:
            continue
        x = (cache.pop(index) if index in cache else features_of(item)[0]).astype(np.float32)
        height, width = item.labels.shape
        weights = np.concatenate([fits[r][0].reshape(dim, -1) for r in held], axis=1).astype(np.float32)
        biases = np.concatenate([fits[r][1].reshape(-1) for r in held]).astype(np.float32)
        # both targets lie in [0, 1]: clipping bounds the damage of a read-out extrapolating on an unusual image
        preds = np.clip(weights.T @ x + biases[:, None], 0.0, 1.0).reshape(len(held), n_l, n_t, *shapes[index])
        for k, r in enumerate(held):
            for li in range(n_l):
                fg = resize_map(np.ascontiguousarray(preds[k, li, 0]), height, width)
                fg_scores[r, li] += dice(fg > 0.5, item.foreground) / int(splits[r].sum())
                if task == "instance":
                    assert item.distance is not None
                    dist = resize_map(np.ascontiguousarray(preds[k, li, 1]), height, width)
                    r2_parts[r][li].append(_r2_parts(dist, item.distance))
                    dist_maps.setdefault((r, li), []).append(np.ascontiguousarray(preds[k, li, 1]))
    best_fg = int(np.argmax(fg_scores.mean(axis=0)))
    proxy_scores = {PROXIES[task][0]: [float(v) for v in fg_scores[:, best_fg]]}
    chosen = {PROXIES[task][0]: lambdas[best_fg]}
    if task == "instance":
        r2 = np.array([[_pooled_r2(r2_parts[r][li]) for li in range(n_l)] for r in range(len(splits))])
        best_r2 = int(np.argmax(r2.mean(axis=0)))
        proxy_scores["dist_r2"] = [float(v) for v in r2[:, best_r2]]
        chosen["dist_r2"] = chosen["aji_plus"] = lambdas[best_r2]
        aji_scores = []
        for r, mask in enumerate(splits):
            truths = [items[int(i)].labels for i in np.flatnonzero(mask)]
            maps = dist_maps[(r, best_r2)]
            values = [
                aji_plus(distance_to_instances(np.clip(resize_map(m, *t.shape), 0.0, None), FIXED_WATERSHED), t)
                for m, t in zip(maps, truths, strict=True)
            ]
            aji_scores.append(float(np.mean(values)))
        proxy_scores["aji_plus"] = aji_scores
    return _EncoderResult(proxy_scores, chosen, dim, nonfinite)


# ---------------------------------------------------------------------------------------------- ranking
def recommendation_text(task: str, ranking: Sequence[EncoderScore], split_scores: dict[str, list[float]]) -> str:
    """One plain line: the best encoder, how clearly it leads, and whether pretraining helps at all."""
    if not ranking:
        return "no encoder to rank"
    best = ranking[0]
    if len(ranking) == 1:
        return f"only one encoder was ranked: {best.encoder} (score {best.score:.3f} ± {best.std:.3f})"
    second = ranking[1]
    diffs = np.array(split_scores[best.encoder]) - np.array(split_scores[second.encoder])
    wins = int(np.sum(diffs > 0))
    spread = _std(list(diffs))
    clear = diffs.mean() > max(spread, 1e-9) and wins == len(diffs)
    line = (
        f"use {best.encoder} (score {best.score:.3f} ± {best.std:.3f}); it beats {second.encoder} by "
        f"{diffs.mean():.3f} and in {wins} of {len(diffs)} splits"
    )
    if not clear:
        line = (
            f"{best.encoder} and {second.encoder} are close (difference {diffs.mean():.3f} ± {spread:.3f} over "
            f"{len(diffs)} splits, {best.encoder} ahead in {wins}): either is a good start, {best.encoder} slightly "
            "better"
        )
    if best.method == "random":
        line += "; no pretrained encoder beats random init on these images"
    elif second.method == "random" and not clear:
        line += "; random init is close behind, so pretraining gains little here"
    return line


def split_agreement(per_split: dict[str, list[float]]) -> float | None:
    """Mean over pairs of splits (a, b) of Spearman's rho between the encoders' scores in split a and in split b.

    It measures whether the proxy orders the encoders the same way on different held-out images: a necessary
    condition for a ranking to mean anything, not a sufficient one (a stable proxy can still mispredict
    fine-tuning). Pairs where one split scores every encoder alike are skipped; None if no pair is left or there
    are fewer than 3 encoders or 2 splits.
    """
    from scipy.stats import spearmanr

    table = np.asarray(list(per_split.values()), dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 3 or table.shape[1] < 2:
        return None
    values = []
    for a in range(table.shape[1]):
        for b in range(a + 1, table.shape[1]):
            if np.ptp(table[:, a]) > 0 and np.ptp(table[:, b]) > 0:
                values.append(float(spearmanr(table[:, a], table[:, b]).statistic))
    return round(float(np.mean(values)), 4) if values else None


def rank_encoders(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    task: str,
    encoders: Sequence[str] | None = None,
    settings: RankSettings | None = None,
    *,
    ids: Sequence[str] | None = None,
    allow_paths: bool = True,
    loader: Callable[[Candidate, str, int], LoadedEncoder] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Ranking:
    """Rank encoders by the hypercolumn read-out proxy on labelled ``images`` + ``masks`` (module docstring).

    ``encoders``: names (:func:`resolve_candidates`), ``None`` for every available one. ``loader`` loads a
    candidate (default :func:`load_candidate`; the REST service passes a caching one). Deterministic for a
    given ``settings.seed``.
    """
    start = time.perf_counter()
    settings = settings or RankSettings()
    items = prepare_images(images, masks, task, ids)
    candidates = resolve_candidates(encoders, allow_paths=allow_paths)
    finetuned = settings.probe == "finetune"
    choices = FINETUNE_PROXIES[task] if finetuned else PROXIES[task]
    proxy = cast(Proxy, (settings.proxy or choices[0]) if finetuned else (settings.proxy or DEFAULT_PROXY[task]))
    if task == "semantic" and proxy == "fg_dice":
        proxy = "dice"
    if proxy not in choices:
        raise ConfigError(
            f"proxy {proxy!r} is not one of the {task} proxies of probe {settings.probe}: {', '.join(choices)}"
        )
    backbone = baseline_backbone(candidates, settings.backbone)
    splits = (
        make_folds(len(items), settings.splits, settings.seed)
        if finetuned
        else make_splits(len(items), settings.splits, settings.test_fraction, settings.seed)
    )
    load = loader or load_candidate
    rows: list[dict[str, Any]] = []
    per_split: dict[str, list[float]] = {}
    broken: list[str] = []
    for candidate in candidates:
        began = time.perf_counter()
        if progress is not None:
            progress(f"ranking {candidate.name} ...")
        encoder = load(candidate, backbone, settings.seed)
        if finetuned:
            from sslzoo.downstream.rank_finetune import finetune_scores

            channels = getattr(encoder.module, "out_channels", ())
            tuned = finetune_scores(encoder, items, task, settings, splits)
            result = _EncoderResult(tuned, {}, int(sum(channels[1:])))
        else:
            result = score_encoder(encoder, items, task, settings, splits)
        if result.nonfinite_images:
            broken.append(f"{candidate.name} ({result.nonfinite_images}/{len(items)} images)")
        scores = result.proxies[proxy]
        per_split[candidate.name] = scores
        rows.append(
            dict(
                encoder=candidate.name,
                score=float(np.mean(scores)),
                std=_std(scores),
                split_scores=scores,
                proxies={k: float(np.mean(v)) for k, v in result.proxies.items()},
                ridge_lambda=result.lambdas.get(proxy),
                source=candidate.source,
                backbone=encoder.backbone,
                method=encoder.method,
                dataset=encoder.dataset,
                feature_dim=result.feature_dim,
                seconds=round(time.perf_counter() - began, 3),
            )
        )
    rows.sort(key=lambda row: (-row["score"], row["encoder"]))
    ranking = [EncoderScore(rank=i + 1, **row) for i, row in enumerate(rows)]
    warnings = []
    if broken:
        warnings.append(
            f"non-finite features (inf/NaN) from {', '.join(broken)}: the encoder's weights are broken (e.g. "
            "overflowed when stored in float16); its score counts those values as 0, so do not use it"
        )
    if len(items) < FEW_IMAGES:
        warnings.append(
            f"only {len(items)} labelled images: each split holds out {int(splits[0].sum())}; the spread is large and "
            f"the ranking unstable (label {FEW_IMAGES} or more)"
        )
    agreement = split_agreement(per_split)
    if agreement is not None and agreement < UNSTABLE_AGREEMENT:
        warnings.append(
            f"the {len(splits)} splits order the encoders alike only at Spearman {agreement:.2f} (1 = the same "
            "order on every split): on these images the encoders differ less than the proxy's noise, so read the "
            "order as a shortlist, not a verdict; fine-tune the top few, or label more images and rank again"
        )
    return Ranking(
        task=cast(Task, task),  # checked by prepare_images
        probe=settings.probe,
        proxy=proxy,
        proxy_description=PROXY_DESCRIPTIONS[proxy],
        n_images=len(items),
        n_splits=len(splits),
        test_images_per_split=int(splits[0].sum()),
        ranking=ranking,
        recommendation=recommendation_text(task, ranking, per_split),
        split_agreement=agreement,
        warnings=warnings,
        seconds=round(time.perf_counter() - start, 3),
        seed=settings.seed,
    )


def read_labelled_folder(data: str | Path, task: str, max_images: int | None = None) -> tuple[list, list, list]:
    """``(images, masks, ids)`` of every labelled image of the dataset at ``data`` (any layout
    :func:`sslzoo.data.datasets.open_dataset` reads); ``max_images`` keeps the first ones (sorted by split, id)."""
    from sslzoo.data.datasets import open_dataset

    index = open_dataset(data)
    labelled = index.labelled()
    if not labelled:
        raise DataError(
            f"{index.root}: no masks found ({index.layout} layout); ranking needs labelled images: put them in "
            "<split>/images/ and their label images (same file names) in <split>/masks/"
        )
    if max_images is not None:
        labelled = labelled[:max_images]
    images = [index.read_image(s) for s in labelled]
    masks = [index.read_mask(s) for s in labelled]
    ids = [s.id if len({x.split for x in labelled}) == 1 else f"{s.split}/{s.id}" for s in labelled]
    return images, masks, ids


def rank_folder(
    data: str | Path,
    task: str,
    encoders: Sequence[str] | None = None,
    settings: RankSettings | None = None,
    *,
    max_images: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Ranking:
    """:func:`rank_encoders` on the labelled images of a dataset folder."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {_short(str(task))!r}; choose {' or '.join(TASKS)}")
    images, masks, ids = read_labelled_folder(data, task, max_images)
    return rank_encoders(images, masks, task, encoders, settings, ids=ids, progress=progress)


def plot_ranking(ranking: Ranking, path: str | Path) -> Path:
    """A horizontal bar chart (score ± std over splits, best on top) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(reversed(ranking.ranking))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4), dpi=120)
    colours = ["#9e9e9e" if r.method == "random" else "#3b75af" for r in rows]
    ax.barh([r.encoder for r in rows], [r.score for r in rows], xerr=[r.std for r in rows], color=colours, capsize=3)
    ax.set_xlabel(f"{ranking.proxy_description}\n(mean ± std over {ranking.n_splits} splits; grey: random init)")
    agreement = "" if ranking.split_agreement is None else f"; split agreement {ranking.split_agreement:.2f}"
    ax.set_title(f"encoders for {ranking.n_images} labelled images ({ranking.task}{agreement})", fontsize=10)
    low = min(r.score - r.std for r in rows)
    ax.set_xlim(max(0.0, low - 0.05) if low > 0 else low - 0.05, None)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
