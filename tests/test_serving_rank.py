"""``POST /predictions/rank`` below TorchServe: the ranking service, the adapter (status per request, the worker keeps
serving after bad inputs) and the model-store entry. Tiny images and two resnet18 candidates keep it cheap."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.errors import ConfigError, DataError, NotFoundError, TooLargeError
from sslzoo.serving.adapter import ServingAdapter, error_body

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ZOO_ENTRY = "simclr-resnet18-dsb2018"
FAST = {"budget": b"quick"}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _pairs(n: int, size: int = 48, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Bright squares on a noisy background and their 16-bit instance label maps."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        labels = np.zeros((size, size), np.uint16)
        for k in range(1, 4):
            y, x = rng.integers(2, size - 12, 2)
            labels[y : y + 8, x : x + 8] = k
        image = rng.normal(40, 10, (size, size, 3))
        image[labels > 0] += 150
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(labels)
    return images, masks


@pytest.fixture(autouse=True)
def _zoo(tmp_path_factory, monkeypatch):
    """No packaged defaults; one zoo-folder encoder (weights zeroed: a clearly worse candidate) and random."""
    import torch

    from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder

    root = tmp_path_factory.getbasetemp() / "rank-zoo"
    if not (root / "zoo" / ZOO_ENTRY / "model.safetensors").is_file():
        encoder = create_encoder("resnet18")
        with torch.no_grad():
            for p in encoder.parameters():
                p.zero_()
        save_encoder(
            encoder, root / "zoo" / ZOO_ENTRY, EncoderConfig(backbone="resnet18", method="simclr", dataset="dsb2018")
        )
        (root / "defaults").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SSLZOO_ZOO_DIR", str(root / "zoo"))
    monkeypatch.setenv("SSLZOO_DEFAULTS_DIR", str(root / "defaults"))


@pytest.fixture(scope="module")
def labelled():
    images, masks = _pairs(6)
    fields = {"task": b"instance", **FAST}
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        fields[f"image_{i}"] = _png(image)
        fields[f"mask_{i}"] = _png(mask)
    return images, masks, fields


def test_fields_and_archive_rank_like_the_python_api(labelled):
    from sslzoo.downstream.rank import RankSettings, rank_encoders
    from sslzoo.serving.ranking import RankService

    images, masks, fields = labelled
    served = RankService().rank_fields(fields)
    local = rank_encoders(
        images, masks, "instance", None, RankSettings.from_budget("quick"), ids=[str(i) for i in range(6)]
    )
    assert [r.encoder for r in served.ranking] == [r.encoder for r in local.ranking] == ["random", ZOO_ENTRY]
    assert [r.split_scores for r in served.ranking] == [r.split_scores for r in local.ranking]
    assert served.ranking[1].source == "zoo-folder" and served.n_images == 6

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(6):
            archive.writestr(f"set/images/{i}.png", fields[f"image_{i}"])
            archive.writestr(f"set/masks/{i}.png", fields[f"mask_{i}"])
    zipped = RankService().rank_fields(
        {"task": b"instance", **FAST, "archive": buffer.getvalue(), "encoders": b"random"}
    )
    assert [r.encoder for r in zipped.ranking] == ["random"]
    assert zipped.ranking[0].split_scores == served.ranking[0].split_scores
    tuned = RankService().rank_fields({**fields, "probe": b"finetune", "encoders": b"random"})
    assert tuned.probe == "finetune" and tuned.proxy == "finetune_aji_plus" and tuned.n_splits == 1


def test_bad_requests_are_4xx_with_what_to_fix(labelled, monkeypatch):
    from sslzoo.serving.ranking import RankService

    _, _, fields = labelled
    images_only = {k: v for k, v in fields.items() if not k.startswith("mask_")}
    cases = [
        (images_only, DataError, "no masks"),
        ({**fields, "mask_0": _png(np.zeros((10, 12), np.uint16))}, DataError, "differs from mask_0"),
        (
            {**fields, "encoders": b"random,moco-resnet18-nowhere"},
            NotFoundError,
            "unknown encoder 'moco-resnet18-nowhere'",
        ),
        ({**fields, "encoders": b"/etc"}, NotFoundError, "unknown encoder '/etc'"),
        ({k: v for k, v in fields.items() if k != "task"}, ConfigError, "field 'task' is missing"),
        ({**fields, "task": b"panoptic"}, ConfigError, "unknown task"),
        ({**fields, "budget": b"huge"}, ConfigError, "unknown budget"),
        ({**fields, "probe": b"linear"}, ConfigError, "unknown probe 'linear'"),
        ({**fields, "image_9": fields["image_0"]}, DataError, "no mask for image.*9"),
        ({**fields, "archive": b"not a zip"}, DataError, "not a zip"),
    ]
    for request, error, message in cases:
        with pytest.raises(error, match=message) as info:
            RankService().rank_fields(request)
        assert 400 <= error_body(info.value)[0] < 500
    monkeypatch.setenv("SSLZOO_RANK_MAX_IMAGES", "5")
    with pytest.raises(TooLargeError, match="6 labelled images.*SSLZOO_RANK_MAX_IMAGES") as info:
        RankService().rank_fields(fields)
    assert error_body(info.value)[0] == 413
    monkeypatch.setenv("SSLZOO_RANK_MAX_IMAGES", "40")
    monkeypatch.setenv("SSLZOO_RANK_MAX_PIXELS", "10000")
    with pytest.raises(TooLargeError, match="13,824 image pixels.*SSLZOO_RANK_MAX_PIXELS"):
        RankService().rank_fields(fields)


class FakeContext:
    """What the adapter uses of TorchServe's ``Context``."""

    def __init__(self, model_dir: Path, n: int) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.headers = [{}] * n
        self.status: dict[int, int] = {}
        self.content_type: dict[int, str] = {}
        self.metrics = None

    def get_all_request_header(self, idx):
        return self.headers[idx]

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value


def test_model_store_entry_and_adapter_keep_serving_after_bad_requests(labelled, tmp_path):
    from sslzoo.serving.modelstore import build_model_store, default_models, handlers_dir

    assert default_models()["rank"] == "rank"
    specs = build_model_store({"rank": "rank"}, tmp_path / "store")
    assert specs["rank"].kind == "rank" and specs["rank"].folder is None
    entry = tmp_path / "store" / "rank"
    manifest = json.loads((entry / "MAR-INF" / "MANIFEST.json").read_text())
    assert manifest["model"]["handler"] == "ranking.py" and (entry / "ranking.py").is_file()
    handler = (handlers_dir() / "ranking.py").read_text()
    assert 'ServingAdapter("rank")' in handler and len(handler.splitlines()) < 20  # thin

    _, _, fields = labelled
    rows = [
        {"body": b"\x89PNG..."},  # a raw body: multipart is needed
        {k: v for k, v in fields.items() if not k.startswith("mask_")},
        {**fields, "encoders": b"nope-resnet18-isic2017"},
        {**fields, "encoders": b"random"},
    ]
    context = FakeContext(entry, len(rows))
    adapter = ServingAdapter("rank")
    adapter(None, context)
    answers = adapter(rows, context)
    assert context.status == {0: 400, 1: 400, 2: 404, 3: 200}
    assert all(context.content_type[i] == "application/json" for i in range(4))
    assert "multipart/form-data" in json.loads(answers[0])["message"]
    body = json.loads(answers[3])
    assert {"task", "n_images", "ranking", "recommendation", "seconds"} <= set(body)
    assert [(r["encoder"], r["rank"]) for r in body["ranking"]] == [("random", 1)]
    assert set(body["ranking"][0]) >= {"encoder", "score", "std", "rank"}
