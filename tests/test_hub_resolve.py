"""The one resolver (sslzoo.hub.resolve) and the CLI commands that accept aliases: zoo card / pull / list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sslzoo.cli import main
from sslzoo.errors import ConfigError, NotFoundError
from sslzoo.hub import defaults, load_encoder, load_segmenter, resolve_model
from sslzoo.models.encoders import EncoderConfig, create_encoder, encoder_state_dict, save_encoder
from sslzoo.models.segmenter import Segmenter, SegmenterConfig
from sslzoo.models.unet import build_unet

ENCODER = "byol-resnet18-monuseg"
SEGMENTER = "byol-resnet18-monuseg-instance"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    encoder = create_encoder("resnet18")
    enc = save_encoder(encoder, root / "enc", EncoderConfig(backbone="resnet18", method="byol", dataset="monuseg"))
    config = SegmenterConfig(task="instance", backbone="resnet18", method="byol", dataset="monuseg", tile_size=64)
    seg = Segmenter(build_unet(encoder, "resnet18", "instance"), config).save_pretrained(root / "seg")
    return {"encoder": enc, "segmenter": seg}


@pytest.fixture
def zoo(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded-defaults folder and an empty registry; aliases point at its two entries; no network."""
    root = tmp_path / "zoo"
    shutil.copytree(models["encoder"], root / ENCODER)
    shutil.copytree(models["segmenter"], root / SEGMENTER)
    monkeypatch.setenv(defaults.DEFAULTS_ENV, str(root))
    (tmp_path / "registry.json").write_text('{"namespace": "sslzoo", "entries": []}')
    monkeypatch.setenv("SSLZOO_HUB_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(defaults.ALIAS_TARGETS, "nuclei", SEGMENTER)
    monkeypatch.setitem(defaults.ALIAS_TARGETS, "embed", ENCODER)
    monkeypatch.setitem(defaults.ALIAS_TARGETS, "lesion", "byol-resnet18-isic2017-semantic")  # not installed
    return root


def test_kind_comes_from_the_files_not_the_name(models: dict[str, Path], tmp_path: Path) -> None:
    odd = shutil.copytree(models["segmenter"], tmp_path / "looks-like-an-encoder")
    resolved = resolve_model(odd)
    assert (resolved.kind, resolved.task, resolved.source, resolved.name) == ("segmenter", "instance", "folder", None)
    assert resolve_model(models["encoder"]).kind == "encoder"
    with pytest.raises(ConfigError, match="is a segmenter .* but an encoder is needed"):
        load_encoder(odd)


def test_alias_and_zoo_name_resolve_to_the_packaged_folder(zoo: Path) -> None:
    resolved = resolve_model("nuclei")
    assert (resolved.kind, resolved.task, resolved.source) == ("segmenter", "instance", "packaged")
    assert (resolved.name, resolved.path) == (SEGMENTER, zoo / SEGMENTER)
    encoder, config = load_encoder("embed")
    direct, _ = load_encoder(zoo / ENCODER)
    assert config.method == "byol"
    assert torch.equal(encoder_state_dict(encoder)["conv1.weight"], encoder_state_dict(direct)["conv1.weight"])
    assert load_segmenter(SEGMENTER).config.task == "instance"


def test_baselines_and_unknown_names(zoo: Path) -> None:
    torch.manual_seed(3)
    encoder, config = load_encoder("random", backbone="resnet18")
    assert (config.method, config.backbone, resolve_model("random").source) == ("random", "resnet18", "baseline")
    torch.manual_seed(3)
    assert torch.equal(encoder.conv1.weight, create_encoder("resnet18").conv1.weight)  # the same seeded draw
    with pytest.raises(ConfigError, match="encoder initialisation, but a segmenter is needed"):
        load_segmenter("random")
    with pytest.raises(NotFoundError, match=r"unknown encoder 'nonsense'.*alias.*'sslzoo zoo list'"):
        load_encoder("nonsense")
    with pytest.raises(NotFoundError, match="no such model folder"):
        resolve_model("./missing/folder")
    with pytest.raises(NotFoundError, match="is not published"):
        resolve_model("lesion")  # an alias whose entry is neither embedded nor in the registry


def test_zoo_name_from_a_filled_hf_cache(models: dict[str, Path], zoo: Path, tmp_path: Path) -> None:
    """A registry entry already in the HF cache resolves offline, its files checked against the pinned sha256."""
    from sslzoo.hub.files import file_hashes
    from sslzoo.hub.registry import ZooEntry, record_entry

    name, commit = "simclr-resnet18-monuseg", "0" * 40
    snapshot = tmp_path / "cache" / f"models--sslzoo--{name}" / "snapshots" / commit
    shutil.copytree(models["encoder"], snapshot)
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text(commit)
    record_entry(ZooEntry.from_name(name, revision=commit, files=file_hashes(snapshot)))
    resolved = resolve_model(name)
    assert (resolved.kind, resolved.source, resolved.path) == ("encoder", "cached", snapshot)
    assert load_encoder(name)[1].backbone == "resnet18"


def test_cli_zoo_card_of_an_alias_prints_it(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in (zoo / SEGMENTER).iterdir())
    assert main(["zoo", "card", "nuclei"]) == 0
    card = capsys.readouterr().out
    assert card.startswith("---") and SEGMENTER in card
    assert sorted(p.name for p in (zoo / SEGMENTER).iterdir()) == before  # nothing written into the package


def test_cli_pull_of_a_packaged_alias_says_so(zoo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["pull", "nuclei", "--out", str(tmp_path / "copy")]) == 0
    out = capsys.readouterr().out
    assert f"{SEGMENTER} (alias nuclei) is packaged with sslzoo" in out and str(zoo / SEGMENTER) in out
    assert (tmp_path / "copy" / "segmenter.json").is_file()
    assert main(["pull", "nuclei", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["where"] == "packaged"


def test_cli_zoo_list_shows_the_aliases(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["nuclei", "->", SEGMENTER] and "(packaged)" in line for line in lines)
    assert any(line.split()[:3] == ["embed", "->", ENCODER] for line in lines)
    assert any(line.split()[:2] == ["lesion", "->"] and "not installed" in line for line in lines)
    assert main(["zoo", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[SEGMENTER]["aliases"] == ["nuclei"] and rows[ENCODER]["aliases"] == ["embed"]


def test_cli_zoo_list_shows_finished_zoo_folder_entries_with_their_numbers(
    models: dict[str, Path],
    zoo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A zoo build's folder named by $SSLZOO_ZOO_DIR lists its finished entries (NQC, probe) as 'zoo-folder';
    an entry still being built (no DONE) is not listed."""
    built = tmp_path / "built"
    finished, unfinished = built / "simclr-resnet18-monuseg", built / "moco-resnet18-monuseg"
    for folder in (finished, unfinished):
        shutil.copytree(models["encoder"], folder)
        (folder / "entry.json").write_text(
            json.dumps({"nqc": {"nqc": 0.61}, "probe": {"metric": "aji_plus", "mean": 0.42}})
        )
    (finished / "DONE").write_text("")
    monkeypatch.setenv("SSLZOO_ZOO_DIR", str(built))
    assert main(["zoo", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[finished.name]["where"] == "zoo-folder" and unfinished.name not in rows
    assert rows[finished.name]["metrics"] == {"nqc": 0.61, "probe_aji_plus": 0.42}
    assert rows[SEGMENTER]["where"] == "packaged"
    assert main(["zoo", "list"]) == 0
    assert any(
        line.startswith(finished.name) and line.rstrip().endswith("zoo-folder")
        for line in capsys.readouterr().out.splitlines()
    )
