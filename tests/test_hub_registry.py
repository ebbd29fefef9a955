"""Registry file, `zoo list`, and name resolution through embedded defaults (a temporary packaged dir)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslzoo.cli import main
from sslzoo.errors import ConfigError, NotFoundError
from sslzoo.hub import defaults, load_encoder, load_segmenter
from sslzoo.hub.files import file_hashes, sha256_file
from sslzoo.hub.publish import needs_card
from sslzoo.hub.registry import ZooEntry, get_entry, list_entries, load_registry, record_entry
from sslzoo.models.encoders import EncoderConfig, create_encoder, encoder_state_dict, load_encoder_folder, save_encoder
from sslzoo.models.segmenter import Segmenter, SegmenterConfig
from sslzoo.models.unet import build_unet

SEGMENTER = "densecl-resnet18-monuseg-instance"
ENCODER = "simclr-resnet18-monuseg"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A defaults folder holding one tiny segmenter and one encoder, as the package would embed them."""
    root = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    model = build_unet(create_encoder("resnet18"), "resnet18", "instance")
    config = SegmenterConfig(
        task="instance",
        backbone="resnet18",
        method="densecl",
        dataset="monuseg",
        tile_size=64,
        tile_overlap=16,
        metrics={"aji": 0.42},
    )
    Segmenter(model, config).save_pretrained(root / SEGMENTER)
    save_encoder(
        create_encoder("resnet18"),
        root / ENCODER,
        EncoderConfig(backbone="resnet18", method="simclr", dataset="monuseg"),
    )
    return root


@pytest.fixture
def zoo_env(packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(defaults.DEFAULTS_ENV, str(packaged))
    monkeypatch.setenv("SSLZOO_HUB_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SSLZOO_HUB_NAMESPACE", raising=False)
    monkeypatch.setitem(defaults.ALIAS_TARGETS, "nuclei", SEGMENTER)
    monkeypatch.setitem(defaults.ALIAS_TARGETS, "embed", ENCODER)
    registry = tmp_path / "registry.json"
    registry.write_text('{"namespace": "sslzoo", "entries": []}')
    return registry


def test_packaged_registry_file_is_valid() -> None:
    registry = load_registry(Path(__file__).resolve().parents[1] / "sslzoo" / "hub" / "registry.json")
    assert registry.namespace == "sslzoo"
    assert all(entry.files and entry.revision for entry in registry.entries)


def test_record_and_read_back_entries(zoo_env: Path) -> None:
    entry = ZooEntry.from_name(
        "moco-resnet50-isic2017", revision="a" * 40, files={"model.safetensors": "0" * 64}, metrics={"nqc": 0.7}
    )
    assert (entry.kind, entry.licence, entry.repo_id) == ("encoder", "cc0-1.0", "sslzoo/moco-resnet50-isic2017")
    record_entry(entry, zoo_env)
    record_entry(entry.model_copy(update={"revision": "b" * 40}), zoo_env)  # replaces, not duplicates
    registry = load_registry()
    assert [e.revision for e in registry.entries] == ["b" * 40]
    assert "where" not in json.loads(zoo_env.read_text())["entries"][0]  # computed, never stored
    assert get_entry("moco-resnet50-isic2017", namespace="mirror").repo_id == "mirror/moco-resnet50-isic2017"
    assert get_entry("byol-resnet50-isic2017") is None


def test_inconsistent_or_malformed_registry_is_refused(zoo_env: Path) -> None:
    with pytest.raises(ValueError, match="disagrees with its name"):
        ZooEntry(
            name="moco-resnet50-isic2017",
            kind="encoder",
            method="byol",
            backbone="resnet50",
            dataset="isic2017",
            repo_id="x/y",
        )
    with pytest.raises(ValueError, match="64-character lower-case hex sha256"):
        ZooEntry.from_name("moco-resnet50-isic2017", files={"model.safetensors": "abc"})
    zoo_env.write_text('{"entries": [{"name": "moco-resnet50-nowhere"}]}')
    with pytest.raises(ConfigError, match="malformed"):
        load_registry()
    zoo_env.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        load_registry()  # an explicitly configured registry must exist


def test_list_shows_packaged_entries_with_hashes(zoo_env: Path, packaged: Path) -> None:
    entries = {e.name: e for e in list_entries()}
    assert set(entries) == {SEGMENTER, ENCODER}
    segmenter = entries[SEGMENTER]
    assert (segmenter.where, segmenter.kind, segmenter.task, segmenter.licence) == (
        "packaged",
        "segmenter",
        "instance",
        "cc-by-nc-sa-4.0",
    )
    assert segmenter.metrics == {"aji": 0.42}
    assert segmenter.files["model.safetensors"] == sha256_file(packaged / SEGMENTER / "model.safetensors")
    planned = [e for e in list_entries(include_planned=True) if e.where == "planned"]
    assert planned and all(not e.files for e in planned)


def test_zoo_list_cli_json_and_table(zoo_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["where"] for r in rows} == {SEGMENTER: "packaged", ENCODER: "packaged"}
    assert set(rows[0]) >= {"name", "kind", "method", "backbone", "dataset", "task", "metrics", "licence", "where"}
    assert main(["zoo", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "kind", "method", "backbone", "dataset", "task", "metrics", "licence", "where"]
    assert any(line.startswith(SEGMENTER) and "aji=0.420" in line for line in table)


def test_load_segmenter_by_alias_from_embedded_defaults(zoo_env: Path, packaged: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (80, 72, 3), dtype=np.uint8)
    segmenter = load_segmenter("nuclei")
    direct = Segmenter.from_pretrained(packaged / SEGMENTER)
    assert segmenter.config.task == "instance"
    np.testing.assert_array_equal(segmenter.predict_map(image), direct.predict_map(image))
    assert segmenter.predict(image).shape == (80, 72)


def test_load_encoder_reaches_zoo_names_through_the_hub(zoo_env: Path, packaged: Path) -> None:
    encoder, config = load_encoder(ENCODER, backbone="resnet50")
    assert (config.method, config.backbone) == ("simclr", "resnet18")
    reference, _ = load_encoder_folder(packaged / ENCODER)
    for key, value in encoder_state_dict(reference).items():
        assert torch.equal(encoder_state_dict(encoder)[key], value)
    same, _ = load_encoder("embed")
    assert torch.equal(encoder_state_dict(same)["conv1.weight"], encoder_state_dict(reference)["conv1.weight"])


def test_wrong_kind_and_unknown_names_are_refused(zoo_env: Path) -> None:
    with pytest.raises(ConfigError, match="names a segmenter, but an encoder is needed"):
        load_encoder("nuclei")
    with pytest.raises(ConfigError, match="names an encoder, but a segmenter is needed"):
        load_segmenter(ENCODER)
    with pytest.raises(NotFoundError, match="unknown encoder 'nonsense'"):
        load_encoder("nonsense")
    with pytest.raises(NotFoundError, match="is not published"):
        load_segmenter("lesion")  # its zoo entry is neither embedded nor in the registry


def test_smp_stub_card_is_replaced_but_own_cards_are_kept(packaged: Path, tmp_path: Path) -> None:
    assert needs_card(packaged / SEGMENTER)  # smp's save_pretrained wrote a generic MIT-licence card
    assert needs_card(packaged / ENCODER)  # no card at all
    (tmp_path / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# my own card\n")
    assert not needs_card(tmp_path)
    assert set(file_hashes(packaged / ENCODER)) == {"config.json", "model.safetensors"}
