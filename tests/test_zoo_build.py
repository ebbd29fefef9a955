"""End to end: a tiny zoo (configs/zoo/tiny.yaml: two methods + the random reference, a few steps, synthetic
lesions written here) is built, rebuilt (nothing redone), resumed after a simulated kill, published to the
loopback Hub-compatible server (tests/hub_server.py), pulled by name into an empty cache, loaded, and used to
embed and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import HubServer
from huggingface_hub import constants

from sslzoo.cli import main
from sslzoo.data.io import write_image, write_label_map
from sslzoo.data.synthetic import synthetic_lesion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = REPO_ROOT / "configs" / "zoo" / "tiny.yaml"
ENCODERS = ("simclr-resnet18-isic2017", "byol-resnet18-isic2017")
SEGMENTERS = tuple(f"{name}-semantic" for name in ENCODERS)
REFERENCE = "random-resnet18-isic2017"


def _write_lesions(root: Path) -> None:
    """A simple-layout dataset: train (8) and val (6) with masks, unlabeled (4), classes in labels.csv."""
    rows = ["id,split,class"]
    seed = 0
    for split, count in (("train", 8), ("val", 6), ("unlabeled", 4)):
        for i in range(count):
            image, mask = synthetic_lesion(64, seed=seed)
            seed += 1
            write_image(root / split / "images" / f"{split}{i}.png", image)
            if split != "unlabeled":
                write_label_map(root / split / "masks" / f"{split}{i}.png", mask)
                rows.append(f"{split}{i},{split},{'nevus' if i % 2 else 'melanoma'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny zoo built once through the CLI."""
    root = tmp_path_factory.mktemp("tiny-zoo")
    data, out = root / "data", root / "tiny"
    _write_lesions(data / "lesions")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSLZOO_TINY_ZOO_DATA", str(data))
        assert main(["zoo", "build", str(TINY), "--out", str(out), "--accelerator", "cpu"]) == 0
    return out


def test_build_writes_entries_cards_and_a_leaderboard(built: Path) -> None:
    from sslzoo.hub.zoo_folder import zoo_folder_entries
    from sslzoo.zoo.records import finished_entries

    records = {r.name: r for r in finished_entries(built)}
    assert set(records) == {REFERENCE, *ENCODERS}
    for name in ENCODERS:
        record = records[name]
        assert record.pretrain is not None and record.pretrain.steps == 2
        assert record.pretrain.n_images == 12  # train 8 + unlabeled 4; the 6 held-out val images excluded
        assert record.probe.metric == "dice" and set(record.probe.scores) == {0, 1}
        assert record.probe.n_eval_images == 6 and record.nqc.n_images == 6
        assert 0.0 <= record.probe.mean <= 1.0
        config = json.loads((built / name / "config.json").read_text())
        assert config["weights_dtype"] == "float16" and config["method"] == record.method
        card = (built / name / "README.md").read_text()
        assert "sslzoo zoo build" in card and "Gain over random init" in card and "probe_dice" in card
        assert (built / record.segmenter / "segmenter.json").is_file()  # type: ignore[operator]
    assert records[REFERENCE].pretrain is None and not (built / REFERENCE / "model.safetensors").exists()
    # the zoo folder resolves the packaged entries by name; the reference and build state are not entries
    assert set(zoo_folder_entries(built)) == {*ENCODERS, *SEGMENTERS}
    board = (built / "LEADERBOARD.md").read_text()
    table = [line for line in board.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 3 and "reference" in table[1] and (built / "leaderboard.png").stat().st_size > 1000


def test_rebuild_does_nothing_and_a_killed_build_continues(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sslzoo.zoo.build import build_zoo
    from sslzoo.zoo.config import load_zoo_config

    monkeypatch.setenv("SSLZOO_TINY_ZOO_DATA", str(built.parent / "data"))
    config = load_zoo_config(TINY)
    again = build_zoo(config, built, report=lambda line: None)
    assert again.built == [] and len(again.skipped) == 3

    # simulate a build killed during the second probe seed of one entry
    entry = built / ENCODERS[0]
    weights = entry / "work" / "pretrain" / "model.safetensors"
    pretrain_time = weights.stat().st_mtime_ns
    seed0 = (entry / "work" / "probe" / "seed0" / "result.json").stat().st_mtime_ns
    for name in ("DONE", "entry.json", "work/probe.json"):
        (entry / name).unlink()
    (entry / "work" / "probe" / "seed1" / "result.json").unlink()
    resumed = build_zoo(config, built, report=lambda line: None)
    assert resumed.built == [ENCODERS[0]] and (entry / "DONE").is_file()
    assert weights.stat().st_mtime_ns == pretrain_time  # pretraining not redone
    assert (entry / "work" / "probe" / "seed0" / "result.json").stat().st_mtime_ns == seed0  # nor seed 0

    other = load_zoo_config(TINY).model_copy(update={"backbone": "resnet34"})
    with pytest.raises(Exception, match="another config"):
        build_zoo(other, built, report=lambda line: None)


def test_an_entry_another_process_is_building_is_left_to_it(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds of one folder (a second shard, or the command started twice) never write the same entry."""
    from sslzoo.zoo.build import build_zoo, entry_lock
    from sslzoo.zoo.config import load_zoo_config

    monkeypatch.setenv("SSLZOO_TINY_ZOO_DATA", str(built.parent / "data"))
    config = load_zoo_config(TINY)
    entry = built / ENCODERS[1]
    for name in ("DONE", "entry.json"):
        (entry / name).unlink()
    lines: list[str] = []
    with entry_lock(entry) as held:  # this test is "the other process"
        assert held
        with entry_lock(entry) as second:
            assert not second
        busy = build_zoo(config, built, report=lines.append)
    assert busy.busy == [ENCODERS[1]] and busy.built == [] and not (entry / "DONE").exists()
    assert any("another process is building it" in line for line in lines)
    after = build_zoo(config, built, report=lambda line: None)  # lock released: built (from its finished steps)
    assert after.built == [ENCODERS[1]] and (entry / "DONE").is_file()


def test_publish_pull_by_name_load_embed_and_predict(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sslzoo.hub import load_encoder, load_segmenter
    from sslzoo.hub.registry import load_registry
    from sslzoo.models.encoders import encoder_state_dict, load_encoder_folder

    registry = tmp_path / "registry.json"
    with HubServer() as hub:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "test-token")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
        monkeypatch.setenv("SSLZOO_HUB_REGISTRY", str(registry))
        monkeypatch.setenv("SSLZOO_DEFAULTS_DIR", str(tmp_path / "no-defaults"))
        monkeypatch.delenv("SSLZOO_HUB_NAMESPACE", raising=False)
        monkeypatch.delenv("SSLZOO_ZOO_DIR", raising=False)
        argv = ["zoo", "publish", str(built), "--namespace", "testzoo", "--registry", str(registry)]
        assert main(argv) == 0
        assert set(hub.repos) == {f"testzoo/{n}" for n in (*ENCODERS, *SEGMENTERS)}
        remote = hub.files(f"testzoo/{ENCODERS[0]}")
        assert set(remote) == {"README.md", "config.json", "model.safetensors"}  # no build state uploaded
        entries = {e.name: e for e in load_registry(registry).entries}
        assert set(entries) == {*ENCODERS, *SEGMENTERS}
        assert entries[ENCODERS[0]].revision == hub.repos[f"testzoo/{ENCODERS[0]}"].refs["main"]

        requests = len(hub.requests)
        assert main(argv) == 0  # unchanged entries are not uploaded again
        assert not [r for r in hub.requests[requests:] if r[0] == "POST"]

        encoder, config = load_encoder(ENCODERS[0])  # pulled by name into the empty cache, sha256-checked
        local, _ = load_encoder_folder(built / ENCODERS[0])
        for key, value in encoder_state_dict(local).items():
            assert torch.equal(encoder_state_dict(encoder)[key], value), key
        assert (config.method, config.dataset, config.backbone) == ("simclr", "isic2017", "resnet18")
        with torch.no_grad():
            embedding = encoder.eval()(torch.zeros(1, 3, 64, 64))[-1].mean(dim=(2, 3))
        assert embedding.shape == (1, 512) and torch.isfinite(embedding).all()

        segmenter = load_segmenter(SEGMENTERS[0])
        image, _ = synthetic_lesion(96, seed=99)
        labels = segmenter.predict(image)
        assert labels.shape == (96, 96) and set(np.unique(labels).tolist()) <= {0, 1}
        assert any((tmp_path / "empty-cache").rglob("model.safetensors"))


def test_refresh_cards_never_overwrites_an_embedded_defaults_card(tmp_path, monkeypatch):
    """A zoo entry named like an embedded default (the CPU zoo's DenseCL probe is
    ``densecl-resnet18-monuseg-instance``, the ``nuclei`` default) keeps its card in the zoo folder only."""
    from types import SimpleNamespace

    from sslzoo.hub.defaults import ALIAS_TARGETS
    from sslzoo.zoo import build

    default = ALIAS_TARGETS["nuclei"]
    record = SimpleNamespace(name="densecl-resnet18-monuseg-x", segmenter=default)
    for name in (record.name, default):
        (tmp_path / "zoo" / name).mkdir(parents=True)
        (tmp_path / "zoo" / name / "README.md").write_text(f"zoo card of {name}\n")
    monkeypatch.setattr(build, "finished_entries", lambda out: [record])
    monkeypatch.setattr(build, "reference_of", lambda records, record: None)
    monkeypatch.setattr(build, "write_cards", lambda out, record, reference: None)
    cards = tmp_path / "model_cards"
    cards.mkdir()
    (cards / f"{default}.md").write_text("the packaged default's card\n")

    paths = build.refresh_cards(tmp_path / "zoo", cards_to=cards)

    assert len(paths) == 2  # both zoo cards refreshed in the zoo folder
    assert (cards / f"{record.name}.md").read_text() == "zoo card of densecl-resnet18-monuseg-x\n"
    assert (cards / f"{default}.md").read_text() == "the packaged default's card\n"
