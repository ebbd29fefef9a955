"""TorchServe request/context ↔ :mod:`sslzoo.serving.services` (the logic behind ``handlers/*.py``).

TorchServe 0.12 hands a handler one row per request: ``{"body": bytes}`` for a raw body, or one
entry per multipart field. Query strings never arrive, so options come as headers (``Accept``)
or form fields (``format``, ``task``, ``model``). An exception escaping a handler becomes an opaque
503, so :meth:`ServingAdapter.handle` catches everything and sets status and content type per
request: :class:`~sslzoo.errors.SslzooError` → its ``http_status`` with
``{"code", "type", "message"}``; anything else → 500 with the same body (and a log line).

Custom Prometheus metrics (``metrics_mode=prometheus`` with ``model_metrics_auto_detect=true``):
``SslzooRequests`` (counter; ModelName, Status), ``SslzooLatency`` (gauge, ms; ModelName) and
``SslzooObjectsPerImage`` (gauge; ModelName).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sslzoo.errors import ConfigError, DataError, SslzooError
from sslzoo.serving.schemas import CONTENT_TYPES, ErrorBody, ServedModel

SPEC_FILE = "sslzoo_model.json"
BODY_KEYS = ("body", "data")
#: Longest error message answered (characters) and most field names listed in one: never echo unbounded input.
MAX_MESSAGE = 2000
MAX_LISTED_FIELDS = 10
JSON_HINT = (
    "the body is JSON; send the image bytes with Content-Type image/png, image/jpeg, "
    "image/tiff or application/octet-stream, or as multipart field 'image'"
)

logger = logging.getLogger("sslzoo.serving")


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return message[:MAX_MESSAGE] + f"... ({len(message) - MAX_MESSAGE} more characters cut)"


def error_body(exc: BaseException) -> tuple[int, bytes]:
    """HTTP status and JSON error body for an exception (message at most :data:`MAX_MESSAGE` characters)."""
    if isinstance(exc, SslzooError):
        body = ErrorBody(code=exc.http_status, type=exc.short_name, message=_bounded(str(exc)))
    else:
        detail = _bounded(f"unexpected {type(exc).__name__}: {exc}")
        body = ErrorBody(
            code=500,
            type="InternalError",
            message=f"{detail}; this is a server bug, please report it with the request",
        )
    return body.code, body.model_dump_json().encode()


def field_list(row: dict[str, Any]) -> str:
    """The first :data:`MAX_LISTED_FIELDS` field names of a row (each cut to 40 characters), and how many more."""
    names = sorted(str(name)[:40] for name in row)
    if not names:
        return "none"
    shown = ", ".join(names[:MAX_LISTED_FIELDS])
    more = len(names) - MAX_LISTED_FIELDS
    return shown + (f" and {more} more" if more > 0 else "")


def looks_like_json(value: object, headers: dict[str, str]) -> bool:
    """True for a body sent as JSON: a JSON content type, or bytes that start with ``{`` or ``[``."""
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return True
    if isinstance(value, bytes | bytearray):
        return bytes(value[:64]).lstrip()[:1] in (b"{", b"[")
    return isinstance(value, dict | list)


def request_headers(context: Any, index: int) -> dict[str, str]:
    """Request headers of request ``index`` with lower-case names (per-field content types dropped)."""
    try:
        headers = context.get_all_request_header(index) or {}
    except (AttributeError, IndexError, TypeError):
        return {}
    return {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}


def field_text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"form field {name!r} is not UTF-8 text") from exc
    return str(value).strip()


def image_of(row: dict[str, Any], headers: dict[str, str]) -> object:
    """The image bytes of a row: multipart field ``image`` or the raw body."""
    if "image" in row:
        return row["image"]
    for key in BODY_KEYS:
        if key in row:
            value = row[key]
            if looks_like_json(value, headers):  # TorchServe hands JSON bodies over as raw bytes
                raise DataError(JSON_HINT)
            return value
    fields = field_list(row)
    raise DataError(
        f"missing field 'image' (got fields: {fields}); send the image as multipart field 'image' or as the raw body"
    )


class _Metrics:
    """Thin wrapper over TorchServe's metrics cache; silently inactive outside TorchServe."""

    def __init__(self, context: Any, model: str) -> None:
        self.model = model
        self.requests = self.latency = self.objects = None
        cache = getattr(context, "metrics", None)
        if cache is None:
            return
        try:
            from ts.metrics.metric_type_enum import MetricTypes

            self.requests = cache.add_metric_to_cache(
                "SslzooRequests", "count", ["ModelName", "Status"], MetricTypes.COUNTER
            )
            self.latency = cache.add_metric_to_cache("SslzooLatency", "ms", ["ModelName"], MetricTypes.GAUGE)
            self.objects = cache.add_metric_to_cache("SslzooObjectsPerImage", "count", ["ModelName"], MetricTypes.GAUGE)
        except Exception:
            logger.warning("custom metrics unavailable", exc_info=True)

    def record(self, status: int, milliseconds: float, count: int | None) -> None:
        try:
            if self.requests is not None:
                self.requests.add_or_update(1, [self.model, str(status)])
            if self.latency is not None:
                self.latency.add_or_update(round(milliseconds, 2), [self.model])
            if self.objects is not None and count is not None:
                self.objects.add_or_update(count, [self.model])
        except Exception:
            logger.warning("cannot record metrics", exc_info=True)


class ServingAdapter:
    """A TorchServe entry point: ``handle(data, context)``; ``data is None`` means initialise."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.spec: ServedModel | None = None
        self.service: Any = None
        self.metrics: _Metrics | None = None

    def __call__(self, data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
        if data is None:
            self.initialize(context)
            return None
        return self.handle(data, context)

    # -- set-up ----------------------------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        import torch

        threads = os.environ.get("SSLZOO_TORCH_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        model_dir = Path(context.system_properties.get("model_dir", "."))
        spec = ServedModel.model_validate_json((model_dir / SPEC_FILE).read_text())
        if spec.kind != self.kind:
            raise ConfigError(f"{model_dir}: model-store entry of kind {spec.kind!r} served by the {self.kind} handler")
        gpu = context.system_properties.get("gpu_id")
        device = f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"
        self.spec = spec
        self.service = build_service(spec, model_dir, device)
        self.metrics = _Metrics(context, spec.name)
        import skimage.measure  # noqa: F401 - lazy-loaded package: import now, not on the first request

        logger.info("sslzoo %s %r ready on %s", spec.kind, spec.name, device)

    # -- requests --------------------------------------------------------------------------------------
    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        answers: list[bytes] = []
        for index, row in enumerate(data):
            start = time.perf_counter()
            count: int | None = None
            try:
                if self.service is None:
                    raise RuntimeError("the handler was not initialised")
                encoded = self.process(row or {}, request_headers(context, index))
                status, body, content_type, count = 200, encoded.body, encoded.content_type, encoded.count
            except Exception as exc:
                if not isinstance(exc, SslzooError):
                    logger.exception("unexpected error while serving %s", self.kind)
                status, body = error_body(exc)
                content_type = CONTENT_TYPES["json"]
            context.set_response_status(code=status, phrase="", idx=index)
            context.set_response_content_type(index, content_type)
            if self.metrics is not None:
                self.metrics.record(status, 1000 * (time.perf_counter() - start), count)
            answers.append(body)
        return answers

    def process(self, row: dict[str, Any], headers: dict[str, str]):
        """Run the service on one request row; returns :class:`~sslzoo.serving.services.Encoded`."""
        from sslzoo.serving.services import Encoded, choose_format

        if self.kind == "segmenter":
            fmt = choose_format(headers.get("accept"), field_text(row, "format"))
            return self.service.segment_bytes(image_of(row, headers), fmt)
        if self.kind == "encoder":
            return self.service.embed_bytes(image_of(row, headers))
        if self.kind == "rank":
            return self.rank(row)
        if any(key in row for key in BODY_KEYS) and len(row) == 1:
            raise DataError(
                "evaluation takes multipart/form-data: fields task, model (optional), prediction_<k> or "
                "image_<k> with mask_<k>, or one field 'archive' (zip)"
            )
        result = self.service.evaluate_fields(row)
        return Encoded(result.model_dump_json().encode(), CONTENT_TYPES["json"], result.n_images)

    def rank(self, row: dict[str, Any]):
        """``POST /predictions/rank`` (:class:`~sslzoo.serving.ranking.RankService`)."""
        from sslzoo.serving.ranking import FIELDS_HELP
        from sslzoo.serving.services import Encoded

        if any(key in row for key in BODY_KEYS) and len(row) == 1:
            raise DataError(f"ranking takes multipart/form-data: {FIELDS_HELP}")
        result = self.service.rank_fields(row)
        return Encoded(result.model_dump_json().encode(), CONTENT_TYPES["json"], result.n_images)


def build_service(spec: ServedModel, model_dir: Path, device: str | None = None) -> Any:
    """The service described by a model-store entry."""
    from sslzoo.serving.services import EmbeddingService, EvaluationService, SegmentationService

    if spec.kind == "rank":
        from sslzoo.serving.ranking import RankService

        return RankService(spec.max_pixels, device)
    if spec.kind == "evaluate":
        loaders = {
            name: (lambda name=name, folder=folder: SegmentationService.load(name, folder, device, spec.max_pixels))
            for name, folder in spec.segmenters.items()
        }
        return EvaluationService(loaders, spec.max_pixels)
    if spec.folder is None:
        raise ConfigError(f"{model_dir / SPEC_FILE}: no model folder given")
    folder = model_dir / spec.folder
    if spec.kind == "segmenter":
        return SegmentationService.load(spec.name, folder, device, spec.max_pixels)
    return EmbeddingService.load(spec.name, folder, device, spec.max_pixels)


def read_spec(model_dir: str | Path) -> ServedModel:
    return ServedModel.model_validate(json.loads((Path(model_dir) / SPEC_FILE).read_text()))
