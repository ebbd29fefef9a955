"""`sslzoo zoo package`: compact float16 zoo entries that load as float32 and predict like the original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import load_file

from sslzoo.cli import main
from sslzoo.cli.zoo import WEIGHTS_DTYPES
from sslzoo.errors import ConfigError
from sslzoo.hub import defaults, load_encoder, load_segmenter
from sslzoo.hub.package import package
from sslzoo.models.encoders import WEIGHTS_DTYPES as MODEL_WEIGHTS_DTYPES
from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder
from sslzoo.models.segmenter import Segmenter, SegmenterConfig
from sslzoo.serving.services import EmbeddingService, SegmentationService

NAMES = {"semantic": "densecl-resnet18-isic2017-semantic", "instance": "densecl-resnet18-monuseg-instance"}
ENCODER = "densecl-resnet18-monuseg"
SEGMENTER_FILES = {"model.safetensors", "config.json", "segmenter.json", "README.md"}
EVALUATION = {
    "task": "instance",
    "n_images": 3,
    "mean": {"aji": 0.41, "aji_plus": 0.43, "pq": 0.35, "dq": 0.5, "sq": 0.7, "dice": 0.75},
    "pooled": {"aji": 0.4, "aji_plus": 0.42, "pq": 0.34, "dq": 0.5, "sq": 0.69, "dice": 0.76},
    "per_image": [],
}
IMAGE = np.random.default_rng(0).integers(0, 255, (96, 130, 3), dtype=np.uint8)


def _segmenter(task: str) -> Segmenter:
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=1)
    dataset = "isic2017" if task == "semantic" else "monuseg"
    config = SegmenterConfig(
        task=task,
        backbone="resnet18",
        init=f"densecl-resnet18-{dataset}",
        method="densecl",
        dataset=dataset,
        tile_size=64,
        tile_overlap=16,
        metrics={"dice": 0.8} if task == "semantic" else {"aji": 0.41},
    )
    return Segmenter(model, config)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training output folders as 'sslzoo finetune' / 'sslzoo pretrain' leave them, extras included."""
    root = tmp_path_factory.mktemp("runs")
    for task in NAMES:
        folder = _segmenter(task).save_pretrained(root / task)
        (folder / "result.json").write_text("{}")
        (folder / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (root / "instance" / "evaluation.json").write_text(json.dumps(EVALUATION))
    torch.manual_seed(1)
    encoder = save_encoder(
        create_encoder("resnet18"),
        root / "encoder",
        EncoderConfig(backbone="resnet18", method="densecl", dataset="monuseg"),
    )
    (encoder / "logs").mkdir()
    (encoder / "logs" / "metrics.csv").write_text("step,loss\n")
    return root


def _dtypes(path: Path) -> dict[str, torch.dtype]:
    return {k: v.dtype for k, v in load_file(str(path)).items()}


def _metadata(path: Path) -> dict[str, str] | None:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _assert_float16_copy(source: Path, packaged: Path) -> None:
    before, after = _dtypes(source), _dtypes(packaged)
    assert before.keys() == after.keys()
    assert {k: torch.float16 if v == torch.float32 else v for k, v in before.items()} == after  # ints unchanged
    assert torch.int64 in after.values()  # num_batches_tracked
    assert _metadata(packaged) == _metadata(source)
    assert 0.45 < packaged.stat().st_size / source.stat().st_size < 0.55
    assert packaged.stat().st_mode & 0o044 == 0o044  # readable by all (safetensors itself writes 0600)


def _assert_float32(module: torch.nn.Module) -> None:
    floats = {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}
    assert floats == {torch.float32}


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_packaged_segmenter_is_float16_on_disk_and_predicts_like_the_original(
    sources: Path, tmp_path: Path, task: str
) -> None:
    name = NAMES[task]
    result = package(sources / task, name, tmp_path / "zoo")
    folder = tmp_path / "zoo" / name
    assert result.folder == folder and result.weights_dtype == "float16" and result.kind == "segmenter"
    assert {p.name for p in folder.iterdir()} == SEGMENTER_FILES
    _assert_float16_copy(sources / task / "model.safetensors", folder / "model.safetensors")
    assert (folder / "config.json").read_bytes() == (sources / task / "config.json").read_bytes()
    assert json.loads((folder / "segmenter.json").read_text())["weights_dtype"] == "float16"
    sizes = {f.name: (f.source_bytes, f.bytes) for f in result.files}
    assert (
        sizes["README.md"][0] is None and sizes["model.safetensors"][1] == (folder / "model.safetensors").stat().st_size
    )

    original = Segmenter.from_pretrained(sources / task)
    compact = load_segmenter(folder)
    _assert_float32(compact.model)
    assert compact.config.weights_dtype == "float16" and compact.config.task == task
    expected, got = original.predict_map(IMAGE), compact.predict_map(IMAGE)
    assert np.abs(got - expected).max() < 1e-2 * max(1.0, float(np.abs(expected).max()))
    labels, compact_labels = original.postprocess(expected), compact.postprocess(got)
    assert np.mean((labels > 0) == (compact_labels > 0)) > 0.99
    served = SegmentationService.load(name, folder, "cpu")
    _assert_float32(served.segmenter.model)
    np.testing.assert_array_equal(served.segment(IMAGE), compact_labels)

    card = ModelCard.load(str(folder / "README.md"))
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    if task == "instance":  # the run's evaluation.json: mean and pooled scores
        assert results["aji"] == 0.41 and results["aji_pooled"] == 0.4 and len(results) == 12
    else:  # segmenter.json metrics
        assert results == {"dice": 0.8}
    assert card.data.model_name == name and "stored in float16" in card.text

    compact.save_pretrained(tmp_path / "resaved")  # e.g. the serving model store: float32 weights again
    assert json.loads((tmp_path / "resaved" / "segmenter.json").read_text())["weights_dtype"] == "float32"


def test_packaged_encoder_is_float16_on_disk_and_loads_as_float32(sources: Path, tmp_path: Path) -> None:
    result = package(sources / "encoder", ENCODER, tmp_path / "zoo", evaluation={"nqc": 0.61})
    folder = result.folder
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    _assert_float16_copy(sources / "encoder" / "model.safetensors", folder / "model.safetensors")
    assert json.loads((folder / "config.json").read_text())["weights_dtype"] == "float16"
    assert package(sources / "encoder", ENCODER, folder, evaluation={"nqc": 0.61}).folder == folder  # --out: ENTRY

    original, _ = load_encoder(sources / "encoder")
    compact, config = load_encoder(folder)
    _assert_float32(compact)
    assert config.weights_dtype == "float16"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = original.eval()(x)[-1], compact.eval()(x)[-1]
    assert (got - expected).abs().max() < 1e-2 * expected.abs().max()
    service = EmbeddingService.load("embed", folder, "cpu")
    reference = EmbeddingService("embed", original, config)
    np.testing.assert_allclose(service.embed(IMAGE), reference.embed(IMAGE), atol=1e-2)

    card = ModelCard.load(str(folder / "README.md"))
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"nqc": 0.61}
    assert card.data.pipeline_tag == "image-feature-extraction"


def test_a_name_that_disagrees_with_the_folder_is_refused(sources: Path, tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    with pytest.raises(ConfigError, match=r"method 'simclr' \(config: 'densecl'\).*implies 'densecl-resnet18-isic"):
        package(sources / "semantic", "simclr-resnet18-isic2017-semantic", out)
    with pytest.raises(ConfigError, match="names an encoder, but the folder holds a segmenter"):
        package(sources / "semantic", "densecl-resnet18-isic2017", out)
    with pytest.raises(ConfigError, match="task 'instance' \\(config: 'semantic'\\)"):
        package(sources / "semantic", "densecl-resnet18-isic2017-instance", out)
    with pytest.raises(ConfigError, match="backbone 'resnet50'"):
        package(sources / "encoder", "densecl-resnet50-monuseg", out)
    with pytest.raises(ConfigError, match="unknown method"):
        package(sources / "encoder", "densclx-resnet18-monuseg", out)
    with pytest.raises(ConfigError, match="unsupported weights dtype 'int8'"):
        package(sources / "encoder", ENCODER, out, dtype="int8")  # type: ignore[arg-type]
    assert not out.exists()  # nothing written
    (out / ENCODER).mkdir(parents=True)
    (out / ENCODER / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a packaged zoo entry"):
        package(sources / "encoder", ENCODER, out)


def test_cli_packages_copies_the_card_and_zoo_list_shows_the_entry(
    sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert set(WEIGHTS_DTYPES) == set(MODEL_WEIGHTS_DTYPES)
    zoo, cards, name = tmp_path / "zoo", tmp_path / "model_cards", NAMES["instance"]
    argv = ["zoo", "package", str(sources / "instance"), "--name", name, "--out", str(zoo), "--card-to", str(cards)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"packaged {name} (segmenter, float16 weights)" in out and "57." in out and "(50%)" in out
    assert (cards / f"{name}.md").read_text() == (zoo / name / "README.md").read_text()
    assert "How this model was made" not in (cards / f"{name}.md").read_text()
    notes = tmp_path / "made.md"
    notes.write_text("Fine-tuned with `sslzoo finetune --rate 1.0` in 42 minutes.\n")
    assert main(argv + ["--provenance", str(notes)]) == 0
    card = (zoo / name / "README.md").read_text()
    assert "## How this model was made\n\nFine-tuned with `sslzoo finetune --rate 1.0` in 42 minutes." in card
    assert main(argv + ["--provenance", str(tmp_path / "missing.md")]) != 0
    assert "missing.md: no such file" in capsys.readouterr().err
    assert main(argv[:-2] + ["--dtype", "bfloat16", "--json"]) == 0  # replaces the previous package
    assert json.loads(capsys.readouterr().out)["weights_dtype"] == "bfloat16"
    assert set(_dtypes(zoo / name / "model.safetensors").values()) == {torch.bfloat16, torch.int64}
    assert main(["zoo", "package", str(sources / "instance"), "--name", "byol-resnet18-monuseg-instance",
                 "--out", str(zoo)]) == 2  # fmt: skip
    assert "disagrees with the folder's config on method 'byol'" in capsys.readouterr().err

    monkeypatch.setenv(defaults.DEFAULTS_ENV, str(zoo))
    monkeypatch.setenv("SSLZOO_HUB_REGISTRY", str(tmp_path / "registry.json"))
    (tmp_path / "registry.json").write_text('{"namespace": "sslzoo", "entries": []}')
    assert main(["zoo", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[name]["where"] == "packaged" and rows[name]["metrics"] == {"aji": 0.41}


def test_weights_beyond_float16_range_are_kept_in_float32(tmp_path: Path) -> None:
    """A batch-norm running_var above 65504 (a Barlow Twins encoder after a few steps) must not become inf."""
    encoder = create_encoder("resnet18")
    encoder.layer4[1].bn2.running_var.fill_(1.0e6)
    source = save_encoder(
        encoder, tmp_path / "big", EncoderConfig(backbone="resnet18", method="barlowtwins", dataset="monuseg")
    )
    with pytest.warns(UserWarning, match=r"exceed float16's range \(e\.g\. layer4\.1\.bn2\.running_var\)"):
        result = package(source, "barlowtwins-resnet18-monuseg", tmp_path / "zoo")
    assert result.weights_dtype == "float32"
    stored = load_file(str(result.folder / "model.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in stored.values())
    assert stored["layer4.1.bn2.running_var"].dtype == torch.float32
    assert json.loads((result.folder / "config.json").read_text())["weights_dtype"] == "float32"
    loaded, _ = load_encoder(result.folder)
    assert float(loaded.layer4[1].bn2.running_var[0]) == 1.0e6
