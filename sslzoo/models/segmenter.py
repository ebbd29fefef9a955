"""A fine-tuned segmenter: U-Net weights + everything needed to turn an image into labels.

On disk a segmenter is a folder written by :meth:`Segmenter.save_pretrained`:
``model.safetensors`` + ``config.json`` from smp's own ``save_pretrained`` (so
``smp.from_pretrained(folder)`` also works) and ``segmenter.json`` (:class:`SegmenterConfig`:
task, encoder init, normalisation, tiling, threshold / watershed parameters, training
record, scores, the storage dtype of the weights). ``README.md`` is the model card. Compact zoo
entries store float16 weights (``sslzoo zoo package``); loading copies them into a float32 model.

Inference (:meth:`Segmenter.predict`) is one code path for the CLI, the study and the
server: (with ``resize_to``, squeeze the whole image to the training size first,) then

- an image whose sides are at most ``inference_tile`` (1024) runs whole: reflect-padded at the
  bottom/right to a multiple of 32 (the U-Net's stride), one forward pass, cropped back; no tile
  seams and no pixel computed twice (a 1000x1000 field is 1.05 Mpx of network input instead of the
  1.64 Mpx of 25 overlapping 256-px tiles);
- a larger image runs in ``inference_tile``-sized windows overlapping by ``tile_overlap``
  (``sslzoo.data.tiling``), stitched with linear blending; ``inference_tile`` bounds the memory
  (bench/inference.py measures it);

the forward pass runs on the segmenter's runtime (:mod:`sslzoo.models.runtime`, :meth:`Segmenter.use_runtime`):
torch eager, channels-last under ``torch.inference_mode`` (the default, and on a GPU), or an ONNX Runtime
session exported from the same weights (``auto`` picks it on a CPU: ~2x faster there, docs/inference.md); then

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
from sslzoo.data.tiling import Tile, pad_to, stitch_tiles, tile_grid
from sslzoo.data.transforms import normalize_to_tensor
from sslzoo.errors import DataError, NotFoundError
from sslzoo.models.encoders import WeightsDtype, weights_dtype_of
from sslzoo.models.postprocess import WatershedParams, distance_to_instances
from sslzoo.models.runtime import OnnxNetwork, resolve_runtime
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
    inference_tile: int = Field(
        1024,
        ge=32,
        description="largest window (pixels, rounded down to a multiple of 32) the U-Net runs on at inference: "
        "images up to this size run whole, larger ones in windows of this size overlapping by tile_overlap; "
        "bounds the memory of one forward pass (measured on CPU, resnet18 U-Net: +0.44 GB at 1024, +0.16 GB at 512)",
    )
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
        self.runtime = "torch"
        self._onnx: OnnxNetwork | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Segmenter:
        self.model.to(device)
        if self.runtime == "onnxruntime" and self.device.type != "cpu":  # the CPU session cannot follow
            self.use_runtime("torch")
        return self

    def use_runtime(self, runtime: str | None = "auto", threads: int | None = None) -> str:
        """Run the forward pass on ``runtime`` (``auto``, ``torch``, ``onnxruntime``); returns the one chosen.

        ``onnxruntime`` exports the current weights once (a few seconds) into a CPU session with ``threads``
        intra-op threads (default: torch's); if the weights change later the session is rebuilt on the next call.
        """
        chosen = resolve_runtime(runtime, self.device)
        self._onnx = OnnxNetwork(self.model, threads) if chosen == "onnxruntime" else None
        self.runtime = chosen
        return chosen

    # -- files ---------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        smp_model: Any = self.model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
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
    @torch.inference_mode()
    def predict_map(self, image: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Per-pixel output ``(H, W)`` float32: foreground probability (semantic) or distance (instance)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        if self.config.resize_to:
            small = self.predict_tiles(resize_image(image, self.config.resize_to), batch_size)
            return resize_map(small, height, width)
        return self.predict_tiles(image, batch_size)

    def window_geometry(self, height: int, width: int) -> tuple[int, int]:
        """``(window, overlap)`` for an image: the whole image (its longer side) when it fits ``inference_tile``."""
        limit = max(32, self.config.inference_tile // 32 * 32)
        if max(height, width) <= limit:
            return max(height, width), 0
        return limit, min(self.config.tile_overlap, limit // 2)

    def input_windows(self, image: np.ndarray) -> tuple[torch.Tensor, list[Tile]]:
        """Normalised network input ``(N, 3, h, w)`` (sides multiples of 32) and the windows' places in the image."""
        height, width = image.shape[:2]
        size, overlap = self.window_geometry(height, width)
        grid = tile_grid(height, width, size, overlap)
        h, w = -(-grid[0].h // 32) * 32, -(-grid[0].w // 32) * 32  # each window padded to the U-Net's stride
        padded = pad_to(image, h, w)
        windows = [padded[t.y : t.y + h, t.x : t.x + w] for t in grid]
        batch = torch.stack([normalize_to_tensor(win, self.config.mean, self.config.std) for win in windows])
        layout = torch.channels_last if self.runtime == "torch" else torch.contiguous_format  # what the runtime reads
        return batch.contiguous(memory_format=layout), grid

    def network(self) -> Any:
        """The forward pass ``batch -> raw output`` on this segmenter's runtime (re-exported if weights moved)."""
        if self.runtime == "onnxruntime":
            if self._onnx is None or not self._onnx.is_current(self.model):
                threads = self._onnx.threads if self._onnx is not None else None
                self._onnx = OnnxNetwork(self.model, threads)
            return self._onnx
        return self.model.to(memory_format=torch.channels_last)  # a no-op after the first call

    @torch.inference_mode()
    def run_windows(self, batch: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """The U-Net's output ``(N, h, w)`` float32 for normalised windows: probability or clamped distance."""
        network = self.network()
        n, _, h, w = batch.shape
        step = batch_size or max(1, (8 * 256 * 256) // (h * w))  # at most 8 tiles of 256 px per forward pass
        outputs = np.empty((n, h, w), np.float32)
        for start in range(0, n, step):
            out = network(batch[start : start + step].to(self.device))[:, 0]
            out = torch.sigmoid(out) if self.config.task == "semantic" else out.clamp_(min=0.0)
            outputs[start : start + len(out)] = out.float().cpu().numpy()
        return outputs

    @staticmethod
    def stitch(outputs: np.ndarray, grid: list[Tile], height: int, width: int) -> np.ndarray:
        """One ``(height, width)`` map from the windows' outputs (linear blending where they overlap)."""
        if len(grid) == 1:
            return np.ascontiguousarray(outputs[0, :height, :width])
        return stitch_tiles(outputs, grid, height, width, blend="linear").astype(np.float32)

    def predict_tiles(self, image: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """:meth:`predict_map` at the image's own resolution: the whole image, or overlapping windows stitched."""
        height, width = image.shape[:2]
        batch, grid = self.input_windows(image)
        return self.stitch(self.run_windows(batch, batch_size), grid, height, width)

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        """Labels from :meth:`predict_map`'s output: 0/1 mask (semantic) or instance ids 1..N (int32)."""
        if self.config.task == "semantic":
            return (output > self.config.threshold).astype(np.int32)
        return distance_to_instances(output, self.config.watershed)

    def predict(self, image: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Label map of the image's height and width (see :meth:`postprocess`)."""
        return self.postprocess(self.predict_map(image, batch_size=batch_size))
