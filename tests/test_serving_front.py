"""The REST front (Starlette on uvicorn) against a fake engine on loopback: API keys, body limit, true /ping.

The fake engine answers like TorchServe's inference and management APIs and records what reached it, so
each test can check both what the client got and whether the request was forwarded at all.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
import httpx
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sslzoo.errors import ConfigError
from sslzoo.serving.auth import KeyStore, bearer_token, digest, new_key_file, parse_keys
from sslzoo.serving.front import FrontServer, FrontSettings, create_app

KEY_A = "key-a-" + "0123456789abcdef"
KEY_B = "key-b-" + "fedcba9876543210"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeEngine:
    """TorchServe stand-in: /predictions echoes what it got, /models/<name> reports workers, /metrics text."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.ready = {"nuclei": True, "evaluate": True}

        async def predictions(request: Request) -> Response:
            body = await request.body()
            self.received.append({"headers": dict(request.headers), "size": len(body)})
            if body.startswith(b"FAIL"):
                return Response(b"x" * 100_000, 500, media_type="text/plain")
            return JSONResponse({"size": len(body), "content_type": request.headers.get("content-type")})

        async def describe(request: Request) -> Response:
            name = request.path_params["name"]
            status = "READY" if self.ready.get(name) else "UNLOADING"
            return JSONResponse([{"modelName": name, "workers": [{"id": "9000", "status": status}]}])

        async def metrics(request: Request) -> Response:
            return Response(b"# TYPE ts_x counter\nts_x 1\n", media_type="text/plain")

        app = Starlette(
            routes=[
                Route("/predictions/{model}", predictions, methods=["POST"]),
                Route("/models/{name}", describe),
                Route("/metrics", metrics),
            ]
        )
        self.port = _port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def engine():
    fake = FakeEngine()
    yield fake
    fake.stop()


@pytest.fixture()
def front(engine, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# two keys: rotation\n{KEY_A}\n\n{KEY_B}\n")
    base = f"http://127.0.0.1:{engine.port}"
    settings = FrontSettings(
        engine_url=base,
        management_url=base,
        metrics_url=base,
        models={"nuclei": "segmenter", "evaluate": "evaluate"},
        keys=KeyStore(keys, check_interval=0.0),
        max_body_bytes=200_000,
        ping_cache_seconds=0.0,
    )
    port = _port()
    with FrontServer(settings, "127.0.0.1", port):
        engine.received.clear()
        yield f"http://127.0.0.1:{port}", keys, settings


def _post(url: str, key: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Content-Type": "image/png", **kwargs.pop("headers", {})}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{url}/predictions/nuclei", headers=headers, timeout=30, **kwargs)


def _assert_error(response: httpx.Response, code: int) -> dict:
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"code", "type", "message"} and body["code"] == code
    return body


# ---------------------------------------------------------------------------------------------- keys


def test_key_file_parsing_and_hashing(tmp_path):
    assert parse_keys(f"# c\n\n  {KEY_A}  \n{KEY_B}\n") == [KEY_A, KEY_B]
    with pytest.raises(ConfigError, match="at least 16"):
        parse_keys("short\n")
    with pytest.raises(ConfigError, match="no key"):
        parse_keys("# only a comment\n")
    assert bearer_token(f"Bearer {KEY_A}") == KEY_A and bearer_token(f"bearer  {KEY_A} ") == KEY_A
    assert bearer_token(f"Basic {KEY_A}") is None and bearer_token("Bearer ") is None and bearer_token(None) is None
    path = tmp_path / "k"
    path.write_text(KEY_A + "\n")
    store = KeyStore(path)
    assert store.valid(KEY_A) and not store.valid(KEY_B) and not store.valid(None) and not store.valid(KEY_A[:-1])
    # only digests are kept in memory
    assert store._digests == (digest(KEY_A),) and KEY_A not in repr(vars(store))
    generated = new_key_file(tmp_path / "gen" / "keys.txt")
    assert (generated.stat().st_mode & 0o777) == 0o600 and len(parse_keys(generated.read_text())) == 1


def test_key_file_reload_on_change_and_sighup_and_bad_file_keeps_keys(tmp_path):
    path = tmp_path / "k"
    path.write_text(KEY_A + "\n")
    store = KeyStore(path, check_interval=0.0)
    path.write_text(f"{KEY_A}\n{KEY_B}\n")  # rotation step 1: both valid
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert store.valid(KEY_A) and store.valid(KEY_B)
    path.write_text(KEY_B + "\n")  # step 2: old key retired
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert store.valid(KEY_B) and not store.valid(KEY_A)
    path.write_text("")  # a half-written file must not lock everyone out
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
    assert store.valid(KEY_B) and store.last_error and "no key" in store.last_error
    path.write_text(KEY_A + "\n")
    assert store.reload() and store.valid(KEY_A)  # what SIGHUP does
    with pytest.raises(ConfigError, match="api-keys"):
        KeyStore(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- auth


def test_a_valid_image_without_or_with_a_wrong_key_is_401_and_never_forwarded(front, engine):
    url, _, _ = front
    image = _png()
    for key in (None, "not-the-key-0123456789", KEY_A + "x", KEY_A[:-1]):
        response = _post(url, key, content=image)
        body = _assert_error(response, 401)
        assert body["type"] == "Unauthorized" and "Authorization: Bearer" in body["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert engine.received == []
    wrong_scheme = httpx.post(
        f"{url}/predictions/nuclei", content=image, headers={"Authorization": f"Basic {KEY_A}"}, timeout=30
    )
    _assert_error(wrong_scheme, 401)
    for key in (KEY_A, KEY_B):  # two keys at once: rotation without downtime
        response = _post(url, key, content=image)
        assert response.status_code == 200 and response.json()["size"] == len(image)
    assert len(engine.received) == 2
    assert "authorization" not in engine.received[0]["headers"]  # client keys never reach the engine


def test_rotating_the_key_file_takes_effect_without_restart(front):
    url, keys, _ = front
    image = _png()
    keys.write_text(KEY_B + "\n")
    os.utime(keys, ns=(time.time_ns(), time.time_ns() + 10**9))
    _assert_error(_post(url, KEY_A, content=image), 401)
    assert _post(url, KEY_B, content=image).status_code == 200


def test_the_key_is_checked_before_any_body_byte_is_read(front):
    """At the ASGI level: without a key the answer starts before the app ever calls ``receive``."""
    _, _, settings = front
    app = create_app(settings)
    events: list[str] = []

    async def receive():
        events.append("receive")
        return {"type": "http.request", "body": b"\x89PNG" * 1000, "more_body": False}

    async def send(message):
        events.append(message["type"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/predictions/nuclei",
        "raw_path": b"/predictions/nuclei",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "headers": [(b"content-type", b"image/png"), (b"content-length", b"4000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    asyncio.run(app(scope, receive, send))
    assert events[0] == "http.response.start", events
    assert events.index("http.response.body") < events.index("receive")  # answered, then the rest discarded


def test_a_large_keyless_body_gets_a_readable_401(front, engine):
    url, _, _ = front
    response = _post(url, None, content=os.urandom(150_000))
    _assert_error(response, 401)
    assert engine.received == []


# ---------------------------------------------------------------------------------------------- limits


def test_body_over_the_limit_is_413_naming_the_limit_declared_or_streamed(front, engine):
    url, _, _ = front
    declared = _post(url, KEY_A, content=b"\x89PNG" + os.urandom(250_000))
    body = _assert_error(declared, 413)
    assert "200,000 bytes" in body["message"] and "SSLZOO_MAX_BODY_BYTES" in body["message"]

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(30):
            yield os.urandom(10_000)

    streamed = _post(url, KEY_A, content=chunks())
    assert _assert_error(streamed, 413)["type"] == "PayloadTooLarge"
    assert engine.received == []
    assert _post(url, KEY_A, content=os.urandom(150_000)).status_code == 200


# ---------------------------------------------------------------------------------------------- endpoints


def test_ping_is_true_and_needs_no_key(front, engine):
    url, _, _ = front
    assert httpx.get(f"{url}/ping", timeout=10).status_code == 200
    engine.ready["evaluate"] = False
    try:
        response = httpx.get(f"{url}/ping", timeout=10)
        _assert_error(response, 503)
    finally:
        engine.ready["evaluate"] = True
    assert httpx.get(f"{url}/ping", timeout=10).json() == {"status": "Healthy"}


def test_nothing_else_is_exposed_and_no_server_version_leaks(front):
    url, _, _ = front
    for path in ("/api-description", "/models", "/", "/predictions"):
        _assert_error(httpx.get(f"{url}{path}", timeout=10), 401)
        with_key = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=10)
        _assert_error(with_key, 404)
        assert "server" not in with_key.headers
    _assert_error(httpx.options(f"{url}/api-description", timeout=10), 401)
    missing = httpx.post(f"{url}/predictions/nope", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=10)
    assert _assert_error(missing, 404)["message"].startswith("unknown model 'nope'")
    metrics = httpx.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "ts_x 1" in metrics.text
    assert "server" not in metrics.headers


def test_form_urlencoded_binary_is_forwarded_as_octet_stream(front, engine):
    url, _, _ = front
    image = _png()
    response = _post(url, KEY_A, content=image, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.json()["content_type"] == "application/octet-stream"


def test_engine_errors_are_bounded_json_and_engine_down_is_503(front, engine, tmp_path):
    url, _, settings = front
    response = _post(url, KEY_A, content=b"FAIL")
    body = _assert_error(response, 500)
    assert len(response.content) < 3000 and "more characters cut" in body["message"]
    down = FrontSettings(
        engine_url=f"http://127.0.0.1:{_port()}",
        management_url=f"http://127.0.0.1:{_port()}",
        metrics_url=f"http://127.0.0.1:{_port()}",
        models={"nuclei": "segmenter"},
        keys=settings.keys,
        ping_cache_seconds=0.0,
    )
    port = _port()
    with FrontServer(down, "127.0.0.1", port):
        _assert_error(_post(f"http://127.0.0.1:{port}", KEY_A, content=b"x"), 503)
        _assert_error(httpx.get(f"http://127.0.0.1:{port}/ping", timeout=10), 503)


def test_a_busy_port_is_a_clear_error(front):
    url, _, settings = front
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match="--inference-port"):
        FrontServer(settings, "127.0.0.1", port).start(timeout=5)


def test_key_file_resolution_generates_once_and_reuses(tmp_path, monkeypatch):
    from sslzoo.cli.serving import ready_message
    from sslzoo.serving.server import ServeConfig, ServeInfo, resolve_key_file

    monkeypatch.delenv("SSLZOO_API_KEYS_FILE", raising=False)
    path, generated = resolve_key_file(ServeConfig(), tmp_path)
    assert generated and path == tmp_path / "api-keys.txt"
    again, generated_again = resolve_key_file(ServeConfig(), tmp_path)
    assert again == path and not generated_again and again.read_text() == path.read_text()  # same key after restart
    monkeypatch.setenv("SSLZOO_API_KEYS_FILE", str(tmp_path / "env-keys"))
    assert resolve_key_file(ServeConfig(), tmp_path)[0] == tmp_path / "env-keys"
    assert resolve_key_file(ServeConfig(api_keys=tmp_path / "cli-keys"), tmp_path)[0] == tmp_path / "cli-keys"
    info = ServeInfo("http://127.0.0.1:8080", {"nuclei": "segmenter", "evaluate": "evaluate"}, path, True,
                     "/w/logs/torchserve.log", tmp_path, None)  # fmt: skip
    text = ready_message(info)
    assert text.count("READY") == 1 and str(path) in text and "torchserve.log" in text
    assert 'curl -H "Authorization: Bearer' in text and "/predictions/nuclei" in text and "/ping" in text


def test_the_console_hears_of_health_changes_once_not_of_every_probe(front, engine, caplog):
    url, _, _ = front
    with caplog.at_level("WARNING", logger="sslzoo.serving"):
        for _ in range(3):
            httpx.get(f"{url}/ping", timeout=10)
        engine.ready["evaluate"] = False
        try:
            for _ in range(3):
                assert httpx.get(f"{url}/ping", timeout=10).status_code == 503
        finally:
            engine.ready["evaluate"] = True
        for _ in range(3):
            assert httpx.get(f"{url}/ping", timeout=10).status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "sslzoo.serving"]
    assert messages == [
        "sslzoo: NOT READY: no live worker for evaluate (GET /ping answers 503)",
        "sslzoo: ready again: every model has a live worker",
    ]
