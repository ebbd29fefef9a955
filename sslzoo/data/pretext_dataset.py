"""The pretraining dataset: unlabelled images cut into tiles, each tile giving two augmented views."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sslzoo.data.io import read_image, to_rgb_uint8
from sslzoo.data.tiling import Tile, pad_to, tile_grid
from sslzoo.errors import DataError

ViewPair = tuple[torch.Tensor, torch.Tensor]


def image_shape(source: Path | np.ndarray) -> tuple[int, int]:
    """``(height, width)`` of an array or image file, read from the file header when possible."""
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise DataError(f"expected an image array of shape (H, W[, C]), got {source.shape}")
        return int(source.shape[0]), int(source.shape[1])
    path = Path(source)
    if path.suffix.lower() not in (".tif", ".tiff"):  # TIFFs may be channel-first: decode them instead
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                width, height = im.size
            return height, width
        except (UnidentifiedImageError, OSError):
            pass  # read_image below raises a DataError with a helpful message
    image = read_image(path)
    return int(image.shape[0]), int(image.shape[1])


class _EpochCopy:
    """A plain stand-in for the shared epoch counter in a pickled copy of a :class:`TwoViewDataset`."""

    def __init__(self, value: int) -> None:
        self.value = value


class TwoViewDataset(Dataset):
    """Tiles of unlabelled images → ``(view1, view2)`` tensor pairs for SSL pretraining.

    Every image is split along ``tile_grid(h, w, size, overlap=0)``; item ``i`` is one grid region
    (reflect-padded to ``size`` when the image is smaller), passed through ``transform``. A
    1000x1000 MoNuSeg image gives 16 items, a 256x256 ISIC image 1.

    ``images`` are file paths (decoded lazily with :func:`sslzoo.data.io.read_image`) or ``uint8``
    arrays. ``resize_to``: every whole image is first squeezed to ``resize_to x resize_to`` (area
    interpolation, aspect not kept), as ``finetune(input_size=...)`` does, so pretraining and fine-tuning
    see one scale (the authors resize both to 256); with ``resize_to == size`` each image is one item.
    With ``cache=True`` each process (the main one and every DataLoader worker) keeps its own decoded
    (and resized) copy; the cache is dropped when the dataset is pickled for a worker.
    """

    def __init__(
        self,
        images: Sequence[Path | str | np.ndarray],
        transform: Callable[[np.ndarray], ViewPair],
        size: int = 256,
        cache: bool = True,
        resize_to: int | None = None,
    ) -> None:
        if len(images) == 0:
            raise DataError("no images to pretrain on; check the dataset folder or the image list")
        self.sources: list[Path | np.ndarray] = [
            to_rgb_uint8(np.asarray(s)) if isinstance(s, np.ndarray) else Path(s) for s in images
        ]
        self.transform = transform
        self.size = size
        self.cache = cache
        if resize_to is not None and resize_to < 1:
            raise DataError(f"resize_to must be a positive size in pixels, got {resize_to}")
        self.resize_to = resize_to
        self.tiles: list[tuple[int, Tile]] = []
        for index, source in enumerate(self.sources):
            height, width = (resize_to, resize_to) if resize_to else image_shape(source)
            self.tiles.extend((index, tile) for tile in tile_grid(height, width, size, overlap=0))
        self._cache: dict[int, np.ndarray] = {}
        self._cache_pid = os.getpid()
        self._view_seed: int | None = None
        self._epoch: Any = None  # shared-memory int once seed_views is called (workers read it)

    def __len__(self) -> int:
        return len(self.tiles)

    def image(self, index: int) -> np.ndarray:
        """Decoded ``uint8`` RGB image ``index`` (from the per-process cache when enabled)."""
        source = self.sources[index]
        if isinstance(source, np.ndarray):
            return self._resized(source)
        if not self.cache:
            return self._resized(read_image(source))
        if self._cache_pid != os.getpid():  # forked worker: start its own cache
            self._cache, self._cache_pid = {}, os.getpid()
        image = self._cache.get(index)
        if image is None:
            image = self._cache[index] = self._resized(read_image(source))
        return image

    def _resized(self, image: np.ndarray) -> np.ndarray:
        if not self.resize_to or image.shape[:2] == (self.resize_to, self.resize_to):
            return image
        import cv2

        return cv2.resize(image, (self.resize_to, self.resize_to), interpolation=cv2.INTER_AREA)

    def tile(self, item: int) -> np.ndarray:
        """A writable copy of the ``size x size`` ``uint8`` region of item ``item``, before augmentation."""
        index, (y, x, h, w) = self.tiles[item]
        image = self.image(index)
        if image.shape[0] < y + h or image.shape[1] < x + w:
            raise DataError(f"{self.sources[index]}: image changed size since the dataset was built")
        region = image[y : y + h, x : x + w]
        tile = pad_to(region, self.size, self.size)
        # a fresh array: transforms may write into it, and it must not alias the cached image
        return np.array(tile) if tile is region else tile

    def seed_views(self, seed: int | None, epoch: int = 0) -> None:
        """Draw item ``i``'s views from ``SeedSequence([seed, epoch, i])`` (``None``: the transform's own stream).

        The epoch sits in shared memory, so DataLoader workers, persistent ones too, see later calls. Seeded, an
        item's views depend on (seed, epoch, item) only: not on the worker count, the shuffle order or on what
        was drawn before, so a resumed run draws what an uninterrupted one would have drawn.
        """
        if seed is None:
            self._view_seed = None
            return
        if self._epoch is None:
            import multiprocessing

            self._epoch = multiprocessing.RawValue("q", 0)
        self._view_seed = int(seed)
        self._epoch.value = int(epoch)

    def __getitem__(self, item: int) -> ViewPair:
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} tiles")
        item %= len(self)
        if self._view_seed is not None and hasattr(self.transform, "set_random_seed"):
            state = np.random.SeedSequence([self._view_seed, self._epoch.value, item]).generate_state(1)[0]
            self.transform.set_random_seed(int(state))
        return self.transform(self.tile(item))

    def __getstate__(self) -> dict[str, Any]:
        from multiprocessing.context import get_spawning_popen

        state = self.__dict__.copy()
        state["_cache"] = {}  # do not ship decoded images to spawned workers
        if state["_epoch"] is not None and get_spawning_popen() is None:
            # shared memory travels only to a process being started; any other pickle (deepcopy, saving) gets a copy
            state["_epoch"] = _EpochCopy(self._epoch.value)
        return state
