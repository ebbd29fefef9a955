"""Model cards: YAML metadata that parses back with ModelCard.load, and the required sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from sslzoo.cli import main
from sslzoo.errors import DataError
from sslzoo.hub.cards import TEMPLATE_PATH, build_card, card_for_folder, licence_for, write_card
from sslzoo.models.encoders import EncoderConfig
from sslzoo.models.segmenter import SegmenterConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "## Intended use",
    "## Not for clinical use",
    "## Out-of-scope use",
    "## Training data",
    "## Training procedure",
    "## Input contract",
    "## Evaluation",
    "## Limitations",
    "## Citation",
)


def _reload(card: ModelCard, tmp_path: Path) -> ModelCard:
    path = tmp_path / "README.md"
    card.save(str(path))
    return ModelCard.load(str(path))


def test_licence_follows_the_training_data() -> None:
    assert licence_for("monuseg") == "cc-by-nc-sa-4.0"
    assert licence_for("isic2017") == "cc0-1.0"
    assert licence_for("dsb2018") == "cc0-1.0"
    assert licence_for("folder") == "other"


def test_encoder_card_metadata_and_sections(tmp_path: Path) -> None:
    config = EncoderConfig(
        backbone="resnet50",
        method="densecl",
        dataset="monuseg",
        out_channels=[3, 64, 256, 512, 1024, 2048],
        training={"lr": 0.001, "batch_size": 32, "params": {"queue_size": 4096, "loss_lambda": 0.5}},
    )
    card = _reload(build_card(config, "densecl-resnet50-monuseg", repo_id="lab/densecl-resnet50-monuseg"), tmp_path)
    data = card.data
    assert data.license == "cc-by-nc-sa-4.0"
    assert data.library_name == "sslzoo"
    assert data.pipeline_tag == "image-feature-extraction"
    assert data.datasets == ["monuseg"]
    assert {"sslzoo", "densecl", "resnet50", "self-supervised-learning"} <= set(data.tags)
    assert data.base_model is None  # pretrained from scratch
    assert not data.eval_results  # no results given -> no model-index
    text = card.text
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "not a medical device" in text and "must not be used for clinical" in text
    assert "Commercial use" in text  # NC licence is spelt out as out of scope
    assert "| params.queue_size | 4096 |" in text and "| lr | 0.001 |" in text
    assert "0.25 µm per pixel" in text and "mean = [0.485, 0.456, 0.406]" in text
    assert "2519--2528" in text and "kumar2017monuseg" in text
    assert 'load_encoder("lab/densecl-resnet50-monuseg")' in text


def test_segmenter_card_has_model_index_with_the_given_results(tmp_path: Path) -> None:
    config = SegmenterConfig(
        task="semantic",
        backbone="resnet18",
        init="simclr-resnet18-isic2017",
        method="simclr",
        dataset="isic2017",
        threshold=0.4,
        training={"rate": 0.08, "frozen": False, "epochs": 50},
    )
    evaluation = {"task": "semantic", "model": "m", "n_images": 150, "mean": {"dice": 0.8312}, "pooled": {"dice": 0.85}}
    card = build_card(
        config, "simclr-resnet18-isic2017-semantic", evaluation=evaluation, evaluation_dataset="ISIC 2017 val"
    )
    card = _reload(card, tmp_path)
    data = card.data
    assert data.license == "cc0-1.0"
    assert data.pipeline_tag == "image-segmentation"
    assert data.base_model == "sslzoo/simclr-resnet18-isic2017"
    assert data.metrics == ["dice"]
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"dice": 0.8312, "dice_pooled": 0.85}
    assert {r.dataset_name for r in data.eval_results} == {"ISIC 2017 val"}
    assert data.model_name == "simclr-resnet18-isic2017-semantic"
    assert "over 150 images" in card.text and "| dice | 0.8312 |" in card.text
    assert "thresholded at 0.4" in card.text and "Commercial use" not in card.text
    assert "codella2018isic" in card.text


def test_segmenter_metrics_in_its_config_are_used_when_no_evaluation_is_given(tmp_path: Path) -> None:
    config = SegmenterConfig(
        task="instance",
        backbone="resnet18",
        init="imagenet",
        method="imagenet",
        dataset="dsb2018",
        metrics={"aji": 0.55, "pq": 0.5},
    )
    data = _reload(build_card(config, "imagenet-resnet18-dsb2018-instance"), tmp_path).data
    assert data.license == "cc0-1.0" and data.base_model == "smp-hub/resnet18.imagenet"
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {"aji": 0.55, "pq": 0.5}


def test_card_for_folder_reads_the_config_and_rejects_other_folders(tmp_path: Path) -> None:
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text(
        EncoderConfig(backbone="resnet18", method="byol", dataset="dsb2018").model_dump_json()
    )
    path = write_card(folder)
    card = ModelCard.load(str(path))
    assert path == folder / "README.md" and card.data.model_name == "byol-resnet18-dsb2018"
    assert card.data.license == "cc0-1.0" and "byol-resnet18-dsb2018" in card.text
    with pytest.raises(DataError, match="not a model folder"):
        card_for_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"backbone": "resnet18"}))
    with pytest.raises(DataError, match="unreadable model config"):
        card_for_folder(tmp_path / "bad")


def test_model_cards_template_is_the_packaged_template() -> None:
    template = REPO_ROOT / "model_cards" / "template.md"
    assert template.read_text() == TEMPLATE_PATH.read_text()
    assert "{{ card_data }}" in template.read_text()


def test_zoo_card_cli_writes_a_card_with_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "seg"
    folder.mkdir()
    config = SegmenterConfig(
        task="instance",
        backbone="resnet50",
        init="densecl-resnet50-monuseg",
        method="densecl",
        dataset="monuseg",
        microns_per_pixel=0.25,
    )
    (folder / "segmenter.json").write_text(config.model_dump_json())
    results = tmp_path / "eval.json"
    results.write_text(json.dumps({"task": "instance", "n_images": 14, "mean": {"aji": 0.6, "pq": 0.58}, "pooled": {}}))
    out = tmp_path / "cards" / "densecl-resnet50-monuseg-instance.md"
    args = [
        "zoo",
        "card",
        str(folder),
        "--evaluation",
        str(results),
        "--out",
        str(out),
        "--repo",
        "lab/densecl-resnet50-monuseg-instance",
    ]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    card = ModelCard.load(str(out))
    assert card.data.base_model == "lab/densecl-resnet50-monuseg"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"aji": 0.6, "pq": 0.58}
    assert "Microns per pixel: 0.25 µm" in card.text and "over 14 images" in card.text
    assert main(["zoo", "card", str(tmp_path / "nothing")]) == 2
