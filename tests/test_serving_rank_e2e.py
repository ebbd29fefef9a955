"""``POST /predictions/rank`` end to end: ``sslzoo serve --models rank`` (REST front + real TorchServe) on free ports;
bad requests get 4xx JSON errors, the server keeps answering, and the served ranking equals the in-process one.

One server for the module, serving only ``rank`` with ``random`` as the only candidate, tiny images: the cost is
TorchServe's start-up (about 10-20 s) plus a few sub-second requests.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from serve_process import port_arguments, start_serve

pytestmark = pytest.mark.slow

if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("TorchServe needs Java 17", allow_module_level=True)

httpx = pytest.importorskip("httpx")
KEY = "rank-e2e-key-0123456789abcdef"
MAX_IMAGES = 5


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _pairs(n: int, size: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        labels = np.zeros((size, size), np.uint16)
        for k in range(1, 4):
            y, x = rng.integers(2, size - 10, 2)
            labels[y : y + 7, x : x + 7] = k
        image = rng.normal(40, 10, (size, size, 3))
        image[labels > 0] += 150
        out.append((np.clip(image, 0, 255).astype(np.uint8), labels))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank-serve")
    (root / "defaults").mkdir()
    (root / "keys.txt").write_text(KEY + "\n")
    env = dict(
        os.environ,
        SSLZOO_TORCH_THREADS="1",
        HF_HUB_OFFLINE="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        SSLZOO_DEFAULTS_DIR=str(root / "defaults"),
        SSLZOO_RANK_MAX_IMAGES=str(MAX_IMAGES),
    )
    env.pop("SSLZOO_ZOO_DIR", None)
    env.pop("SSLZOO_API_KEYS_FILE", None)

    def command(ports: list[int]) -> list[str]:
        return [
            sys.executable, "-m", "sslzoo", "serve", "--models", "rank", *port_arguments(ports),
            "--workdir", str(root / "work"), "--api-keys", str(root / "keys.txt"),
        ]  # fmt: skip

    process, ports = start_serve(command, root / "work", root / "serve.out", root, env)
    yield f"http://127.0.0.1:{ports[0]}"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def _post(url: str, data: dict, files: list) -> httpx.Response:
    return httpx.post(
        f"{url}/predictions/rank", headers={"Authorization": f"Bearer {KEY}"}, data=data, files=files, timeout=120
    )


def _files(pairs, masks: bool = True) -> list:
    files = []
    for i, (image, mask) in enumerate(pairs):
        files.append((f"image_{i}", (f"{i}.png", _png(image), "image/png")))
        if masks:
            files.append((f"mask_{i}", (f"{i}.png", _png(mask), "image/png")))
    return files


def test_rank_over_rest_equals_in_process_and_bad_inputs_are_4xx_while_the_server_stays_up(server, monkeypatch):
    from sslzoo.downstream.rank import RankSettings, rank_encoders

    pairs = _pairs(4)
    good = {"task": "instance", "budget": "quick", "encoders": "random"}
    first = _post(server, good, _files(pairs))
    assert first.status_code == 200, first.text
    body = first.json()
    local = rank_encoders(
        [p[0] for p in pairs], [p[1] for p in pairs], "instance", ["random"], RankSettings.from_budget("quick")
    )
    assert [r["encoder"] for r in body["ranking"]] == ["random"]
    assert body["ranking"][0]["split_scores"] == pytest.approx(local.ranking[0].split_scores, abs=1e-4)

    mismatched = _files(pairs)
    mismatched[1] = ("mask_0", ("0.png", _png(np.zeros((8, 8), np.uint16)), "image/png"))
    bad = [
        (good, _files(pairs, masks=False), 400, "no masks"),
        (good, mismatched, 400, "differs from mask_0"),
        ({**good, "encoders": "detco-resnet18-nowhere"}, _files(pairs), 404, "unknown encoder"),
        (good, _files(_pairs(MAX_IMAGES + 1)), 413, "SSLZOO_RANK_MAX_IMAGES"),
        ({"budget": "quick"}, _files(pairs), 400, "field 'task' is missing"),
    ]
    for data, files, code, message in bad:
        reply = _post(server, data, files)
        assert reply.status_code == code, reply.text
        error = reply.json()
        assert error["code"] == code and message in error["message"]
    again = _post(server, good, _files(pairs))
    assert again.status_code == 200
    assert [r["split_scores"] for r in again.json()["ranking"]] == [r["split_scores"] for r in body["ranking"]]
    assert httpx.get(f"{server}/ping", timeout=10).status_code == 200
