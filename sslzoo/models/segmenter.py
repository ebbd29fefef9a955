"""A fine-tuned segmenter: U-Net weights + everything needed to turn an image into labels.

On disk a segmenter is a folder written by :meth:`Segmenter.save_pretrained`:
``model.safetensors`` + ``config.json`` from smp's own ``save_pretrained`` (so
``smp.from_pretrained(folder)`` also works) and ``segmenter.json`` (:class:`SegmenterConfig`:
task, encoder init, normalisation, tiling, threshold / watershed parameters, training
record, scores, the storage dtype of the weights). ``README.md`` is the model card. Compact zoo
entries store float16 weights (``sslzoo zoo package``); loading copies them into a float32 model.

Inference (:meth:`Segmenter.predict`) is one code path for the CLI, the study and the
server: (with ``resize_to``, squeeze the whole image to the training size first,) pad + tile
the image (``sslzoo.data.tiling``), run the U-Net on batches of tiles, stitch the per-pixel
output with linear blending (resized back to the image's size), then

- semantic: foreground = sigmoid(logit) > ``threshold`` → 0/1 mask;
- instance: the output is the predicted distance map → seeded watershed
  (:mod:`sslzoo.models.postprocess`) → instance ids 1..N.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from sslzoo import __version__
from sslzoo.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from sslzoo.data.resize import resize_image, resize_map
from sslzoo.data.tiling import extract_tiles, stitch_tiles
from sslzoo.data.transforms import normalize_to_tensor
from sslzoo.errors import DataError, NotFoundError
from sslzoo.models.encoders import WeightsDtype, weights_dtype_of
from sslzoo.models.postprocess import WatershedParams, distance_to_instances
from sslzoo.vocabulary import Task

SEGMENTER_FILE = "segmenter.json"


class SegmenterConfig(BaseModel):
    """``segmenter.json``: how a segmenter was made and how to run it."""

    task: Task
    backbone: str
    init: str = Field("random", description="encoder initialisation: a method name, zoo name or path")
    method: str = "random"
    dataset: str = "folder"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tile_size: int = 256
    tile_overlap: int = 64
    resize_to: int | None = Field(
        None,
        description="semantic: squeeze the whole image to resize_to x resize_to (as in training) and resize the "
        "probability map back to the image's size; None: native resolution, tiled",
    )
    threshold: float = Field(0.5, description="semantic: foreground when sigmoid(logit) > threshold")
    watershed: WatershedParams = Field(default_factory=WatershedParams)
    microns_per_pixel: float | None = None
    weights_dtype: WeightsDtype = Field("float32", description="storage dtype of model.safetensors' float tensors")
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    code_version: str = __version__
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))


class Segmenter:
    """U-Net + :class:`SegmenterConfig`; ``predict(image) -> label map`` of the image's height and width."""

    def __init__(self, model: torch.nn.Module, config: SegmenterConfig) -> None:
        self.model = model.eval()
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Segmenter:
        self.model.to(device)
        return self

    # -- files ---------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        smp_model: Any = self.model  # an smp model: it has smp's save_pretrained
        smp_model.save_pretrained(str(folder))
        config = self.config.model_copy(update={"weights_dtype": weights_dtype_of(self.model.state_dict())})
        (folder / SEGMENTER_FILE).write_text(config.model_dump_json(indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> Segmenter:
        import segmentation_models_pytorch as smp

        folder = Path(folder)
        if not (folder / SEGMENTER_FILE).is_file():
            raise NotFoundError(
                f"{folder}: not a segmenter folder (no {SEGMENTER_FILE}); pass a folder made by 'sslzoo finetune'"
            )
        config = SegmenterConfig.model_validate(json.loads((folder / SEGMENTER_FILE).read_text()))
        model = smp.from_pretrained(str(folder))
        return cls(model, config).to(device)

    # -- inference -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_map(self, image: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Per-pixel output ``(H, W)`` float32: foreground probability (semantic) or distance (instance)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        if self.config.resize_to:
            small = self.predict_tiles(resize_image(image, self.config.resize_to), batch_size)
            return resize_map(small, height, width)
        return self.predict_tiles(image, batch_size)

    @torch.no_grad()
    def predict_tiles(self, image: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """:meth:`predict_map` at the image's own resolution: overlapping tiles, stitched with linear blending."""
        height, width = image.shape[:2]
        size = self.config.tile_size
        overlap = min(self.config.tile_overlap, size // 2)
        tiles, grid = extract_tiles(image, size=size, overlap=overlap)
        outputs = np.empty((len(tiles), size, size), np.float32)
        for start in range(0, len(tiles), batch_size):
            batch = torch.stack(
                [normalize_to_tensor(t, self.config.mean, self.config.std) for t in tiles[start : start + batch_size]]
            ).to(self.device)
            out = self.model(batch)[:, 0]
            out = torch.sigmoid(out) if self.config.task == "semantic" else out.clamp_(min=0.0)
            outputs[start : start + len(batch)] = out.float().cpu().numpy()
        return stitch_tiles(outputs, grid, height, width, blend="linear").astype(np.float32)

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        """Labels from :meth:`predict_map`'s output: 0/1 mask (semantic) or instance ids 1..N (int32)."""
        if self.config.task == "semantic":
            return (output > self.config.threshold).astype(np.int32)
        return distance_to_instances(output, self.config.watershed)

    def predict(self, image: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Label map of the image's height and width (see :meth:`postprocess`)."""
        return self.postprocess(self.predict_map(image, batch_size=batch_size))
