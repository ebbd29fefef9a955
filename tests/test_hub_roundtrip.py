"""publish -> pull through the real huggingface_hub client against a local Hub-compatible server.

The server (tests/hub_server.py) listens on 127.0.0.1 only. Covered: byte-identical round trip,
registry pinning, cache reuse, offline pulls from the cache, refusal of tampered files (on the
server and in the cache), branches, unlisted repos, and the CLI commands. One real resnet18 encoder
is uploaded once per module; the other uploads use a tiny folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import ModelCard, constants

from sslzoo.cli import main
from sslzoo.errors import ConfigError, DataError, NotFoundError
from sslzoo.hub import load_encoder
from sslzoo.hub.publish import PublishResult, publish
from sslzoo.hub.pull import pull
from sslzoo.hub.registry import list_entries, load_registry
from sslzoo.models.encoders import EncoderConfig, create_encoder, encoder_state_dict, save_encoder

NAME = "simclr-resnet18-monuseg"
REPO = f"sslzoo/{NAME}"


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = EncoderConfig(
        backbone="resnet18", method="simclr", dataset="monuseg", training={"lr": 0.001, "params": {"temperature": 0.1}}
    )
    return save_encoder(create_encoder("resnet18"), tmp_path_factory.mktemp("export") / NAME, config)


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def published(hub: HubServer, encoder_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> PublishResult:
    """The encoder published once to the local Hub and recorded in a registry file of its own."""
    registry = tmp_path_factory.mktemp("registry") / "registry.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "0")
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        return publish(encoder_folder, REPO, endpoint=hub.url, token="test-token", record=registry)


@pytest.fixture
def online(hub: HubServer, published: PublishResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Network on, HF_ENDPOINT at the local Hub, a fresh HF cache, the test registry; returns the cache dir."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "test-token")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSLZOO_HUB_REGISTRY", str(published.registry))
    monkeypatch.setenv("SSLZOO_DEFAULTS_DIR", str(tmp_path / "no-defaults"))
    monkeypatch.delenv("SSLZOO_HUB_NAMESPACE", raising=False)
    return tmp_path / "cache"


def _go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_publish_uploads_card_weights_config_and_records_the_pin(
    hub: HubServer, published: PublishResult, encoder_folder: Path
) -> None:
    assert published.card_written and (encoder_folder / "README.md").is_file()
    assert published.commit == hub.repos[REPO].refs["main"]
    remote = hub.files(REPO)
    assert set(remote) == {"README.md", "config.json", "model.safetensors"}
    for filename, data in remote.items():
        assert data == (encoder_folder / filename).read_bytes()
    entry = load_registry(published.registry).get(NAME)
    assert entry is not None and entry.revision == published.commit and entry.files == published.files
    assert entry.licence == "cc-by-nc-sa-4.0"
    card = ModelCard(remote["README.md"].decode())
    assert card.data.license == "cc-by-nc-sa-4.0" and card.data.pipeline_tag == "image-feature-extraction"


def test_pull_round_trip_is_byte_identical_and_loads(
    online: Path, hub: HubServer, encoder_folder: Path, tmp_path: Path
) -> None:
    result = pull(NAME, out=tmp_path / "out")
    assert result.verified and result.where == "hub" and result.commit == hub.repos[REPO].refs["main"]
    for filename in ("README.md", "config.json", "model.safetensors"):
        assert (tmp_path / "out" / filename).read_bytes() == (encoder_folder / filename).read_bytes()
    assert str(online) in str(pull(NAME).folder)  # the files live in the HF cache
    requests_before = len(hub.requests)
    again = pull(NAME)
    assert again.where == "cached" and len(hub.requests) == requests_before  # no network for a cached pin
    encoder, config = load_encoder(NAME)
    original, _ = load_encoder(encoder_folder)
    assert (config.method, config.dataset) == ("simclr", "monuseg")
    for key, value in encoder_state_dict(original).items():
        assert torch.equal(encoder_state_dict(encoder)[key], value), key
    assert {e.name: e.where for e in list_entries()} == {NAME: "cached"}


def test_offline_pull_works_from_a_filled_cache(online: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    pull(NAME)
    _go_offline(monkeypatch)
    requests_before = len(hub.requests)
    result = pull(NAME)
    assert result.where == "cached" and result.verified
    assert len(hub.requests) == requests_before
    encoder, _ = load_encoder(NAME)
    assert encoder_state_dict(encoder)["conv1.weight"].shape == (64, 3, 7, 7)


def test_offline_pull_with_an_empty_cache_says_how_to_fix_it(online: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _go_offline(monkeypatch)
    with pytest.raises(NotFoundError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE=1"):
        pull(NAME)


def test_tampered_download_is_refused_and_not_used(online: Path, hub: HubServer) -> None:
    original = hub.files(REPO)["model.safetensors"]
    altered = bytearray(original)
    altered[-1] ^= 0xFF
    hub.tamper(REPO, "model.safetensors", bytes(altered))  # the server now serves other bytes under the pin
    try:
        with pytest.raises(DataError, match="model.safetensors has sha256 .* but the zoo registry pins") as info:
            pull(NAME)
        assert "removed from the cache and not used" in str(info.value)
        assert list(online.rglob("model.safetensors")) == []  # the altered file was evicted
        with pytest.raises(DataError, match="sha256"):
            load_encoder(NAME)
    finally:
        hub.tamper(REPO, "model.safetensors", original)


def test_tampered_cache_is_refused_offline(online: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = pull(NAME).folder
    blob = (folder / "config.json").resolve()
    blob.write_text(blob.read_text().replace("simclr", "byol__"))
    _go_offline(monkeypatch)
    with pytest.raises(DataError, match="config.json has sha256"):
        pull(NAME)


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A small model folder (config + one tensor): enough for publish/pull, which do not read the weights."""
    from safetensors.torch import save_file

    folder = tmp_path / "tiny"
    folder.mkdir()
    config = EncoderConfig(backbone="resnet18", method="byol", dataset="folder")
    (folder / "config.json").write_text(config.model_dump_json())
    save_file({"conv1.weight": torch.arange(12.0).reshape(3, 4)}, str(folder / "model.safetensors"))
    return folder


def test_branch_publish_and_unlisted_pull_via_cli(
    online: Path, hub: HubServer, tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = "someone/tiny-encoder"
    assert main(["publish", str(tiny_folder), "--repo", repo, "--revision", "v1", "--private", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["commit"] == hub.repos[repo].refs["v1"] and result["entry"] is None
    assert hub.repos[repo].private and result["card_written"]
    assert main(["pull", repo, "--revision", "v1", "--out", str(tmp_path / "v1"), "--json"]) == 0
    captured = capsys.readouterr()
    pulled = json.loads(captured.out)
    assert pulled["verified"] is False and "not in the zoo registry" in captured.err
    assert set(pulled["files"]) == {"README.md", "config.json", "model.safetensors"}
    for filename in pulled["files"]:
        assert (tmp_path / "v1" / filename).read_bytes() == (tiny_folder / filename).read_bytes()
    with pytest.raises(NotFoundError, match="revision 'v2' not found"), pytest.warns(UserWarning):
        pull(repo, revision="v2")


def test_pull_of_another_revision_than_the_pin_is_flagged_unverified(
    online: Path, hub: HubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token="test-token").create_branch(REPO, branch="stable", exist_ok=True)
    with pytest.warns(UserWarning, match="NOT checked against the registry"):
        result = pull(NAME, revision="stable")
    assert not result.verified and result.revision == "stable"
    assert main(["pull", NAME]) == 0
    out = capsys.readouterr().out
    assert "verified against the registry" in out and f"{REPO}@" in out


def test_publish_and_pull_errors_are_clear(
    online: Path, encoder_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NotFoundError, match="repo nobody/ghost not found"), pytest.warns(UserWarning):
        pull("nobody/ghost")
    with pytest.raises(NotFoundError, match="is not published"):
        pull("byol-resnet50-isic2017")
    with pytest.raises(ConfigError, match="disagrees with the model's config"):
        publish(encoder_folder, "sslzoo/byol-resnet18-monuseg")
    with pytest.raises(ConfigError, match="NAMESPACE/NAME"):
        publish(encoder_folder, NAME)
    with pytest.raises(DataError, match="not a model folder"):
        publish(tmp_path, "sslzoo/anything")
    assert main(["publish", str(tmp_path / "missing"), "--repo", "sslzoo/x"]) == 2
    with pytest.raises(DataError, match="publishing .* failed: .*check HF_TOKEN"):
        publish(encoder_folder, REPO, endpoint="http://127.0.0.1:9")  # nothing listens there
    _go_offline(monkeypatch)
    with pytest.raises(ConfigError, match="cannot publish with HF_HUB_OFFLINE=1"):
        publish(encoder_folder, REPO)
