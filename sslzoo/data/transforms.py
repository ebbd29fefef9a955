"""Augmentations: SSL two-view pipelines, downstream image+mask pipelines, evaluation transform.

Built on albumentations 2.0.8 (OpenCV kernels on ``uint8`` HWC arrays). Two view pipelines:

* the authors' MoNuSeg list (their ``ssl_monuseg.yaml``), used for H&E and other nuclei data, with an
  optional H&E stain jitter (:class:`HEStainJitter`);
* the MoCo v2 / DenseCL list, used for dermoscopy (ISIC 2017) and users' own folders.

Colour factors are multiplicative as in torchvision's ``ColorJitter`` (albumentations'
``ColorJitter`` implements torchvision's formulas). ``GaussianBlur`` with ``blur_limit=0``
derives the kernel from sigma as PIL does (``2 * int(3.5 sigma) + 1``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at import otherwise

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from sslzoo.data.io import to_rgb_uint8
from sslzoo.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from sslzoo.errors import ConfigError

#: Datasets whose pretraining uses the authors' MoNuSeg augmentation list.
PAPER_LIST_DATASETS = ("monuseg", "dsb2018")
#: Datasets whose pretraining uses the MoCo v2 / DenseCL augmentation list.
MOCOV2_LIST_DATASETS = ("isic2017", "folder")


class HEStainJitter(A.ImageOnlyTransform):
    """H&E stain variation (Tellez et al. 2018): jitter each stain channel in HED optical-density space.

    ``skimage.color.rgb2hed`` separates haematoxylin, eosin and DAB; each channel ``c`` becomes
    ``c * a + b`` with ``a ~ U(1 - sigma, 1 + sigma)`` and ``b ~ U(-sigma, sigma) * std(c)`` drawn per image
    and channel; ``hed2rgb`` maps back (values clipped to [0, 1], returned as ``uint8``; the round trip
    is not exact for saturated pixels). ``sigma`` 0 is the identity. Not in the authors' configuration: an
    option (``monuseg_view_augmentation(stain=...)``, ``PretextConfig.stain_jitter``).
    """

    def __init__(self, sigma: float = 0.05, p: float = 0.5) -> None:
        super().__init__(p=p)
        if not 0.0 <= sigma < 1.0:
            raise ConfigError(f"stain jitter sigma must lie in [0, 1), got {sigma}")
        self.sigma = float(sigma)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        draw = self.py_random.uniform
        return {
            "alpha": [draw(1.0 - self.sigma, 1.0 + self.sigma) for _ in range(3)],
            "beta": [draw(-self.sigma, self.sigma) for _ in range(3)],
        }

    def apply(
        self, img: np.ndarray, alpha: Sequence[float] = (1.0,) * 3, beta: Sequence[float] = (0.0,) * 3, **params
    ) -> np.ndarray:
        from skimage.color import hed2rgb, rgb2hed

        if self.sigma == 0.0:  # the HED round trip is lossy near saturated pixels: identity means identity
            return img
        hed = rgb2hed(to_rgb_uint8(img))
        scale = hed.reshape(-1, 3).std(axis=0)
        hed = hed * np.asarray(alpha) + np.asarray(beta) * scale
        return (np.clip(hed2rgb(hed), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)


def monuseg_view_augmentation(size: int = 256, stain: float = 0.0) -> A.Compose:
    """The authors' MoNuSeg view augmentation (``ssl_monuseg.yaml`` of lrettenberger/ssl_image_seg).

    RandomResizedCrop scale [0.2, 1], ratio (1, 1) (p=1) → ONE joint ColorJitter(brightness 0.6,
    contrast 0.8, saturation 0.8, hue 0.2) (p=.8) → [``stain > 0``: H&E stain jitter
    (:class:`HEStainJitter`, sigma ``stain``, p=.5)] → Gaussian blur sigma [0.1, 2] (p=.5) → vertical
    flip (p=.5) → horizontal flip (p=.5). The paper's text lists the colour factors as separate steps
    with a second "brightness [0.8, 1.2]"; in the authors' configuration that is hue 0.2 of one jitter.
    """
    steps: list = [
        A.RandomResizedCrop(size=(size, size), scale=(0.2, 1.0), ratio=(1.0, 1.0), p=1.0),
        A.ColorJitter(brightness=0.6, contrast=0.8, saturation=0.8, hue=0.2, p=0.8),
    ]
    if stain > 0:
        steps.append(HEStainJitter(sigma=stain, p=0.5))
    steps += [
        A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, 2.0), p=0.5),
        A.VerticalFlip(p=0.5),
        A.HorizontalFlip(p=0.5),
    ]
    return A.Compose(steps)


def mocov2_view_augmentation(size: int = 256) -> A.Compose:
    """MoCo v2 / DenseCL view augmentation.

    RandomResizedCrop scale [0.2, 1] → ColorJitter(0.4, 0.4, 0.4, 0.1) (p=.8) → grey (p=.2) →
    Gaussian blur sigma [0.1, 2] (p=.5) → horizontal flip (p=.5).
    """
    return A.Compose(
        [
            A.RandomResizedCrop(size=(size, size), scale=(0.2, 1.0), p=1.0),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8),
            A.ToGray(num_output_channels=3, p=0.2),
            A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, 2.0), p=0.5),
            A.HorizontalFlip(p=0.5),
        ]
    )


def view_augmentation(dataset: str, size: int = 256, stain: float = 0.0) -> A.Compose:
    """The view augmentation for ``dataset``: monuseg/dsb2018 → the authors' MoNuSeg list (``stain``: optional
    H&E stain jitter); isic2017/folder → MoCo v2."""
    if dataset in PAPER_LIST_DATASETS:
        return monuseg_view_augmentation(size, stain)
    if stain > 0:
        raise ConfigError(f"H&E stain jitter is for H&E data (monuseg, dsb2018), not {dataset!r}")
    if dataset in MOCOV2_LIST_DATASETS:
        return mocov2_view_augmentation(size)
    known = ", ".join(PAPER_LIST_DATASETS + MOCOV2_LIST_DATASETS)
    raise ConfigError(f"unknown dataset {dataset!r} for view augmentation; choose one of {known}")


def normalize_to_tensor(
    image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """``uint8`` HWC RGB → float32 ``3 x H x W`` tensor ``(x / 255 - mean) / std`` per channel."""
    image = to_rgb_uint8(np.asarray(image))
    if not image.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. decoded by PIL)
        image = image.copy()
    tensor = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32).div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


class TwoViews:
    """Two independent draws of one augmentation, each normalised to a float32 ``3 x H x W`` tensor."""

    def __init__(
        self,
        augmentation: A.Compose,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.augmentation = augmentation
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def view(self, image: np.ndarray) -> torch.Tensor:
        """One augmented, normalised view of a ``uint8`` HWC image."""
        return normalize_to_tensor(self.augmentation(image=image)["image"], self.mean, self.std)

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = to_rgb_uint8(np.asarray(image))
        return self.view(image), self.view(image)

    def set_random_seed(self, seed: int | None) -> None:
        """Seed the augmentation (albumentations keeps its own generator, which global seeds do not reach)."""
        self.augmentation.set_random_seed(seed)

    def __repr__(self) -> str:
        return f"TwoViews({self.augmentation!r})"


def two_view_transform(dataset: str, size: int = 256, stain: float = 0.0) -> TwoViews:
    """:class:`TwoViews` over :func:`view_augmentation` for ``dataset`` with ImageNet normalisation."""
    return TwoViews(view_augmentation(dataset, size, stain))


def downstream_transform(
    train: bool,
    size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Image + target pipeline for fine-tuning; call ``t(image=img, mask=labels[, distance=dmap])``.

    Spatial steps move the image, ``mask`` and the additional mask-like target ``distance``
    (e.g. a float32 distance map) together without interpolation. ``train``: reflect-pad to at
    least ``size``, random ``size x size`` crop, horizontal/vertical flips (p=.5), random 90°
    rotation (p=.5), mild colour jitter (brightness/contrast/saturation ±0.1, hue ±0.02, p=.5).
    Eval: no geometry change. Both end with normalisation and ``ToTensorV2`` (image → float32
    ``3 x H x W``; masks → ``H x W`` tensors; integer masks may come back as int32).
    """
    finish = [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    if not train:
        return A.Compose(finish, additional_targets={"distance": "mask"})
    steps = [
        A.PadIfNeeded(min_height=size, min_width=size, position="top_left", border_mode=cv2.BORDER_REFLECT_101),
        A.RandomCrop(height=size, width=size),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.5),
    ]
    return A.Compose(steps + finish, additional_targets={"distance": "mask"})


class EvalTransform:
    """``uint8`` HWC → normalised float32 ``3 x size x size``: shorter side resized to ``size``, centre crop."""

    def __init__(
        self, size: int = 256, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.size = size
        self.mean, self.std = tuple(mean), tuple(std)
        self.geometry = A.Compose(
            [
                A.SmallestMaxSize(max_size=size, interpolation=cv2.INTER_AREA),
                A.CenterCrop(height=size, width=size),
            ]
        )

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        image = to_rgb_uint8(np.asarray(image))
        return normalize_to_tensor(self.geometry(image=image)["image"], self.mean, self.std)


def eval_transform(size: int = 256) -> EvalTransform:
    """Deterministic transform for embeddings, CKA and NQC (see :class:`EvalTransform`)."""
    return EvalTransform(size)


def seed_worker_transform(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's albumentations pipeline its own seed.

    albumentations keeps its own generator (global seeds do not reach it); without this every worker
    would replay the same augmentations. The worker seed (``base_seed + worker_id``, drawn from the
    loader's seeded generator) makes runs reproducible for a fixed number of workers. The dataset's
    ``transform`` is seeded if it has ``set_random_seed`` (an ``A.Compose`` or :class:`TwoViews`).
    """
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if info is not None and transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)
