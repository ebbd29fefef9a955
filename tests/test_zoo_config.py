"""The zoo config, entry order and sharding, the gain test and the zoo-folder listing (fast, no training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sslzoo.errors import ConfigError
from sslzoo.hub.zoo_folder import find_in_zoo_dirs, zoo_folder_entries
from sslzoo.zoo.config import ZooConfig, expand_path, load_zoo_config
from sslzoo.zoo.probe import gain_over_reference
from sslzoo.zoo.records import build_entries, parse_shard, shard_entries

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(**changes: object) -> ZooConfig:
    raw: dict[str, object] = {
        "name": "t",
        "backbone": "resnet18",
        "methods": ["simclr", "byol"],
        "datasets": {"isic": {"path": "/x", "kind": "isic2017"}, "mon": {"path": "/y", "kind": "monuseg"}},
        "pretrain": {"minutes": 2},
    }
    raw.update(changes)
    return ZooConfig.model_validate(raw)


def test_shipped_configs_load_with_every_method_and_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLZOO_SHARED_DATA", "/data/shared")
    cpu = load_zoo_config(REPO_ROOT / "configs" / "zoo" / "cpu.yaml")
    assert cpu.backbone == "resnet18" and len(cpu.methods) == 7 and len(build_entries(cpu)) == 16
    assert cpu.datasets["monuseg"].path == Path("/data/shared/monuseg")
    assert cpu.pretrain_for("isic2017").resize == 128 and cpu.pretrain_for("monuseg").resize is None
    assert cpu.nqc_for("monuseg").images == "all" and cpu.nqc_for("isic2017").images == "heldout"
    assert cpu.probe.seeds == [0, 1, 2]
    paper = load_zoo_config(REPO_ROOT / "configs" / "zoo" / "paper.yaml")
    assert paper.backbone == "resnet50" and paper.pretrain.max_epochs == 200 and paper.pretrain.lr == 1e-3
    monkeypatch.delenv("SSLZOO_SHARED_DATA")
    relative = load_zoo_config(REPO_ROOT / "configs" / "zoo" / "cpu.yaml")
    assert relative.datasets["isic2017"].path == (REPO_ROOT.parent / "shared" / "data" / "isic2017").resolve()


def test_budgets_are_exclusive_and_overrides_are_checked_early() -> None:
    with pytest.raises(ValueError, match="exactly one pretraining budget"):
        _config(pretrain={"minutes": 2, "max_steps": 10})
    with pytest.raises(ValueError, match="exactly one pretraining budget"):
        _config(pretrain={"batch_size": 8})
    config = _config(
        datasets={"isic": {"path": "/x", "kind": "isic2017", "pretrain": {"max_steps": 7}, "probe": {"steps": 3}}}
    )
    assert config.pretrain_for("isic").budget == "7 steps" and config.pretrain.budget == "2 min"
    assert config.probe_for("isic").steps == 3 and config.probe.steps == 100
    with pytest.raises(ValueError, match=r"datasets\.isic\.probe"):
        _config(datasets={"isic": {"path": "/x", "kind": "isic2017", "probe": {"rate": 2.0}}})
    with pytest.raises(ValueError, match="unknown pretext method"):
        _config(methods=["random"])
    with pytest.raises(ValueError, match="same kind"):
        _config(datasets={"a": {"path": "/x", "kind": "isic2017"}, "b": {"path": "/y", "kind": "isic2017"}})


def test_entries_put_the_references_first_and_shards_partition_them() -> None:
    entries = build_entries(_config())
    names = [e.name for e in entries]
    assert names[:2] == ["random-resnet18-isic2017", "random-resnet18-monuseg"]
    assert names[2:] == [
        "simclr-resnet18-isic2017",
        "simclr-resnet18-monuseg",
        "byol-resnet18-isic2017",
        "byol-resnet18-monuseg",
    ]
    assert entries[3].segmenter_name == "simclr-resnet18-monuseg-instance"
    shards = [shard_entries(entries, (i, 4)) for i in range(4)]
    assert sorted(e.name for s in shards for e in s) == sorted(names)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_gain_is_one_tailed() -> None:
    gain, p = gain_over_reference([0.80, 0.81, 0.82], [0.60, 0.61, 0.62])
    assert gain == pytest.approx(0.2) and p < 1e-4
    worse, p_worse = gain_over_reference([0.60, 0.61, 0.62], [0.80, 0.81, 0.82])
    assert worse == pytest.approx(-0.2) and p_worse > 0.999  # H0 (method <= random) is not rejected
    same, p_same = gain_over_reference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same == 0.0 and p_same == pytest.approx(0.5)
    assert math.isnan(gain_over_reference([0.5], [0.4, 0.5])[1])


def test_expand_path_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZOO_TEST_VAR", raising=False)
    assert expand_path("${ZOO_TEST_VAR:-../data}/isic") == "../data/isic"
    monkeypatch.setenv("ZOO_TEST_VAR", "/d")
    assert expand_path("${ZOO_TEST_VAR:-../data}/isic") == "/d/isic" and expand_path("$ZOO_TEST_VAR/x") == "/d/x"


def test_zoo_folder_lists_finished_entries_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def entry(name: str, *files: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for f in files:
            (folder / f).write_text("{}")
        return folder

    done = entry("simclr-resnet18-monuseg", "model.safetensors", "config.json", "entry.json", "DONE")
    segmenter = entry("simclr-resnet18-monuseg-instance", "model.safetensors", "config.json", "segmenter.json")
    entry("byol-resnet18-monuseg", "model.safetensors", "config.json", "entry.json")  # no DONE: unfinished
    entry("random-resnet18-monuseg", "entry.json", "DONE")  # the reference: no weights
    entry("not-a-zoo-name", "model.safetensors", "config.json")
    assert zoo_folder_entries(tmp_path) == {done.name: done, segmenter.name: segmenter}
    monkeypatch.setenv("SSLZOO_ZOO_DIR", f"{tmp_path / 'missing'}:{tmp_path}")
    assert set(zoo_folder_entries()) == {done.name, segmenter.name}
    assert find_in_zoo_dirs(done.name) == done and find_in_zoo_dirs("byol-resnet18-monuseg") is None
    monkeypatch.delenv("SSLZOO_ZOO_DIR")
    assert zoo_folder_entries() == {}


def test_a_failing_entry_is_reported_and_the_build_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sslzoo.zoo import build

    calls: list[str] = []

    def broken(config: object, entry: build.EntrySpec, out: Path, **kwargs: object) -> None:
        calls.append(entry.name)
        raise RuntimeError(f"boom {entry.name}")

    monkeypatch.setattr(build, "build_entry", broken)
    lines: list[str] = []
    summary = build.build_zoo(_config(), tmp_path / "zoo", shard=(1, 2), report=lines.append)
    assert calls == ["random-resnet18-monuseg", "simclr-resnet18-monuseg", "byol-resnet18-monuseg"]
    assert set(summary.failed) == set(calls) and summary.built == []
    assert "boom" in (tmp_path / "zoo" / calls[0] / "work" / "error.txt").read_text()
    assert any("FAILED" in line for line in lines)
    with pytest.raises(RuntimeError, match="boom"):
        build.build_zoo(_config(), tmp_path / "zoo", keep_going=False, report=lines.append)
