"""Pydantic models of what the REST API receives and answers (CONTRACTS.md section 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sslzoo.metrics.evaluate import EvaluationResult
from sslzoo.vocabulary import Task

OutputFormat = Literal["png", "json", "geojson"]
ModelKind = Literal["segmenter", "encoder", "evaluate", "rank"]

#: MIME type of each output format.
CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "json": "application/json",
    "geojson": "application/geo+json",
}

__all__ = [
    "CONTENT_TYPES",
    "EmbeddingResponse",
    "ErrorBody",
    "EvaluationResult",
    "InstanceSummary",
    "ModelKind",
    "OutputFormat",
    "SegmentationSummary",
    "ServedModel",
]


class ErrorBody(BaseModel):
    """Body of every error answer: ``{"code": <status>, "type": "<ShortName>", "message": "..."}``."""

    code: int = Field(description="HTTP status (400, 404, 413, ...)")
    type: str = Field(description="short error name, e.g. DataError, NotFound, PayloadTooLarge")
    message: str = Field(description="what was wrong and how to fix it")


class InstanceSummary(BaseModel):
    """One object: pixel count, centroid ``[y, x]`` and bounding box ``[y0, x0, y1, x1]`` (end exclusive)."""

    id: int
    area: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]


class SegmentationSummary(BaseModel):
    """JSON output of a segmentation; semantic models report connected components as instances."""

    model: str
    task: Task
    height: int
    width: int
    count: int
    foreground_fraction: float
    instances: list[InstanceSummary]


class EmbeddingResponse(BaseModel):
    """JSON output of ``/predictions/embed``: the global-average-pooled last encoder stage."""

    model: str
    dim: int
    embedding: list[float]


class ServedModel(BaseModel):
    """``sslzoo_model.json`` in a model-store entry: what a TorchServe handler should load."""

    name: str
    kind: ModelKind
    task: Task | None = None
    folder: str | None = Field(None, description="model folder relative to the entry (segmenter or encoder)")
    segmenters: dict[str, str] = Field(
        default_factory=dict, description="evaluate only: served segmenter name -> absolute model folder"
    )
    max_pixels: int | None = None
