"""The public REST front: Starlette on uvicorn, in front of TorchServe bound to loopback.

Design (CONTRACTS.md section 2):

- Clients talk only to this front (``--host``:``--inference-port``). TorchServe's inference,
  management, metrics and gRPC APIs listen on 127.0.0.1 only, with TorchServe's own token
  authorisation **disabled**: its keys expire (``token_expiration_min``) and are random per
  process, which locked every deployment out after an hour and broke replicas. Authentication
  is the front's job; TorchServe is reachable only from inside the host / container / pod.
  (On a shared multi-user host, other local users can reach loopback ports: run the server in
  a container or its own network namespace there.)
- ``POST /predictions/{model}``: the ``Authorization: Bearer <key>`` header is checked against
  the :class:`~sslzoo.serving.auth.KeyStore` *before any body byte is read*; a missing or wrong
  key is 401 with ``{"code", "type", "message"}`` and ``WWW-Authenticate: Bearer``. Then the
  model name (404), then the body: a declared ``Content-Length`` over the limit is 413 at once,
  otherwise the body is counted while it streams in and refused with 413 as soon as it passes
  the limit. Only then is it forwarded to TorchServe over a pooled keep-alive connection.
  Error answers are sent first and the rest of an unread body is then read and discarded
  (bounded in bytes and time), so the client can read the answer instead of a TCP reset.
- A binary body sent as ``application/x-www-form-urlencoded`` (curl's ``--data-binary``
  default, which TorchServe's frontend answers with a 500) is forwarded to segmenters and
  encoders as ``application/octet-stream``.
- ``GET /ping`` needs no key: 200 ``{"status": "Healthy"}`` only when every served model has a
  READY worker (asked from TorchServe's management API, cached for one second), else 503.
- ``GET /metrics`` needs no key: TorchServe's Prometheus text (read-only).
- Every other path or method is 401 without a key and 404 with one: ``/api-description`` and
  the management API are not exposed, and no ``Server`` header names the software.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sslzoo.serving.auth import KeyStore, bearer_token
from sslzoo.serving.limits import DEFAULT_MAX_BODY_BYTES

logger = logging.getLogger("sslzoo.serving")

#: Longest error message passed on to a client (characters).
MAX_MESSAGE = 2000
#: An unread request body after an error answer is discarded up to this many seconds.
DRAIN_SECONDS = 10.0
JSON = "application/json"
_FORWARDED = ("content-type", "accept")


@dataclass
class FrontSettings:
    """What the front needs: the engine's loopback URLs, the served models, the keys, the body limit."""

    engine_url: str
    management_url: str
    metrics_url: str
    models: Mapping[str, str]  # name -> kind (segmenter | encoder | evaluate | rank)
    keys: KeyStore
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    response_timeout: float = 330.0
    ping_cache_seconds: float = 1.0
    _ping: tuple[float, bool] = field(default=(0.0, False), repr=False)


def error_json(code: int, kind: str, message: str) -> bytes:
    """``{"code", "type", "message"}`` with the message cut to :data:`MAX_MESSAGE` characters."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + f"... ({len(message) - MAX_MESSAGE} more characters cut)"
    return json.dumps({"code": code, "type": kind, "message": message}).encode()


class DrainingResponse(Response):
    """A response that, after sending its body, reads and discards the rest of the request body.

    The body is only discarded (constant memory), up to ``drain_bytes`` and :data:`DRAIN_SECONDS`;
    closing a connection with unread data would reset it and lose the answer on the client side.
    """

    def __init__(self, content: bytes, status_code: int, headers: dict[str, str] | None, drain_bytes: int) -> None:
        super().__init__(content, status_code, headers, media_type=JSON)
        self.drain_bytes = drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        drained, deadline = 0, time.monotonic() + DRAIN_SECONDS
        with contextlib.suppress(TimeoutError, OSError):
            while drained <= self.drain_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                message = await asyncio.wait_for(receive(), remaining)
                if message["type"] != "http.request":
                    break
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def error_response(
    code: int, kind: str, message: str, drain_bytes: int = 0, headers: dict[str, str] | None = None
) -> Response:
    body = error_json(code, kind, message)
    if drain_bytes:
        return DrainingResponse(body, code, headers, drain_bytes)
    return Response(body, code, headers, media_type=JSON)


class _TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, counted while it streams in; :class:`_TooLarge` once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _TooLarge(int(declared))
        except ValueError:
            pass
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: FrontSettings) -> Starlette:
    """The front as a Starlette application (see the module docstring)."""
    import httpx

    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.response_timeout, connect=5.0)
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=32)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            state["client"] = client
            yield

    def client() -> httpx.AsyncClient:
        return state["client"]

    def unauthorized(request: Request, drain: bool) -> Response | None:
        if settings.keys.valid(bearer_token(request.headers.get("authorization"))):
            return None
        given = "a wrong key" if request.headers.get("authorization") else "no key"
        return error_response(
            401,
            "Unauthorized",
            f"{given} in the Authorization header; send 'Authorization: Bearer <API key>' with a key from the "
            "server's API key file (sslzoo serve --api-keys FILE)",
            drain_bytes=settings.max_body_bytes if drain else 0,
            headers={"WWW-Authenticate": 'Bearer realm="sslzoo"'},
        )

    async def ready() -> bool:
        stamp, healthy = settings._ping
        if time.monotonic() - stamp < settings.ping_cache_seconds:
            return healthy

        async def live(name: str) -> bool:
            try:
                reply = await client().get(f"{settings.management_url}/models/{name}", timeout=5.0)
                if reply.status_code != 200:
                    return False
                return any(w.get("status") == "READY" for entry in reply.json() for w in entry.get("workers", []))
            except (httpx.HTTPError, ValueError, AttributeError, TypeError):
                return False

        results = await asyncio.gather(*(live(name) for name in settings.models))
        healthy = bool(results) and all(results)
        # the console hears of changes only, once the server has been ready (not of every probe)
        if state.get("was_ready") and healthy != state.get("healthy"):
            if healthy:
                logger.warning("sslzoo: ready again: every model has a live worker")
            else:
                down = [name for name, ok in zip(settings.models, results, strict=True) if not ok]
                logger.warning("sslzoo: NOT READY: no live worker for %s (GET /ping answers 503)", ", ".join(down))
        state["healthy"] = healthy
        state["was_ready"] = state.get("was_ready", False) or healthy
        settings._ping = (time.monotonic(), healthy)
        return healthy

    async def ping(request: Request) -> Response:
        if await ready():
            return Response(b'{"status": "Healthy"}', 200, media_type=JSON)
        return error_response(
            503, "Unhealthy", "not every served model has a live worker yet; retry shortly (see the server log)"
        )

    async def metrics(request: Request) -> Response:
        try:
            reply = await client().get(f"{settings.metrics_url}/metrics", timeout=10.0)
        except httpx.HTTPError:
            return error_response(503, "Unavailable", "the metrics API of the engine is not reachable")
        return Response(reply.content, reply.status_code, media_type=reply.headers.get("content-type", "text/plain"))

    async def predictions(request: Request) -> Response:
        denied = unauthorized(request, drain=True)
        if denied is not None:
            return denied
        model = request.path_params["model"]
        if model not in settings.models:
            known = ", ".join(sorted(settings.models))
            return error_response(
                404, "NotFound", f"unknown model {model[:64]!r}; served: {known}", drain_bytes=settings.max_body_bytes
            )
        try:
            body = await read_body(request, settings.max_body_bytes)
        except _TooLarge:
            return error_response(
                413,
                "PayloadTooLarge",
                f"request body over the limit of {settings.max_body_bytes:,} bytes (SSLZOO_MAX_BODY_BYTES, "
                "sslzoo serve --max-body-mb); send a smaller file",
                drain_bytes=settings.max_body_bytes,
                headers={"Connection": "close"},
            )
        headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded" and settings.models[model] not in ("evaluate", "rank"):
            headers["content-type"] = "application/octet-stream"
        try:
            reply = await client().post(f"{settings.engine_url}/predictions/{model}", content=body, headers=headers)
        except httpx.TimeoutException:
            return error_response(504, "Timeout", "the model did not answer in time; send a smaller image")
        except httpx.HTTPError as exc:
            logger.warning("engine not reachable: %s", exc)
            return error_response(503, "Unavailable", "the inference engine is not reachable; retry shortly")
        media = reply.headers.get("content-type", "application/octet-stream")
        if reply.status_code >= 400:
            return Response(_engine_error(reply.status_code, reply.content), reply.status_code, media_type=JSON)
        return Response(reply.content, reply.status_code, media_type=media)

    async def anything_else(request: Request) -> Response:
        denied = unauthorized(request, drain=True)
        if denied is not None:
            return denied
        return error_response(
            404,
            "NotFound",
            "no such endpoint; use POST /predictions/<model>, GET /ping or GET /metrics",
            drain_bytes=settings.max_body_bytes,
        )

    every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes = [
        Route("/ping", ping, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/predictions/{model}", predictions, methods=["POST"]),
        Route("/{path:path}", anything_else, methods=every),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _engine_error(status: int, content: bytes) -> bytes:
    """The engine's error body in the contract's shape, message bounded."""
    try:
        data = json.loads(content)
        if isinstance(data, dict) and {"code", "type", "message"} <= set(data):
            return error_json(int(data["code"]), str(data["type"]), str(data["message"]))
    except (ValueError, TypeError):
        pass
    text = content.decode("utf-8", errors="replace").strip() or "no details"
    return error_json(status, "EngineError", text)


class FrontServer:
    """uvicorn serving the front in a background thread (signals stay with the caller's main thread)."""

    def __init__(self, settings: FrontSettings, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            server_header=False,
            lifespan="on",
            timeout_keep_alive=5,
            http="auto",  # httptools (C parser) when installed, else h11
            loop="auto",  # uvloop when installed
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="sslzoo-front", daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; start() reports it
            self.server.run()

    def start(self, timeout: float = 30.0) -> None:
        from sslzoo.errors import ConfigError

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"the REST front could not listen on {self.server.config.host}:{self.server.config.port} "
                    "(is the port in use?); choose another with --inference-port"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)

    def __enter__(self) -> FrontServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
