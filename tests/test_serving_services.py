"""Services, TorchServe adapter (with a stand-in context), model store, config rendering and ``sslzoo predict``."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslzoo.errors import ConfigError, DataError, NotFoundError
from sslzoo.metrics.evaluate import evaluate_pairs
from sslzoo.serving.adapter import ServingAdapter, error_body
from sslzoo.serving.services import EmbeddingService, EvaluationService, SegmentationService, model_kind


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    import segmentation_models_pytorch as smp

    from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder
    from sslzoo.models.segmenter import Segmenter, SegmenterConfig

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    dirs = {}
    for task in ("instance", "semantic"):
        unet = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1)
        config = SegmenterConfig(task=task, backbone="resnet18", tile_size=64, tile_overlap=16)
        dirs[task] = Segmenter(unet, config).save_pretrained(root / task)
    dirs["encoder"] = save_encoder(
        create_encoder("resnet18"), root / "encoder", EncoderConfig(backbone="resnet18", method="random", dataset="x")
    )
    return dirs


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    mask = np.zeros((70, 90), np.uint8)
    mask[10:30, 10:40] = 1
    mask[45:60, 50:80] = 2
    return {"image": image, "mask": mask}


def test_model_kind(model_dirs, tmp_path):
    assert model_kind(model_dirs["instance"]) == "segmenter"
    assert model_kind(model_dirs["encoder"]) == "encoder"
    assert model_kind("evaluate") == "evaluate"
    assert model_kind("nuclei") == "segmenter" and model_kind("embed") == "encoder"
    with pytest.raises(DataError, match="not a model folder"):
        model_kind(tmp_path)
    with pytest.raises(NotFoundError):
        model_kind(str(tmp_path / "missing") + "/")


def test_model_kind_of_a_zoo_name_is_read_from_its_files(model_dirs, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("SSLZOO_DEFAULTS_DIR", str(tmp_path / "zoo"))
    shutil.copytree(model_dirs["semantic"], tmp_path / "zoo" / "simclr-resnet18-isic2017-semantic")
    assert model_kind("simclr-resnet18-isic2017-semantic") == "segmenter"
    shutil.copytree(model_dirs["encoder"], tmp_path / "zoo" / "simclr-resnet18-isic2017-instance")  # mislabelled
    with pytest.raises(DataError, match="names a segmenter, but its files .* hold an encoder"):
        model_kind("simclr-resnet18-isic2017-instance")


def test_segmentation_service_keeps_input_size(model_dirs, samples):
    service = SegmentationService.load("nuclei", model_dirs["instance"], "cpu")
    out = service.segment_bytes(_png(samples["image"]), "png")
    labels = np.asarray(Image.open(io.BytesIO(out.body)))
    assert out.content_type == "image/png" and labels.shape == (70, 90)
    assert out.count == len(np.unique(labels[labels > 0]))
    summary = json.loads(service.segment_bytes(_png(samples["image"]), "json").body)
    assert summary["task"] == "instance" and (summary["height"], summary["width"]) == (70, 90)
    assert summary["count"] == out.count


def test_embedding_service_pools_the_last_stage(model_dirs, samples):
    service = EmbeddingService.load("embed", model_dirs["encoder"], "cpu")
    out = json.loads(service.embed_bytes(_png(samples["image"])).body)
    assert out["model"] == "embed" and out["dim"] == 512 == len(out["embedding"])
    with torch.no_grad():
        expected = service.encoder(service.transform(samples["image"])[None])[-1].mean(dim=(2, 3))[0]
    np.testing.assert_allclose(out["embedding"], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_evaluation_of_predictions_equals_evaluate_pairs(samples):
    gt = samples["mask"]
    pred = np.zeros_like(gt)
    pred[12:30, 10:38] = 7
    pred[0:5, 0:5] = 9
    fields = {
        "task": b"instance",
        "prediction_2": _png(pred),
        "mask_2": _png(gt),
        "prediction_10": _png(gt),
        "mask_10": _png(gt),
    }
    result = EvaluationService().evaluate_fields(fields)
    expected = evaluate_pairs([("2", pred, gt), ("10", gt, gt)], "instance")
    assert result.model_dump() == expected.model_dump()
    assert [row["id"] for row in result.per_image] == ["2", "10"]


def test_evaluation_with_a_model_and_with_an_archive(model_dirs, samples):
    service = SegmentationService.load("lesion", model_dirs["semantic"], "cpu")
    evaluation = EvaluationService({"lesion": lambda: service})
    gt = (samples["mask"] > 0).astype(np.uint8) * 255
    result = evaluation.evaluate_fields({"model": b"lesion", "image_a": _png(samples["image"]), "mask_a": _png(gt)})
    expected = evaluate_pairs([("a", service.segment(samples["image"]), gt > 0)], "semantic", model="lesion")
    assert result.task == "semantic" and result.mean == expected.mean
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("set/masks/a.png", _png(gt))
        archive.writestr("set/images/a.png", _png(samples["image"]))
        archive.writestr("set/predictions/a.png", _png(gt))
    by_model = evaluation.evaluate_fields({"archive": buffer.getvalue(), "model": b"lesion"})
    assert by_model.mean == expected.mean
    perfect = evaluation.evaluate_fields({"archive": buffer.getvalue(), "task": b"semantic"})
    assert perfect.mean == {"dice": 1.0} and perfect.n_images == 1


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"prediction_1": b"x", "mask_1": b"y"}, ConfigError, "field 'task' is missing"),
        ({"task": b"semantic"}, DataError, "nothing to evaluate"),
        ({"task": b"semantic", "prediction_1": "P", "mask_2": "M"}, DataError, "no mask for prediction"),
        ({"task": b"volume", "prediction_1": "P", "mask_1": "M"}, ConfigError, "unknown task"),
        ({"model": b"nope", "image_1": "P", "mask_1": "M"}, NotFoundError, "unknown model 'nope'"),
        ({"task": b"semantic", "image_1": "P", "mask_1": "M"}, ConfigError, "need a 'model' field"),
        ({"archive": b"not a zip"}, DataError, "not a zip"),
    ],
)
def test_evaluation_errors(fields, error, message, samples):
    png = _png(samples["mask"])
    fields = {k: (png if v in ("P", "M") else v) for k, v in fields.items()}
    with pytest.raises(error, match=message):
        EvaluationService().evaluate_fields(fields)


def test_evaluation_size_mismatch_is_400(samples):
    small = _png(np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="differs from mask_1") as info:
        EvaluationService().evaluate_fields(
            {"task": b"semantic", "prediction_1": small, "mask_1": _png(samples["mask"])}
        )
    assert error_body(info.value)[0] == 400


class FakeContext:
    """Just what the adapter uses of TorchServe's ``Context``."""

    def __init__(self, model_dir: Path, headers: list[dict[str, str]] | None = None) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.headers = headers or [{}]
        self.status: dict[int, int] = {}
        self.content_type: dict[int, str] = {}
        self.metrics = None

    def get_all_request_header(self, idx):
        return self.headers[idx]

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value


@pytest.fixture(scope="module")
def store(model_dirs, tmp_path_factory):
    from sslzoo.serving.modelstore import build_model_store

    root = tmp_path_factory.mktemp("store")
    models = {"nuclei": str(model_dirs["instance"]), "embed": str(model_dirs["encoder"]), "evaluate": "evaluate"}
    specs = build_model_store(models, root, max_pixels=1_000_000)
    return root, specs


def test_model_store_layout(store):
    root, specs = store
    assert {name: spec.kind for name, spec in specs.items()} == {
        "nuclei": "segmenter",
        "embed": "encoder",
        "evaluate": "evaluate",
    }
    manifest = json.loads((root / "nuclei" / "MAR-INF" / "MANIFEST.json").read_text())
    assert manifest["model"]["modelName"] == "nuclei" and manifest["model"]["handler"] == "segmentation.py"
    assert (root / "nuclei" / "segmentation.py").is_file() and (root / "nuclei" / "model" / "segmenter.json").is_file()
    evaluate = json.loads((root / "evaluate" / "sslzoo_model.json").read_text())
    assert evaluate["segmenters"] == {"nuclei": str((root / "nuclei" / "model").resolve())}


def test_model_store_refuses_broken_models(tmp_path, model_dirs):
    from sslzoo.serving.modelstore import build_model_store, parse_model_args

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "segmenter.json").write_text("{}")
    with pytest.raises(DataError, match="model 'bad' .*broken.* cannot be loaded"):
        build_model_store({"bad": str(broken)}, tmp_path / "store")
    assert parse_model_args(["a=/x", "evaluate"]) == {"a": "/x", "evaluate": "evaluate"}
    assert parse_model_args([str(model_dirs["instance"])]) == {"instance": str(model_dirs["instance"])}
    with pytest.raises(ConfigError, match="bad model name"):
        parse_model_args(["no spaces=/x"])


def test_adapter_answers_every_request_with_status_and_type(store, samples):
    root, _ = store
    adapter = ServingAdapter("segmenter")
    context = FakeContext(root / "nuclei", [{"Accept": "application/json"}, {}, {}, {"accept": "text/html"}])
    assert adapter(None, context) is None  # initialise, as TorchServe does
    image = _png(samples["image"])
    rows = [{"body": image}, {"image": image, "format": b"geojson"}, {"body": b"garbage"}, {"body": image}]
    answers = adapter(rows, context)
    assert context.status == {0: 200, 1: 200, 2: 400, 3: 400}
    assert json.loads(answers[0])["height"] == 70
    assert context.content_type[1] == "application/geo+json"
    error = json.loads(answers[2])
    assert error["code"] == 400 and error["type"] == "DataError" and "PNG, JPEG or TIFF" in error["message"]
    assert context.content_type[2] == "application/json"


def test_adapter_turns_unexpected_errors_into_500_json(store, samples, monkeypatch):
    root, _ = store
    adapter = ServingAdapter("encoder")
    context = FakeContext(root / "embed")
    adapter(None, context)
    monkeypatch.setattr(adapter.service, "embed", lambda image: 1 / 0)
    answer = json.loads(adapter([{"body": _png(samples["image"])}], context)[0])
    assert context.status[0] == 500 and answer["type"] == "InternalError" and "ZeroDivisionError" in answer["message"]


def test_adapter_pixel_limit_and_evaluate_entry(store, samples):
    root, _ = store
    adapter = ServingAdapter("evaluate")
    context = FakeContext(root / "evaluate", [{}, {}])
    adapter(None, context)
    big = _png(np.zeros((1001, 1000), np.uint8))
    rows = [
        {"task": b"semantic", "prediction_1": big, "mask_1": big},
        {"model": b"nuclei", "image_1": _png(samples["image"]), "mask_1": _png(samples["mask"])},
    ]
    answers = adapter(rows, context)
    assert context.status[0] == 413 and json.loads(answers[0])["type"] == "PayloadTooLarge"
    assert context.status[1] == 200 and json.loads(answers[1])["model"] == "nuclei"


def test_config_properties_template_and_rendering(tmp_path):
    from sslzoo.serving.server import DEFAULT_PROPERTIES, ServeConfig, parse_properties, render_properties

    docker = Path(__file__).resolve().parents[1] / "docker" / "config.properties"
    assert parse_properties(docker.read_text()) == DEFAULT_PROPERTIES
    text = render_properties(ServeConfig(inference_port=9180, management_port=9181), tmp_path, ["a", "evaluate"])
    props = parse_properties(text)
    assert props["inference_address"] == "http://127.0.0.1:8083"  # the engine: loopback, behind the front
    assert props["management_address"] == "http://127.0.0.1:9181"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["load_models"] == "a,evaluate" and props["metrics_mode"] == "prometheus"
    assert props["allowed_urls"] == f"file://{tmp_path.resolve()}/.*"
    assert props["disable_token_authorization"] == "true"  # the front authenticates; TorchServe is loopback-only
    assert props["metrics_address"] == "http://127.0.0.1:8082" and "token_expiration_min" not in props
    public = render_properties(ServeConfig(host="0.0.0.0"), tmp_path, ["a"])
    assert "0.0.0.0" not in public  # --host is the front's; no TorchServe API listens beyond loopback


def test_cli_predict_writes_one_file_per_image(model_dirs, samples, tmp_path, capsys):
    from sslzoo.cli import main

    paths = []
    for name in ("one", "two"):
        path = tmp_path / f"{name}.png"
        path.write_bytes(_png(samples["image"]))
        paths.append(str(path))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_dirs["instance"]), *paths, "--out", str(out), "--format", "json"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["one.json", "two.json"]
    assert json.loads((out / "one.json").read_text())["width"] == 90
    assert main(["predict", "--model", str(model_dirs["encoder"]), paths[0], "--out", str(out / "e")]) == 0
    assert json.loads((out / "e" / "one.json").read_text())["dim"] == 512
    assert main(["predict", "--model", str(model_dirs["instance"]), str(tmp_path / "nope.png"), "--out", str(out)]) == 2
    assert "no such image file" in capsys.readouterr().err


def test_serve_without_defaults_says_what_is_missing(tmp_path, monkeypatch, capsys):
    from sslzoo.cli import main

    monkeypatch.setenv("SSLZOO_DEFAULTS_DIR", str(tmp_path / "no-defaults"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--workdir", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nuclei" in err and "--models nuclei=" in err
    assert {p.name for p in tmp_path.iterdir()} <= {"hf", "work"}  # nothing else left in the CWD


def test_serve_refuses_bad_or_busy_ports(capsys):
    import socket

    from sslzoo.cli import main

    assert main(["serve", "--models", "evaluate", "--inference-port", "0"]) == 2
    assert "inference_port" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--models", "evaluate", "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "--metrics-port" in err


@pytest.mark.parametrize("entry, handler_file", [("nuclei", "segmentation.py"), ("embed", "embedding.py")])
def test_handler_files_are_thin_entry_points(store, samples, entry, handler_file):
    """Load the handler copied into the store the way TorchServe does (a module with ``handle``) and call it."""
    import importlib.util

    root, _ = store
    spec = importlib.util.spec_from_file_location(f"_handler_{entry}", root / entry / handler_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = FakeContext(root / entry)
    assert module.handle(None, context) is None
    answers = module.handle([{"body": b""}, {"body": _png(samples["image"])}], FakeContext(root / entry, [{}, {}]))
    assert len(answers) == 2 and json.loads(answers[0])["code"] == 400
    assert len(answers[1]) > 0


def test_count_objects_counts_instance_ids_and_8_connected_semantic_components():
    from sslzoo.serving.services import count_objects

    labels = np.zeros((6, 8), np.int32)
    labels[0, 0], labels[1, 1], labels[4, 5:7] = 7, 7, 3  # ids 3 and 7 (not contiguous)
    assert count_objects(labels, "instance") == 2
    assert count_objects(labels, "semantic") == 2  # the diagonal pair is one 8-connected piece
    assert count_objects(np.zeros((4, 4), np.int32), "instance") == 0
    assert count_objects(np.zeros((0, 0), np.int32), "semantic") == 0
