"""The fine-tune proxy of ``sslzoo rank --probe finetune``: a short frozen-encoder U-Net fine-tune per split.

It imitates the few-label fine-tuning it predicts (a frozen encoder, smp's light U-Net decoder, Adam at lr 1e-3,
the fine-tuning loss and metric), made cheap by training the decoder on cached encoder features:

1. **Tile pool.** :data:`POOL_TILES` seeded square crops per image of side :func:`tile_side` (:data:`TILE`, less
   for smaller images; reflect-padded where an image is smaller, corners on a 32-pixel lattice), encoded once by
   the frozen encoder in batches of :data:`BATCH` with batch norm in train mode, as the ground truth's frozen
   encoder in train-mode batch norm sees its tiles. The running statistics are reset first and accumulated as a
   cumulative average (``momentum=None``) over the pool: the encoder then predicts with the statistics of the
   user's images (AdaBN), as a fine-tuned frozen encoder does.
2. **Decoder per split.** One seeded decoder initialisation (the same for every split and every encoder of a
   backbone, so comparisons are paired) is trained for ``finetune_steps`` Adam steps on batches of :data:`BATCH`
   pool tiles of the split's training images (drawn with ``default_rng([seed, split])``). Loss: Dice on logits
   (semantic) or smooth-L1 on the distance map (instance), as :class:`sslzoo.downstream.finetune.SegmentationModule`.
3. **Scores.** Each image passes once through the encoder (eval mode, reflect-padded to a multiple of 32); every
   decoder whose split holds it out predicts it. ``finetune_dice``: DSC of the foreground (semantic: sigmoid > 0.5;
   instance: the watershed's foreground); ``finetune_aji_plus`` (instance): AJI+ after the fixed watershed;
   ``finetune_loss``: minus the fine-tuning loss on each held-out image, whole.
4. **Learning speed.** ``finetune_train_loss``: minus the mean over the steps of the training loss of each batch,
   taken before the step that trains on it (the sum of training losses of Ru et al., NeurIPS 2021, "Speedy
   performance estimation for neural architecture search"; within the first pass over the pool it is a
   prequential, i.e. held-out, loss). It scores how fast the decoder learns from the encoder's features,
   on every tile of the split's training images rather than on the few held-out ones.

Written by hand: no library trains a decoder on cached features of a frozen encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from sslzoo.vocabulary import Task

if TYPE_CHECKING:
    import torch


# Structural types of what this module reads from sslzoo.downstream.rank's records (that module
# imports this one lazily; importing it back, even for types, would be a cycle).
class LabelledImageLike(Protocol):
    """One labelled image (:class:`sslzoo.downstream.rank.LabelledImage`)."""

    image: np.ndarray
    labels: np.ndarray
    foreground: np.ndarray
    distance: np.ndarray | None


class LoadedEncoderLike(Protocol):
    """A loaded candidate encoder (:class:`sslzoo.downstream.rank.LoadedEncoder`)."""

    module: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    backbone: str


class RankSettingsLike(Protocol):
    """The settings read here (:class:`sslzoo.downstream.rank.RankSettings`)."""

    seed: int
    finetune_steps: int


#: Training tile side (the fine-tuning ground truth of docs/rank.md trains on 128-pixel tiles).
TILE = 128
#: Tiles per step.
BATCH = 8
#: Tiles cached per image.
POOL_TILES = 6
#: Decoder widths (smp's default, the ground truth's).
DECODER_CHANNELS = (256, 128, 64, 32, 16)
LR = 1e-3


def _pad_to(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    from torch.nn import functional as F

    pad_h, pad_w = height - tensor.shape[-2], width - tensor.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return tensor
    mode = "reflect" if pad_h < tensor.shape[-2] and pad_w < tensor.shape[-1] else "replicate"
    return F.pad(tensor, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode=mode)


def _target(item: LabelledImageLike, task: str) -> np.ndarray:
    if task == "semantic":
        return item.foreground.astype(np.float32)
    assert item.distance is not None  # prepare_images computes it for instance
    return item.distance.astype(np.float32)


def tile_side(items: Sequence[LabelledImageLike]) -> int:
    """:data:`TILE`, or the smallest image side rounded down to a multiple of 32 when smaller (at least 32)."""
    smallest = min(min(item.labels.shape) for item in items)
    return max(32, min(TILE, smallest // 32 * 32))


def _pool(items: Sequence[LabelledImageLike], task: str, mean: Any, std: Any, seed: int) -> tuple[Any, Any, np.ndarray]:
    """``(images, targets, owner)``: the seeded tile pool (``N x 3 x TILE x TILE``, ``N x 1 x TILE x TILE``) and the
    index of the image each tile comes from."""
    import torch

    from sslzoo.data.transforms import normalize_to_tensor

    images, targets, owner = [], [], []
    side = tile_side(items)
    for index, item in enumerate(items):
        rng = np.random.default_rng([seed, 7, index])
        x = normalize_to_tensor(item.image, mean, std)
        y = torch.from_numpy(_target(item, task))[None]
        size = (max(side, x.shape[-2]), max(side, x.shape[-1]))
        x, y = _pad_to(x[None], *size)[0], _pad_to(y[None], *size)[0]
        rows = np.arange(0, size[0] - side + 1, 32)
        cols = np.arange(0, size[1] - side + 1, 32)
        rows = np.append(rows, size[0] - side) if rows[-1] != size[0] - side else rows
        cols = np.append(cols, size[1] - side) if cols[-1] != size[1] - side else cols
        corners = [(int(r), int(c)) for r in rows for c in cols]
        for k in rng.permutation(len(corners))[:POOL_TILES]:
            r, c = corners[int(k)]
            images.append(x[:, r : r + side, c : c + side])
            targets.append(y[:, r : r + side, c : c + side])
            owner.append(index)
    return torch.stack(images), torch.stack(targets), np.array(owner)


def _adabn_features(encoder: Any, tiles: torch.Tensor) -> list[torch.Tensor]:
    """Encoder pyramids of ``tiles`` in batches of :data:`BATCH` in train-mode batch norm, accumulating the
    running statistics as a cumulative average (reset first); leaves the encoder in eval mode."""
    import torch

    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    bounds = list(range(0, len(tiles), BATCH)) + [len(tiles)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:  # train-mode batch norm needs two tiles: merge the last
        bounds.pop(-2)
    levels: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            levels.append(list(encoder(tiles[start:stop])))
    encoder.eval()
    return [torch.cat([lv[k] for lv in levels]) for k in range(len(levels[0]))]


def _loss(task: str) -> Any:
    from torch.nn import functional as F

    if task == "semantic":
        import segmentation_models_pytorch as smp

        return smp.losses.DiceLoss(mode="binary", from_logits=True)
    return F.smooth_l1_loss


def finetune_scores(
    encoder: LoadedEncoderLike,
    items: Sequence[LabelledImageLike],
    task: str,
    settings: RankSettingsLike,
    splits: list[np.ndarray],
) -> dict[str, list[float]]:
    """Per proxy, the score of every split: ``finetune_dice``, ``finetune_loss`` (minus the training loss on the
    held-out images, whole), ``finetune_train_loss`` (minus the mean training-batch loss before each step) and,
    for instance, ``finetune_aji_plus``."""
    import torch

    from sslzoo.data.transforms import normalize_to_tensor
    from sslzoo.metrics.segmentation import aji_plus, dice
    from sslzoo.models.postprocess import FIXED_WATERSHED, distance_to_instances
    from sslzoo.models.unet import build_unet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_unet(
            encoder.module, encoder.backbone, cast(Task, task), frozen=True, decoder_channels=DECODER_CHANNELS
        )
    start_state = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    head_state = {k: v.clone() for k, v in model.segmentation_head.state_dict().items()}
    tiles, targets, owner = _pool(items, task, encoder.mean, encoder.std, settings.seed)
    pyramid = _adabn_features(model.encoder, tiles)
    del tiles
    loss_fn = _loss(task)
    decoders = []
    train_loss_scores = np.zeros(len(splits))
    for r, mask in enumerate(splits):
        model.decoder.load_state_dict(start_state)
        model.segmentation_head.load_state_dict(head_state)
        model.decoder.train()
        model.segmentation_head.train()
        params = [*model.decoder.parameters(), *model.segmentation_head.parameters()]
        optimizer = torch.optim.Adam(params, lr=LR)
        train = np.flatnonzero(~mask[owner])
        rng = np.random.default_rng([settings.seed, r])
        for _ in range(settings.finetune_steps):
            pick = torch.from_numpy(rng.choice(train, size=min(BATCH, len(train)), replace=False))
            out = model.segmentation_head(model.decoder([f[pick] for f in pyramid]))
            loss = loss_fn(out, targets[pick])
            train_loss_scores[r] -= float(loss.detach()) / settings.finetune_steps
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        decoders.append(
            (
                {k: v.detach().clone() for k, v in model.decoder.state_dict().items()},
                {k: v.detach().clone() for k, v in model.segmentation_head.state_dict().items()},
            )
        )
    del pyramid
    model.eval()
    dice_scores = np.zeros(len(splits))
    aji_scores = np.zeros(len(splits))
    loss_scores = np.zeros(len(splits))
    for index, item in enumerate(items):
        held = [r for r, mask in enumerate(splits) if mask[index]]
        if not held:
            continue
        height, width = item.labels.shape
        x = normalize_to_tensor(item.image, encoder.mean, encoder.std)[None]
        x = _pad_to(x, height + (-height) % 32, width + (-width) % 32)
        target = torch.from_numpy(_target(item, task))[None, None]
        with torch.no_grad():
            features = model.encoder(x)
            for r in held:
                model.decoder.load_state_dict(decoders[r][0])
                model.segmentation_head.load_state_dict(decoders[r][1])
                logits = model.segmentation_head(model.decoder(features))[:, :, :height, :width]
                out = logits[0, 0].numpy()
                n_test = int(splits[r].sum())
                loss_scores[r] -= float(loss_fn(logits, target)) / n_test
                if task == "semantic":
                    dice_scores[r] += dice(out > 0.0, item.foreground) / n_test
                else:
                    labels = distance_to_instances(np.clip(out, 0.0, None), FIXED_WATERSHED)
                    dice_scores[r] += dice(labels > 0, item.foreground) / n_test
                    aji_scores[r] += aji_plus(labels, item.labels) / n_test
    scores = {
        "finetune_dice": [float(v) for v in dice_scores],
        "finetune_loss": [float(v) for v in loss_scores],
        "finetune_train_loss": [float(v) for v in train_loss_scores],
    }
    if task == "instance":
        scores["finetune_aji_plus"] = [float(v) for v in aji_scores]
    return scores
