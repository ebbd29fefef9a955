"""End to end: ``sslzoo serve`` starts the REST front and real TorchServe (Java 17) behind it on free local ports;
every endpoint is driven with httpx with a deployer-supplied key; bad inputs get 4xx JSON errors while the
server keeps serving; served outputs equal in-process ones; SIGTERM (on a server of its own, restarted with the
same key file) leaves no process behind."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_process import port_arguments, start_serve

pytestmark = pytest.mark.slow

if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("TorchServe needs Java 17", allow_module_level=True)

httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")


REQUEST_LIMIT = 5_000_000
KEY_A = "e2e-key-a-0123456789abcdef"
KEY_B = "e2e-key-b-fedcba9876543210"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _make_models(root: Path) -> dict[str, Path]:
    """Tiny random-weight models: resnet18 U-Nets with a slim decoder (fast on a CPU) and a resnet18 encoder."""
    import segmentation_models_pytorch as smp
    import torch

    from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder
    from sslzoo.models.segmenter import Segmenter, SegmenterConfig

    torch.manual_seed(0)
    folders = {}
    for task in ("instance", "semantic"):
        unet = smp.Unet("resnet18", encoder_weights=None, decoder_channels=(32, 16, 8, 8, 4), classes=1)
        # 512-pixel tiles with overlap: a 1000x1000 image is 2x2 stitched tiles
        config = SegmenterConfig(task=task, backbone="resnet18", tile_size=512, tile_overlap=24)
        folders[task] = Segmenter(unet, config).save_pretrained(root / task)
    config = EncoderConfig(backbone="resnet18", method="random", dataset="none")
    folders["encoder"] = save_encoder(create_encoder("resnet18"), root / "encoder", config)
    return folders


class Server:
    def __init__(self, process: subprocess.Popen, root: Path, cwd: Path, ports: list[int], models: dict) -> None:
        self.process, self.root, self.workdir, self.cwd, self.models = process, root, root / "work", cwd, models
        self.inference, self.management, self.metrics, self.engine = ports[:4]
        self.url = f"http://127.0.0.1:{self.inference}"

    def post(self, model: str, key: str | None = KEY_A, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.post(f"{self.url}/predictions/{model}", headers=headers, timeout=120, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(root: Path, models: dict, served: list[str], key_file: Path) -> Server:
    """``sslzoo serve`` in a subprocess on free ports; returns once it printed READY."""
    workdir, cwd = root / "work", root / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        SSLZOO_TORCH_THREADS="1",
        HF_HUB_OFFLINE="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        SSLZOO_MAX_BODY_BYTES=str(REQUEST_LIMIT),
    )
    env.pop("SSLZOO_API_KEYS_FILE", None)

    def command(ports: list[int]) -> list[str]:
        return [
            sys.executable, "-m", "sslzoo", "serve", "--models", *served, *port_arguments(ports),
            "--workdir", str(workdir), "--api-keys", str(key_file),
        ]  # fmt: skip

    process, ports = start_serve(command, workdir, root / "serve.out", cwd, env)
    return Server(process, root, cwd, ports, models)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    path.write_text(f"# e2e: two keys, as during a rotation\n{KEY_A}\n{KEY_B}\n")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, models, key_file):
    served = [f"nuclei={models['instance']}", f"lesion={models['semantic']}", f"embed={models['encoder']}", "evaluate"]
    running = start_server(tmp_path_factory.mktemp("serve"), models, served, key_file)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def big_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((1000, 1000, 3), 220, np.uint8)
    for y, x in rng.integers(20, 980, (150, 2)):
        image[y - 6 : y + 6, x - 6 : x + 6] = (90, 40, 140)
    return image


def test_console_is_quiet_and_says_what_an_operator_needs(server, key_file):
    text = (server.root / "serve.out").read_text()
    assert text.count("sslzoo: READY") == 1 and str(key_file) in text and "/ping" in text and "curl -H" in text
    assert "torchserve.log" in text and "DEBUG" not in text and "INFO" not in text  # engine logs go to the file
    assert len(text.splitlines()) <= 12, text
    assert (server.workdir / "logs" / "torchserve.log").stat().st_size > 0


def test_auth_with_a_valid_image_401_without_or_with_a_wrong_key_200_with_either_key(server):
    assert httpx.get(f"{server.url}/ping", timeout=10).status_code == 200  # no key needed
    good = _png(np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    png = {"Content-Type": "image/png"}
    for key in (None, "wrong-key-0123456789abcdef", KEY_A[:-1]):
        response = server.post("nuclei", key=key, content=good, headers=png)
        assert response.status_code == 401, (key, response.text)
        assert response.json()["type"] == "Unauthorized" and response.json()["code"] == 401
    for key in (KEY_A, KEY_B):
        assert server.post("nuclei", key=key, content=good, headers=png).status_code == 200
    # TorchServe itself is on loopback only, and its /api-description is not exposed by the front
    assert httpx.get(f"{server.url}/api-description", timeout=10).status_code == 401
    config = (server.workdir / "config.properties").read_text()
    assert f"inference_address=http://127.0.0.1:{server.engine}" in config


def test_ping_turns_503_when_a_worker_dies_and_200_once_it_is_back(server):
    workers = [
        c for c in psutil.Process(server.process.pid).children(recursive=True)
        if "model_service_worker" in " ".join(c.cmdline())
    ]  # fmt: skip
    assert len(workers) == 4
    workers[0].kill()
    statuses = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        statuses.append(httpx.get(f"{server.url}/ping", timeout=10).status_code)
        if 503 in statuses and statuses[-1] == 200:
            break
        time.sleep(0.2)
    assert 503 in statuses and statuses[-1] == 200, statuses[-20:]


def test_served_segmentations_equal_in_process_ones(server):
    import torch

    from sslzoo.serving.services import SegmentationService

    rng = np.random.default_rng(6)
    image = np.full((600, 700, 3), 215, np.uint8)
    for y, x in rng.integers(15, 585, (60, 2)):
        image[y - 6 : y + 6, min(x, 680) - 6 : min(x, 680) + 6] = (80, 30, 150)
    body = _png(image)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (SSLZOO_TORCH_THREADS=1): identical float reductions
    try:
        for name, task in (("nuclei", "instance"), ("lesion", "semantic")):
            served = server.post(name, content=body, headers={"Content-Type": "image/png"})
            assert served.status_code == 200, served.text
            local = SegmentationService.load(name, server.models[task], "cpu").segment_bytes(body, "png")
            assert np.array_equal(
                np.asarray(Image.open(io.BytesIO(served.content))), np.asarray(Image.open(io.BytesIO(local.body)))
            ), name
    finally:
        torch.set_num_threads(threads)


def test_segmentation_png_json_geojson_of_a_1000px_image(server, big_image):
    body = _png(big_image)
    png = server.post("nuclei", content=body, headers={"Content-Type": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"].startswith("image/png")
    labels = np.asarray(Image.open(io.BytesIO(png.content)))
    assert labels.shape == (1000, 1000) and labels.dtype == np.uint16
    summary = server.post(
        "nuclei", content=body, headers={"Content-Type": "application/octet-stream", "Accept": "application/json"}
    ).json()
    assert (summary["model"], summary["task"]) == ("nuclei", "instance")
    assert (summary["height"], summary["width"]) == (1000, 1000)
    assert summary["count"] == len(summary["instances"]) == len(np.unique(labels[labels > 0]))
    assert summary["foreground_fraction"] == pytest.approx((labels > 0).mean())
    geo = server.post("nuclei", content=body, headers={"Content-Type": "image/png", "Accept": "application/geo+json"})
    assert geo.headers["content-type"].startswith("application/geo+json")
    collection = geo.json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == summary["count"]
    if collection["features"]:
        coordinates = np.concatenate([f["geometry"]["coordinates"][0] for f in collection["features"]])
        assert coordinates.min() >= 0 and coordinates.max() <= 1000


def test_multipart_input_with_format_field(server):
    image = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    files = {"image": ("a.png", _png(image), "image/png")}
    response = server.post("lesion", files=files, data={"format": "png"})
    assert response.status_code == 200
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == (200, 300) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    summary = server.post("lesion", files=files, data={"format": "json"}).json()
    assert summary["task"] == "semantic" and summary["height"] == 200


def test_embeddings_match_in_process(server):
    from sslzoo.serving.services import EmbeddingService

    image = np.random.default_rng(2).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    reply = server.post("embed", content=_png(image), headers={"Content-Type": "image/png"}).json()
    assert reply["model"] == "embed" and reply["dim"] == 512 == len(reply["embedding"])
    expected = EmbeddingService.load("embed", server.models["encoder"], "cpu").embed(image)
    np.testing.assert_allclose(reply["embedding"], expected, rtol=1e-4, atol=1e-5)


def test_evaluation_equals_metrics_evaluate(server, tmp_path):
    from sslzoo.metrics.evaluate import evaluate_folders

    rng = np.random.default_rng(3)
    preds, masks = tmp_path / "predictions", tmp_path / "masks"
    preds.mkdir()
    masks.mkdir()
    files = {}
    for k in range(3):
        gt = np.zeros((64, 80), np.uint16)
        pred = np.zeros((64, 80), np.uint16)
        for i, (y, x) in enumerate(rng.integers(8, 56, (5, 2)), start=1):
            gt[y - 5 : y + 5, x - 5 : x + 5] = i
            pred[y - 4 : y + 6, x - 5 : x + 4] = i + 10
        (preds / f"{k}.png").write_bytes(_png(pred))
        (masks / f"{k}.png").write_bytes(_png(gt))
        files[f"prediction_{k}"] = (f"{k}.png", (preds / f"{k}.png").read_bytes(), "image/png")
        files[f"mask_{k}"] = (f"{k}.png", (masks / f"{k}.png").read_bytes(), "image/png")
    expected = evaluate_folders(preds, masks, "instance").model_dump()
    by_fields = server.post("evaluate", files=files, data={"task": "instance"})
    assert by_fields.status_code == 200, by_fields.text
    assert by_fields.json() == expected
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for folder in (preds, masks):
            for path in folder.iterdir():
                z.write(path, f"{folder.name}/{path.name}")
    by_zip = server.post(
        "evaluate", files={"archive": ("set.zip", archive.getvalue(), "application/zip")}, data={"task": "instance"}
    )
    assert by_zip.json() == expected
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    with_model = server.post(
        "evaluate",
        files={"image_1": ("i.png", _png(image), "image/png"), "mask_1": ("m.png", _png(np.ones((64, 80), np.uint8)))},
        data={"model": "lesion"},
    )
    assert with_model.status_code == 200 and with_model.json()["model"] == "lesion"
    assert with_model.json()["task"] == "semantic"


def _png_bomb(side: int = 50_000) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _thin_png(width: int) -> bytes:
    """A 47-byte-ish PNG announcing width x 1 pixels: once a 35 GiB tile allocation."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, 1, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_bad_inputs_get_4xx_json_and_the_server_keeps_serving(server):
    good = _png(np.random.default_rng(4).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    octet = {"Content-Type": "application/octet-stream"}
    cases = {
        "garbage": (server.post("nuclei", content=b"\x00garbage" * 50, headers=octet), 400),
        "empty": (server.post("nuclei", content=b"", headers=octet), 400),
        "truncated": (server.post("nuclei", content=good[: len(good) // 2], headers=octet), 400),
        "bomb": (server.post("nuclei", content=_png_bomb(), headers=octet), 413),
        "accept": (server.post("nuclei", content=good, headers={**octet, "Accept": "text/html"}), 400),
        "no image field": (server.post("nuclei", files={"picture": ("a.png", good)}), 400),
        "size mismatch": (
            server.post(
                "evaluate",
                files={
                    "prediction_1": ("p.png", _png(np.zeros((10, 10), np.uint8))),
                    "mask_1": ("m.png", _png(np.zeros((12, 10), np.uint8))),
                },
                data={"task": "semantic"},
            ),
            400,
        ),
        "unknown evaluate model": (
            server.post("evaluate", files={"image_1": ("i.png", good), "mask_1": ("m.png", good)}, data={"model": "x"}),
            404,
        ),
        "unknown model": (server.post("no-such-model", content=good, headers={"Content-Type": "image/png"}), 404),
        "bad embed input": (server.post("embed", content=b"GIF89a", headers=octet), 400),
        "thin strip": (server.post("nuclei", content=_thin_png(49_000_000), headers=octet), 413),
        "json body": (
            server.post("nuclei", content=b'{"image": "..."}', headers={"Content-Type": "application/json"}),
            400,
        ),
        "20,000 fields": (server.post("nuclei", files={f"f{i}": ("a", b"x") for i in range(20_000)}), 400),
    }
    assert "the body is JSON" in cases["json body"][0].json()["message"]
    assert "aspect ratio" in cases["thin strip"][0].json()["message"]
    assert len(cases["20,000 fields"][0].content) < 3000
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text)
        body = response.json()
        assert set(body) == {"code", "type", "message"} and body["code"] == status, (name, body)
        assert body["message"], name
    assert server.post("nuclei", content=good, headers=octet).status_code == 200


def test_body_over_the_request_limit_is_413(server):
    oversized = b"\x89PNG\r\n\x1a\n" + os.urandom(REQUEST_LIMIT + 1000)
    response = server.post("nuclei", content=oversized, headers={"Content-Type": "image/png"})
    assert response.status_code == 413, response.text
    assert f"{REQUEST_LIMIT:,} bytes" in response.json()["message"]
    keyless = server.post("nuclei", key=None, content=oversized, headers={"Content-Type": "image/png"})
    assert keyless.status_code == 401  # the key is checked first, from the headers
    small = _png(np.zeros((8, 8), np.uint8))
    assert server.post("nuclei", content=small, headers={"Content-Type": "image/png"}).status_code == 200


def test_form_urlencoded_binary_reaches_the_model(server):
    """curl's --data-binary default content type, which TorchServe answers with a 500, is fixed by the front."""
    good = _png(np.zeros((8, 8), np.uint8))
    response = server.post("nuclei", content=good, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert server.post("nuclei", content=good, headers={"Content-Type": "image/png"}).status_code == 200


def test_prometheus_metrics_include_custom_handler_metrics(server):
    text = httpx.get(f"{server.url}/metrics", timeout=10).text  # through the front, no key
    assert 'SslzooRequests{ModelName="nuclei",Status="200"' in text
    assert "SslzooLatency" in text and "SslzooObjectsPerImage" in text
    assert 'ModelName="nuclei",Status="400"' in text


def test_management_api_is_local_and_lists_models(server):
    listed = httpx.get(f"http://127.0.0.1:{server.management}/models", timeout=10).json()
    assert {m["modelName"] for m in listed["models"]} == {"nuclei", "lesion", "embed", "evaluate"}
    config = (server.workdir / "config.properties").read_text()
    assert f"management_address=http://127.0.0.1:{server.management}" in config


def test_restart_with_the_same_key_file_then_sigterm_stops_everything(tmp_path, models, key_file):
    """A server of its own (the shared one keeps serving): the same key works after a restart; SIGTERM cleans up."""
    server = start_server(tmp_path, models, [f"nuclei={models['instance']}"], key_file)
    try:
        good = _png(np.zeros((16, 16, 3), np.uint8))
        assert server.post("nuclei", content=good, headers={"Content-Type": "image/png"}).status_code == 200
        assert server.post("nuclei", key=None, content=good, headers={"Content-Type": "image/png"}).status_code == 401
        children = psutil.Process(server.process.pid).children(recursive=True)
        assert any("java" in " ".join(c.cmdline()) for c in children)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        time.sleep(0.5)
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], [c.cmdline()[:3] for c in alive]
        assert list(server.cwd.iterdir()) == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/ping", timeout=5)
    finally:
        server.stop()
