"""Framework-neutral services: decode → validate → run → encode.

TorchServe handlers (``handlers/*.py`` via :mod:`sslzoo.serving.adapter`) and ``sslzoo predict``
call exactly these classes, so a test of this module covers what the server does.

- :class:`SegmentationService`: image bytes → label map (``Segmenter.predict``, tiled for any
  size) → PNG / JSON / GeoJSON.
- :class:`EmbeddingService`: image bytes → global-average-pooled last encoder stage, computed on
  the evaluation view of :mod:`sslzoo.data.transforms` (shorter side resized to the encoder's
  ``input_size``, centre crop, the encoder's mean/std) — the same embedding NQC uses.
- :class:`EvaluationService`: labelled sets (multipart fields or a zip) →
  :func:`sslzoo.metrics.evaluate.evaluate_pairs`.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sslzoo.errors import ConfigError, DataError, NotFoundError, TooLargeError
from sslzoo.serving.decode import check_pixels, decode_image, decode_label_map, header_pixels
from sslzoo.serving.encode import encode_output
from sslzoo.serving.limits import Limits, check_segmentation_work
from sslzoo.serving.schemas import CONTENT_TYPES, EmbeddingResponse, EvaluationResult
from sslzoo.vocabulary import TASKS, is_task

#: Accept-header media types → output format.
MEDIA_FORMATS: dict[str, str] = {
    "image/png": "png",
    "application/json": "json",
    "application/geo+json": "geojson",
    "application/geojson": "geojson",
}
EVALUATE = "evaluate"

#: Semantic masks and predictions take exactly these value sets (CONTRACTS.md section 2).
BINARY_SETS = ({0, 1}, {0, 255})


def choose_format(accept: str | None = None, form_format: str | None = None) -> str:
    """Output format from a multipart ``format`` field (wins) or the ``Accept`` header.

    ``Accept`` is read in order of its q-values; ``*/*``, ``image/*`` or no header mean PNG.
    Raises :class:`ConfigError` when nothing acceptable is offered.
    """
    if form_format is not None and form_format.strip():
        value = form_format.strip().lower()
        if value not in CONTENT_TYPES:
            raise ConfigError(f"unknown format {_short(form_format)!r}; the 'format' field takes png, json or geojson")
        return value
    if accept is None or not accept.strip():
        return "png"
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media, quality = parts[0].lower(), 1.0
        for param in parts[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            ranked.append((-quality, position, media))
    for _, _, media in sorted(ranked):
        if media in MEDIA_FORMATS:
            return MEDIA_FORMATS[media]
        if media in ("*/*", "image/*"):
            return "png"
    raise ConfigError(
        f"cannot answer with Accept: {_short(accept)}; ask for image/png, application/json or application/geo+json"
    )


def _short(text: str, limit: int = 64) -> str:
    """``text`` cut to ``limit`` characters: error messages never echo unbounded client input."""
    return text if len(text) <= limit else text[:limit] + "..."


def read_archive_folders(
    data: object,
    limits: Limits,
    folders: tuple[str, ...],
    empty_hint: str,
    size_hint: str,
    show: Callable[[str], str] = str,
) -> dict[str, dict[str, object]]:
    """The files of a zip request body by folder (``folder -> stem -> bytes``) for the ``folders`` named.

    400 for an empty or broken zip or two files of one stem in one folder; 413 past ``limits``' member count or
    expanded size (read from the central directory before any member is inflated; zipfile never inflates a member
    past its recorded size). Hidden files and ``__MACOSX`` are skipped; ``show`` shortens echoed client names."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise DataError(f"field 'archive' is empty; {empty_hint}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    except zipfile.BadZipFile as exc:
        raise DataError(f"field 'archive' is not a zip file ({exc})") from exc
    found: dict[str, dict[str, object]] = {name: {} for name in folders}
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > limits.archive_max_members:
            raise TooLargeError(
                f"archive holds {len(members):,} files; at most {limits.archive_max_members:,} are accepted "
                "(SSLZOO_ARCHIVE_MAX_MEMBERS)"
            )
        expanded = sum(m.file_size for m in members)
        if expanded > limits.archive_max_bytes:
            raise TooLargeError(
                f"archive expands to {expanded:,} bytes, over the limit of {limits.archive_max_bytes:,} "
                f"(SSLZOO_ARCHIVE_MAX_BYTES); {size_hint}"
            )
        for member in members:
            path = PurePosixPath(member.filename)
            if path.name.startswith(".") or "__MACOSX" in path.parts or len(path.parts) < 2:
                continue
            folder = path.parts[-2]
            if folder in found:
                if path.stem in found[folder]:
                    raise DataError(f"archive: two files in {folder}/ share the stem {show(path.stem)!r}")
                try:
                    found[folder][path.stem] = archive.read(member)
                except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as exc:
                    raise DataError(f"archive: cannot read {show(member.filename)} ({exc})") from exc
    return found


def select_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when available, else ``cpu``."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------------- models


def model_kind(source: str | Path) -> str:
    """``segmenter`` | ``encoder`` | ``evaluate`` for a folder, a zoo name or an alias, read from the model's files
    (:func:`sslzoo.hub.resolve_model`; a zoo entry that is not local yet is pulled)."""
    from sslzoo.hub.resolve import resolve_model

    if str(source) == EVALUATE:
        return EVALUATE
    return resolve_model(source).kind


# --------------------------------------------------------------------------------------------- services


def count_objects(labels: np.ndarray, task: str) -> int:
    """Number of objects: distinct non-zero ids (instance) or connected components (semantic)."""
    labels = np.asarray(labels)
    if task == "semantic":  # 8-connected components, as objects_of
        from scipy import ndimage as ndi

        return int(ndi.label(labels > 0, structure=np.ones((3, 3), bool))[1])
    if labels.size == 0 or labels.max(initial=0) <= 0:
        return 0
    return int(np.count_nonzero(np.bincount(labels.ravel().astype(np.int64, copy=False))[1:]))  # no sort


@dataclass
class Encoded:
    """A response body with its content type and the number of objects found (for metrics)."""

    body: bytes
    content_type: str
    count: int | None = None


class SegmentationService:
    """Segment images with one segmenter and encode the result."""

    def __init__(self, name: str, segmenter: Any, max_pixels: int | None = None) -> None:
        self.name = name
        self.segmenter = segmenter
        self.max_pixels = max_pixels
        self.limits = Limits.from_env(max_pixels)

    @classmethod
    def load(
        cls,
        name: str,
        source: str | Path,
        device: str | None = None,
        max_pixels: int | None = None,
        runtime: str | None = None,
    ):
        """The segmenter ``source`` names (:func:`sslzoo.hub.load_segmenter`) on :func:`select_device`'s device,
        its forward pass on ``runtime`` (default ``$SSLZOO_RUNTIME``, else ``auto``: ONNX Runtime on a CPU,
        :mod:`sslzoo.models.runtime`)."""
        from sslzoo.hub.resolve import load_segmenter
        from sslzoo.models.runtime import RUNTIME_ENV

        segmenter = load_segmenter(source, device=select_device(device))
        segmenter.use_runtime(runtime or os.environ.get(RUNTIME_ENV) or "auto")
        return cls(name, segmenter, max_pixels)

    @property
    def task(self) -> str:
        return self.segmenter.config.task

    def check_work(self, height: int, width: int, name: str = "image") -> None:
        """413 when the image's aspect ratio or tiled work is over the limits (:mod:`sslzoo.serving.limits`)."""
        config = self.segmenter.config
        size = int(config.tile_size)
        overlap = min(int(config.tile_overlap), size // 2)
        if getattr(config, "resize_to", None):  # squeezed to the training size first: the tiled work is fixed
            ratio_only = Limits(max_aspect_ratio=self.limits.max_aspect_ratio, max_tile_pixels=2**62)
            check_segmentation_work(height, width, size, overlap, ratio_only, name)
            return
        check_segmentation_work(height, width, size, overlap, self.limits, name)

    def segment(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """Label map ``(H, W)`` int32 of an RGB ``uint8`` image: 0/1 (semantic) or ids 1..N (instance)."""
        self.check_work(int(image.shape[0]), int(image.shape[1]), name)
        return self.segmenter.predict(image)

    def segment_bytes(self, data: object, fmt: str = "png") -> Encoded:
        """Decode, segment and encode one image given as bytes (limits checked on the header first)."""
        if isinstance(data, bytes | bytearray) and data:
            shape = check_pixels(bytes(data), self.max_pixels, "image")
            self.check_work(int(shape[0]), int(shape[1]))
        labels = self.segment(decode_image(data, self.max_pixels, "image"))
        body, content_type = encode_output(labels, self.task, self.name, fmt)
        return Encoded(body, content_type, count_objects(labels, self.task))


class EmbeddingService:
    """Global-average-pooled last encoder stage of the evaluation view of an image."""

    def __init__(self, name: str, encoder: Any, config: Any, max_pixels: int | None = None) -> None:
        from sslzoo.data.transforms import EvalTransform

        self.name = name
        self.encoder = encoder.eval()
        self.config = config
        self.max_pixels = max_pixels
        self.transform = EvalTransform(config.input_size, config.mean, config.std)

    @classmethod
    def load(cls, name: str, source: str | Path, device: str | None = None, max_pixels: int | None = None):
        """The encoder ``source`` names (:func:`sslzoo.hub.load_encoder`), in eval mode on the chosen device."""
        from sslzoo.hub.resolve import load_encoder

        encoder, config = load_encoder(source)
        return cls(name, encoder.to(select_device(device)).eval(), config, max_pixels)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """``(C,)`` float32 embedding of an RGB ``uint8`` image."""
        import torch

        device = next(self.encoder.parameters()).device
        with torch.no_grad():
            features = self.encoder(self.transform(image)[None].to(device))
        last = features[-1] if isinstance(features, list | tuple) else features
        return last.mean(dim=(2, 3))[0].float().cpu().numpy()

    def embed_bytes(self, data: object) -> Encoded:
        vector = self.embed(decode_image(data, self.max_pixels, "image"))
        response = EmbeddingResponse(model=self.name, dim=int(vector.shape[0]), embedding=vector.tolist())
        return Encoded(response.model_dump_json().encode(), CONTENT_TYPES["json"])


def _natural_key(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def check_pairs(inputs: Mapping[str, Any], masks: Mapping[str, Any], role: str, name_limit: int | None = None) -> None:
    """DataError naming (up to 5, each cut to ``name_limit`` characters) the keys without their other half."""

    def names(keys: set[str]) -> str:
        ordered = sorted(keys, key=_natural_key)[:5]
        return ", ".join(_short(k, name_limit) if name_limit else k for k in ordered)

    missing_masks, missing_inputs = set(inputs) - set(masks), set(masks) - set(inputs)
    if missing_masks or missing_inputs:
        parts = []
        if missing_masks:
            parts.append(f"no mask for {role}(s) {names(missing_masks)}")
        if missing_inputs:
            parts.append(f"no {role} for mask(s) {names(missing_inputs)}")
        raise DataError("; ".join(parts) + f" (send {role}_<k> and mask_<k> in pairs, matched by <k>)")


def _text(value: object, field: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"field {field!r} is not UTF-8 text") from exc
    return str(value).strip()


class EvaluationService:
    """Score labelled sets against ground truth, optionally running a served segmenter first.

    ``segmenters`` maps served segmenter names to a zero-argument loader; each is loaded on first use.
    """

    def __init__(
        self,
        segmenters: Mapping[str, Callable[[], SegmentationService]] | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self._loaders = dict(segmenters or {})
        self._loaded: dict[str, SegmentationService] = {}
        self.max_pixels = max_pixels
        self.limits = Limits.from_env(max_pixels)

    def segmenter(self, name: str) -> SegmentationService:
        if name not in self._loaded:
            if name not in self._loaders:
                known = ", ".join(sorted(self._loaders)) or "none"
                raise NotFoundError(f"unknown model {_short(name)!r} in field 'model'; served segmenters: {known}")
            self._loaded[name] = self._loaders[name]()
        return self._loaded[name]

    # -- inputs ----------------------------------------------------------------------------------------
    def evaluate_fields(self, fields: Mapping[str, object]) -> EvaluationResult:
        """Evaluate a multipart request: ``task``, ``model``, and ``prediction_<k>`` / ``image_<k>`` +
        ``mask_<k>`` fields, or one ``archive`` field (zip)."""
        task = _text(fields["task"], "task") if "task" in fields else None
        model = _text(fields["model"], "model") if "model" in fields else None
        task, model = (task or None), (model or None)
        if "archive" in fields:
            return self.evaluate_archive(fields["archive"], task=task, model=model)
        groups: dict[str, dict[str, object]] = {"prediction": {}, "image": {}, "mask": {}}
        for key, value in fields.items():
            prefix, _, suffix = key.partition("_")
            if prefix in groups and suffix:
                groups[prefix][suffix] = value
        inputs = groups["image"] if model else groups["prediction"]
        other = groups["prediction"] if model else groups["image"]
        if other and not inputs:
            raise ConfigError(
                "image_<k> fields need a 'model' field naming the segmenter to run"
                if not model
                else "with a 'model' field send image_<k> fields (not prediction_<k>)"
            )
        return self._evaluate(inputs, groups["mask"], task, model, "image" if model else "prediction")

    def evaluate_archive(self, data: object, task: str | None = None, model: str | None = None) -> EvaluationResult:
        """Evaluate a zip holding ``masks/`` and ``images/`` (with ``model``) or ``predictions/``, matched by stem."""
        folders = read_archive_folders(
            data, self.limits, ("masks", "images", "predictions"),
            "send a zip file holding masks/ and images/ or predictions/", "send smaller sets",
        )  # fmt: skip
        if not folders["masks"]:
            raise DataError("archive holds no masks/ folder with label images; put ground truth in masks/")
        if model:
            if not folders["images"]:
                raise DataError("archive holds no images/ folder; with a 'model' field send images/ + masks/")
            return self._evaluate(folders["images"], folders["masks"], task, model, "image")
        if not folders["predictions"]:
            raise ConfigError(
                "archive holds no predictions/ folder; send predictions/ + masks/, or images/ + masks/ "
                "with a 'model' field naming the segmenter to run"
            )
        return self._evaluate(folders["predictions"], folders["masks"], task, None, "prediction")

    # -- scoring ---------------------------------------------------------------------------------------
    def _evaluate(
        self,
        inputs: Mapping[str, object],
        masks: Mapping[str, object],
        task: str | None,
        model: str | None,
        role: str,
    ) -> EvaluationResult:
        from sslzoo.metrics.evaluate import evaluate_pairs

        service = self.segmenter(model) if model else None
        if service is not None:
            if task and task != service.task:
                raise ConfigError(f"task {task!r} does not match model {model!r}, which is {service.task}")
            task = service.task
        if task is None:
            raise ConfigError("field 'task' is missing; send task=semantic or task=instance (or a 'model' field)")
        if not is_task(task):
            raise ConfigError(f"unknown task {_short(task)!r}; choose {' or '.join(TASKS)}")
        check_pairs(inputs, masks, role)
        if not masks:
            raise DataError(
                "nothing to evaluate: send prediction_<k> + mask_<k> fields (or image_<k> + mask_<k> with 'model'), "
                "or an 'archive' zip"
            )
        self._check_budget(inputs, masks, role)

        def pairs():
            for key in sorted(masks, key=_natural_key):
                gt = decode_label_map(masks[key], self.max_pixels, f"mask_{key}")
                if service is not None:
                    pred = service.segment(decode_image(inputs[key], self.max_pixels, f"image_{key}"), f"image_{key}")
                else:
                    pred = decode_label_map(inputs[key], self.max_pixels, f"prediction_{key}")
                if pred.shape != gt.shape:
                    raise DataError(
                        f"{role}_{key}: size {pred.shape[1]}x{pred.shape[0]} (WxH) differs from mask_{key} "
                        f"({gt.shape[1]}x{gt.shape[0]}); send pairs of the same size"
                    )
                if task == "semantic":
                    gt = binary_mask(gt, f"mask_{key}")
                    if service is None:
                        pred = binary_mask(pred, f"prediction_{key}")
                yield key, pred, gt

        return evaluate_pairs(pairs(), "semantic" if task == "semantic" else "instance", model=model)

    def _check_budget(self, inputs: Mapping[str, object], masks: Mapping[str, object], role: str) -> None:
        """413 when the headers of all images of the request announce more than ``eval_max_pixels`` pixels."""
        total = 0
        for label, group in ((role, inputs), ("mask", masks)):
            for key, value in group.items():
                if isinstance(value, bytes | bytearray) and value:
                    total += header_pixels(bytes(value), f"{label}_{key}")[0]
        if total > self.limits.eval_max_pixels:
            raise TooLargeError(
                f"the request holds {total:,} pixels in {len(inputs) + len(masks)} images, over the limit of "
                f"{self.limits.eval_max_pixels:,} per evaluation (SSLZOO_EVAL_MAX_PIXELS); split it into smaller sets"
            )


def binary_mask(labels: np.ndarray, name: str) -> np.ndarray:
    """A semantic mask as 0/1; 400 unless its values are 0/1 or 0/255 (the contract's convention)."""
    values = np.unique(labels)
    found = {int(v) for v in values[:3]}
    if len(values) > 2 or not any(found <= allowed for allowed in BINARY_SETS):
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise DataError(
            f"{name}: a semantic mask must be binary, 0/1 or 0/255, but holds the values {shown}; threshold it "
            "first (e.g. a 0-255 probability map: mask = (prob >= 128) * 255) and save it as 8-bit PNG"
        )
    return (labels > 0).astype(np.int64)
