"""Representation metrics: minibatch linear CKA between encoder stages, and NQC (CONTRACTS.md section 3).

**CKA** (centred kernel alignment) with the *unbiased* HSIC estimator of Song et al. (2012), averaged over
fixed-size minibatches as in Nguyen, Raghu & Kornblith (2021), "Do wide and deep networks learn the same
things?". Features are flattened per sample; the kernel is linear (``K = X Xᵀ``).

**Stage mapping** (Table III of the paper, "Conv1..Conv4"). An smp ResNet encoder returns
``[x, stem, layer1, ..., layer4]``. The authors' code (``DLIP/utils/evaluation/calculate_cka.py`` over the
``backbone`` list of ``DLIP/models/zoo/encoder/resnet_encoder.py``: ``[stem, maxpool+layer1, layer2, layer3,
layer4]``) measures ``backbone.1`` .. ``backbone.4``, i.e. the four residual stages; the stem is not a Table III
column. Stage k is therefore ResNet ``layer<k>``:

==========  =========  ===========================================  ==================
Table III   stage k    module (torchvision / smp name)              stride (256 input)
==========  =========  ===========================================  ==================
(stem)      0          ``conv1`` + ``bn1`` + ``relu``               2 (128x128)
Conv1       1          ``layer1`` (conv2_x; after the max-pool)     4 (64x64)
Conv2       2          ``layer2`` (conv3_x)                         8 (32x32)
Conv3       3          ``layer3`` (conv4_x)                         16 (16x16)
Conv4       4          ``layer4`` (conv5_x, the last stage)         32 (8x8)
==========  =========  ===========================================  ==================

We compare the OUTPUT of each stage (one CKA per stage); the authors average the CKA of every sub-module
inside the stage (torch_cka hooks on all ``backbone.k.*`` modules, biased HSIC, per batch). See
docs/fidelity.md.

**Table III** (:func:`reference_stage_cka`): every method's encoder against ONE reference, the encoder of a
network trained supervised on the whole dataset (random init, not frozen, rate 1.0), stages 1..4.

**NQC** (nearest-neighbour quality): global-average-pooled last stage, PCA to 10 dimensions fitted on the
evaluated set, Euclidean nearest neighbour excluding the sample itself, share of samples whose nearest neighbour
has the same class.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sslzoo.errors import ConfigError, DataError

#: Encoder stage index -> (name of the module whose output is that stage, Table III label).
STAGE_MODULES: dict[int, str] = {0: "relu", 1: "layer1", 2: "layer2", 3: "layer3", 4: "layer4"}
STAGE_LABELS: dict[int, str] = {0: "Stem", 1: "Conv1", 2: "Conv2", 3: "Conv3", 4: "Conv4"}
#: the stages of Table III (Conv1..Conv4 = layer1..layer4)
TABLE_III_STAGES: tuple[int, ...] = (1, 2, 3, 4)

#: Columns of the feature matrix multiplied at once when building a Gram matrix (bounds float32 rounding).
_GRAM_CHUNK = 1 << 16


# --------------------------------------------------------------------------------------------------- CKA core


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix ``K = X Xᵀ`` of ``x`` (n, d) as float64 (n, n).

    The product is formed in column chunks in the input precision and summed in float64, so float32 features
    with millions of columns (early ResNet stages) keep their accuracy without a float64 copy of ``x``.
    """
    x = x.reshape(x.shape[0], -1)
    gram = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
    for chunk in x.split(_GRAM_CHUNK, dim=1):
        gram += (chunk @ chunk.T).to(torch.float64)
    return gram


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> float:
    """Unbiased HSIC estimator of Song et al. (2012) for Gram matrices ``k``, ``l`` (n, n), n >= 4.

    With K̃, L̃ the Gram matrices with their diagonals set to zero and 1 the all-ones vector::

        HSIC_1(K, L) = 1 / (n (n - 3)) * [ tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n - 1)(n - 2)) - 2/(n - 2) 1ᵀK̃L̃1 ]
    """
    n = k.shape[0]
    if n < 4:
        raise ConfigError(f"the unbiased HSIC estimator needs at least 4 samples per minibatch, got {n}")
    k = k.to(torch.float64).clone()
    l = l.to(torch.float64).clone()
    k.fill_diagonal_(0.0)
    l.fill_diagonal_(0.0)
    trace_kl = (k * l.T).sum()  # tr(K̃ L̃) without the n x n product
    sum_k, sum_l = k.sum(), l.sum()
    cross = (k.sum(dim=0) * l.sum(dim=1)).sum()  # 1ᵀ K̃ L̃ 1
    value = trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)
    return float(value / (n * (n - 3)))


def _cka_from_hsic(hsic_xy: float, hsic_xx: float, hsic_yy: float) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); NaN when a self-HSIC is not positive (constant features)."""
    if hsic_xx <= 0.0 or hsic_yy <= 0.0:
        return math.nan
    return hsic_xy / math.sqrt(hsic_xx * hsic_yy)


def linear_cka_unbiased(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA of feature matrices ``x`` (n, d1) and ``y`` (n, d2) with the unbiased HSIC estimator.

    ``CKA = HSIC_1(XXᵀ, YYᵀ) / sqrt(HSIC_1(XXᵀ, XXᵀ) HSIC_1(YYᵀ, YYᵀ))`` (see :func:`hsic_unbiased`); inputs with
    more than two dimensions are flattened per sample (row). Returns NaN when either representation is constant.
    """
    x_t, y_t = torch.as_tensor(x), torch.as_tensor(y)
    if x_t.shape[0] != y_t.shape[0]:
        raise DataError(f"CKA needs the same samples in both representations, got {x_t.shape[0]} and {y_t.shape[0]}")
    k, l = gram_linear(x_t), gram_linear(y_t)
    return _cka_from_hsic(hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l))


class MinibatchCKA:
    """Accumulates linear CKA over fixed-size minibatches (Nguyen et al. 2021).

    Rows passed to :meth:`update` are buffered and consumed in minibatches of exactly ``batch_size`` samples;
    for each, the three unbiased HSIC terms are added up. :meth:`compute` returns
    ``mean_i HSIC(K_i, L_i) / sqrt(mean_i HSIC(K_i, K_i) * mean_i HSIC(L_i, L_i))``; rows left over that do not
    fill a minibatch (the last partial batch) are dropped. Memory holds at most one minibatch of features.
    """

    def __init__(self, batch_size: int) -> None:
        if batch_size < 4:
            raise ConfigError(f"CKA minibatch size must be at least 4 (unbiased HSIC), got {batch_size}")
        self.batch_size = batch_size
        self._x: list[torch.Tensor] = []
        self._y: list[torch.Tensor] = []
        self._buffered = 0
        self.hsic_xy = 0.0
        self.hsic_xx = 0.0
        self.hsic_yy = 0.0
        self.n_batches = 0

    @property
    def n_samples(self) -> int:
        """Samples that entered the estimate (full minibatches only)."""
        return self.n_batches * self.batch_size

    @property
    def n_dropped(self) -> int:
        """Samples currently buffered that do not fill a minibatch (dropped by :meth:`compute`)."""
        return self._buffered

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add features of the same samples from both models: ``x`` (b, ...), ``y`` (b, ...)."""
        if x.shape[0] != y.shape[0]:
            raise DataError(f"CKA update got {x.shape[0]} and {y.shape[0]} samples; pass the same samples to both")
        self._x.append(x.detach().reshape(x.shape[0], -1))
        self._y.append(y.detach().reshape(y.shape[0], -1))
        self._buffered += x.shape[0]
        while self._buffered >= self.batch_size:
            xs, ys = torch.cat(self._x), torch.cat(self._y)
            self._add_batch(xs[: self.batch_size], ys[: self.batch_size])
            rest_x, rest_y = xs[self.batch_size :], ys[self.batch_size :]
            self._x, self._y = ([rest_x], [rest_y]) if rest_x.shape[0] else ([], [])
            self._buffered = rest_x.shape[0]

    def _add_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        k, l = gram_linear(x), gram_linear(y)
        self.hsic_xy += hsic_unbiased(k, l)
        self.hsic_xx += hsic_unbiased(k, k)
        self.hsic_yy += hsic_unbiased(l, l)
        self.n_batches += 1

    def compute(self) -> float:
        """Minibatch CKA over the full minibatches seen so far (NaN for constant features)."""
        if self.n_batches == 0:
            raise DataError(
                f"no full minibatch of {self.batch_size} samples to compute CKA on "
                f"({self._buffered} samples given); pass more images or a smaller batch size"
            )
        return _cka_from_hsic(self.hsic_xy, self.hsic_xx, self.hsic_yy)


# --------------------------------------------------------------------------------------------------- encoders


def _images_of(batch: Any) -> torch.Tensor:
    """The image tensor of a loader batch: a tensor, the first item of a tuple/list, or ``batch["image"]``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise DataError(f"loader batch is a mapping without an 'image' key (keys: {sorted(batch)})")
        return batch["image"]
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise DataError(f"cannot find an image tensor in a loader batch of type {type(batch).__name__}")


class _EnoughStages(Exception):
    """Raised by a forward hook to stop the forward pass once the deepest requested stage is captured."""


def stage_module(encoder: nn.Module, stage: int) -> nn.Module:
    """The sub-module whose output is encoder stage ``stage`` (0 = stem, 1..4 = layer1..layer4; module docstring)."""
    if stage not in STAGE_MODULES:
        raise ConfigError(f"unknown encoder stage {stage}; choose from {sorted(STAGE_MODULES)}")
    module = getattr(encoder, STAGE_MODULES[stage], None)
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"encoder {type(encoder).__name__} has no module {STAGE_MODULES[stage]!r} for stage {stage}; "
            "pass a ResNet encoder (smp or torchvision)"
        )
    return module


class StageCapture:
    """Context manager that records the outputs of encoder stages with forward hooks.

    ``with StageCapture(encoder, (1, 2)) as cap: cap.run(images)`` returns ``{stage: tensor}``; the forward pass
    stops after the deepest requested stage. Hooks are removed on exit, also after an exception.
    """

    def __init__(self, encoder: nn.Module, stages: Iterable[int]) -> None:
        self.encoder = encoder
        self.stages = tuple(sorted(set(stages)))
        if not self.stages:
            raise ConfigError("choose at least one encoder stage")
        self.modules = {s: stage_module(encoder, s) for s in self.stages}
        self._outputs: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> StageCapture:
        deepest = self.stages[-1]
        for stage, module in self.modules.items():

            def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor, stage: int = stage) -> None:
                if stage not in self._outputs:  # the first call is the stage (a module may be reused later)
                    self._outputs[stage] = output.detach()
                if stage == deepest and len(self._outputs) == len(self.stages):
                    raise _EnoughStages

            self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        self._outputs = {}
        with suppress(_EnoughStages):
            self.encoder(images)
        missing = [s for s in self.stages if s not in self._outputs]
        if missing:
            raise ConfigError(f"encoder forward did not reach stage(s) {missing}")
        return self._outputs


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def encoder_stage_cka(
    encoder_a: nn.Module,
    encoder_b: nn.Module,
    images_loader: Iterable[Any],
    stages: Sequence[int] = TABLE_III_STAGES,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[int, float]:
    """Minibatch linear CKA between stage k of ``encoder_a`` and stage k of ``encoder_b``, for each k in ``stages``.

    Runs both encoders in eval mode under ``torch.no_grad`` on every batch of ``images_loader`` (tensors
    (B, 3, H, W), tuples whose first item is that, or dicts with ``"image"``); minibatches have ``batch_size``
    samples (default: the loader's first batch size) and the last partial one is dropped. Memory is constant in
    the number of images. Forward hooks are removed afterwards and the encoders' train/eval modes are restored.
    """
    from tqdm.auto import tqdm

    if not stages:
        raise ConfigError("choose at least one encoder stage")
    accumulators: dict[int, MinibatchCKA] = {}
    modes = (encoder_a.training, encoder_b.training)
    device_a, device_b = _device_of(encoder_a), _device_of(encoder_b)
    encoder_a.eval()
    encoder_b.eval()
    same = encoder_a is encoder_b  # one set of hooks per module: run a shared encoder once
    try:
        with ExitStack() as hooks:
            cap_a = hooks.enter_context(StageCapture(encoder_a, stages))
            cap_b = cap_a if same else hooks.enter_context(StageCapture(encoder_b, stages))
            for batch in tqdm(images_loader, desc="CKA", unit="batch", disable=not progress):
                images = _images_of(batch)
                if not accumulators:
                    size = batch_size or images.shape[0]
                    accumulators = {s: MinibatchCKA(size) for s in cap_a.stages}
                with torch.no_grad():
                    feats_a = cap_a.run(images.to(device_a))
                    feats_b = feats_a if same else cap_b.run(images.to(device_b))
                for stage, acc in accumulators.items():
                    acc.update(feats_a[stage], feats_b[stage].to(feats_a[stage].device))
    finally:
        encoder_a.train(modes[0])
        encoder_b.train(modes[1])
    if not accumulators:
        raise DataError("the image loader yielded no batches; check the dataset path and split")
    return {stage: accumulators[stage].compute() for stage in sorted(accumulators)}


def reference_stage_cka(
    encoders: Mapping[str, nn.Module],
    reference: nn.Module,
    images_loader: Iterable[Any],
    stages: Sequence[int] = TABLE_III_STAGES,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, dict[int, float]]:
    """Table III: ``{name: {stage: CKA(encoders[name] stage k, reference stage k)}}`` for every encoder.

    ``reference`` is ONE network for all methods: the encoder of a U-Net trained supervised on the whole
    dataset (random init, encoder not frozen, annotation rate 1.0); ``encoders`` are the methods' pretrained
    encoders. Every comparison uses the same images (``images_loader`` must be re-iterable: a list or a
    DataLoader) and :func:`encoder_stage_cka` (minibatch linear CKA, unbiased HSIC). Use :func:`stage_means`
    on each value for the table row (Conv1..Conv4 and their mean).
    """
    if not encoders:
        raise ConfigError("pass at least one encoder to compare with the reference")
    if iter(images_loader) is images_loader:
        raise ConfigError("images_loader is a one-shot iterator; pass a list or a DataLoader (it is read per encoder)")
    out: dict[str, dict[int, float]] = {}
    for name, encoder in encoders.items():
        out[name] = encoder_stage_cka(encoder, reference, images_loader, stages, batch_size, progress)
    return out


def embed_images(encoder: nn.Module, loader: Iterable[Any], progress: bool = False) -> np.ndarray:
    """Embeddings (n, C): the global-average-pooled last encoder stage, in loader order (eval mode, no grad)."""
    from tqdm.auto import tqdm

    was_training = encoder.training
    device = _device_of(encoder)
    encoder.eval()
    rows: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="embed", unit="batch", disable=not progress):
                features = encoder(_images_of(batch).to(device))
                last = features[-1] if isinstance(features, list | tuple) else features
                rows.append(last.mean(dim=(2, 3)).float().cpu().numpy())
    finally:
        encoder.train(was_training)
    if not rows:
        raise DataError("the image loader yielded no batches; check the dataset path and split")
    return np.concatenate(rows)


# --------------------------------------------------------------------------------------------------- NQC


@dataclass(frozen=True)
class NQCResult:
    """NQC and what it compares with.

    ``nearest_index[i]`` / ``farthest_index[i]``: the sample nearest to / farthest from sample i (never i) in
    the PCA space; ``random_expectation`` = sum_c (n_c / l)^2 (the paper's); ``loo_expectation`` =
    sum_c n_c (n_c - 1) / (l (l - 1)) (the exact chance level when the neighbour cannot be the sample itself).
    """

    nqc: float
    random_expectation: float
    loo_expectation: float
    nearest_index: np.ndarray
    farthest_index: np.ndarray
    class_counts: dict[Hashable, int] = field(default_factory=dict)
    n_components: int = 10


def class_expectations(labels: Sequence[Hashable] | np.ndarray) -> tuple[float, float]:
    """Chance levels of NQC: ``(sum_c (n_c/l)^2, sum_c n_c (n_c - 1) / (l (l - 1)))`` for l labels."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    total = int(counts.sum())
    if total < 2:
        raise DataError(f"NQC needs at least 2 labelled samples, got {total}")
    counts = counts.astype(np.float64)
    random_expectation = float(np.sum((counts / total) ** 2))
    loo_expectation = float(np.sum(counts * (counts - 1)) / (total * (total - 1)))
    return random_expectation, loo_expectation


def nqc(embeddings: np.ndarray, labels: Sequence[Hashable] | np.ndarray, n_components: int = 10) -> NQCResult:
    """Nearest-neighbour quality: share of samples whose Euclidean nearest neighbour (excluding itself) in the
    PCA(``n_components``) space of ``embeddings`` (n, d) has the same label.

    PCA is fitted on the evaluated set itself; the number of components is capped at ``min(n, d)``. Ties in
    distance go to the lower index.
    """
    from scipy.spatial.distance import cdist
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise DataError(f"embeddings must be a 2-D array (n_samples, dim), got shape {x.shape}")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"got {x.shape[0]} embeddings but {y.shape[0]} labels; pass one label per embedding")
    if not np.all(np.isfinite(x)):
        raise DataError("embeddings contain NaN or infinite values")
    if n_components < 1:
        raise ConfigError(f"n_components must be >= 1, got {n_components}")
    random_expectation, loo_expectation = class_expectations(y)
    components = min(n_components, x.shape[0], x.shape[1])
    projected = PCA(n_components=components).fit_transform(x)
    distances = cdist(projected, projected, metric="euclidean")
    np.fill_diagonal(distances, np.inf)
    nearest = distances.argmin(axis=1)
    np.fill_diagonal(distances, -np.inf)
    farthest = distances.argmax(axis=1)
    values, counts = np.unique(y, return_counts=True)
    return NQCResult(
        nqc=float(np.mean(y[nearest] == y)),
        random_expectation=random_expectation,
        loo_expectation=loo_expectation,
        nearest_index=nearest,
        farthest_index=farthest,
        class_counts={v.item() if hasattr(v, "item") else v: int(c) for v, c in zip(values, counts, strict=True)},
        n_components=components,
    )


# --------------------------------------------------------------------------------------------------- datasets


def stage_means(values: Mapping[int, float]) -> dict[str, float]:
    """Table III row: ``{"Conv1": cka, ..., "mean": mean over the finite stage values}`` (NaN when none is)."""
    row = {STAGE_LABELS[stage]: float(value) for stage, value in sorted(values.items())}
    finite = [v for v in row.values() if not math.isnan(v)]
    row["mean"] = float(np.mean(finite)) if finite else math.nan
    return row


def select_samples(
    path: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    max_images: int | None = None,
    seed: int = 0,
    labelled: bool = False,
) -> tuple[Any, list[Any]]:
    """A dataset (:func:`sslzoo.data.datasets.open_dataset`) and the samples to evaluate on.

    Keeps one ``split`` if given, only samples with a class label if ``labelled`` (NQC), and at most
    ``max_images`` of them, drawn without replacement with ``seed`` and kept in dataset order.
    """
    from sslzoo.data.datasets import open_dataset

    index = open_dataset(path, dataset)
    samples = list(index.samples) if split is None else index.split(split)
    if labelled:
        samples = [s for s in samples if s.label not in (None, "")]
        if len(samples) < 2:
            raise DataError(
                f"{path}: NQC needs class labels (Sample.label) for at least 2 images, found {len(samples)}; "
                "use a dataset with labels (isic2017: diagnosis, monuseg: organ) or add a labels.csv "
                "(id,split,class) next to the split folders"
            )
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images must be >= 1, got {max_images}")
    if max_images is not None and max_images < len(samples):
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=max_images, replace=False))
        samples = [samples[i] for i in keep]
    return index, samples


class _SampleImages(torch.utils.data.Dataset):
    def __init__(self, index: Any, samples: Sequence[Any], transform: Any) -> None:
        self.index, self.samples, self.transform = index, list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.index.read_image(self.samples[i]))


def images_loader(
    index: Any,
    samples: Sequence[Any],
    size: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """Image tensors (B, 3, size, size) of ``samples`` in order, via the evaluation transform of
    :mod:`sslzoo.data.transforms` (shorter side to ``size``, centre crop, normalised with ``mean``/``std``,
    ImageNet's by default)."""
    from sslzoo.data.normalization import IMAGENET_MEAN, IMAGENET_STD
    from sslzoo.data.transforms import EvalTransform

    transform = EvalTransform(size, mean or IMAGENET_MEAN, std or IMAGENET_STD)
    return torch.utils.data.DataLoader(
        _SampleImages(index, samples, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )


def plot_neighbours(
    images: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    labels: Sequence[str],
    nearest_index: np.ndarray,
    farthest_index: np.ndarray,
    queries: Sequence[int],
    out: str | Path,
    tile: int = 160,
) -> Path:
    """PNG grid like the paper's Fig. 4: one row per query image, with its nearest and farthest neighbour.

    ``images`` is indexable by sample number (uint8 RGB arrays, read lazily if it is a lazy sequence). Titles give
    each image's class; neighbour frames are green when the class matches the query's, red when not.
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not queries:
        raise ConfigError("choose at least one query image for the neighbour grid")
    fig, axes = plt.subplots(len(queries), 3, figsize=(7.5, 2.6 * len(queries)), squeeze=False)
    try:
        for row, q in enumerate(queries):
            columns = (("query", q), ("nearest", int(nearest_index[q])), ("farthest", int(farthest_index[q])))
            for col, (title, j) in enumerate(columns):
                ax = axes[row][col]
                ax.imshow(cv2.resize(np.asarray(images[j]), (tile, tile), interpolation=cv2.INTER_AREA))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{title}: {labels[j]}", fontsize=9)
                if col:
                    colour = "tab:green" if labels[j] == labels[q] else "tab:red"
                    for spine in ax.spines.values():
                        spine.set_edgecolor(colour)
                        spine.set_linewidth(3)
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out
