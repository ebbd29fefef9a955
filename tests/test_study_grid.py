"""Study config, grid order, run ids and shards."""

from __future__ import annotations

import pytest

from sslzoo.errors import ConfigError
from sslzoo.study.config import StudyConfig, load_study_config
from sslzoo.study.grid import build_grid, parse_shard, shard_grid


def _config(**overrides) -> StudyConfig:
    raw = {
        "name": "t",
        "backbone": "resnet18",
        "datasets": {"monuseg": {"path": "/nonexistent", "kind": "monuseg", "task": "instance"}},
        "methods": ["random", "simclr", "byol"],
        "rates": [1.0, 0.01, 0.1, 0.64],
        "seeds": [0, 1],
        "pretrain": {"max_steps": 2},
    }
    raw.update(overrides)
    return StudyConfig.model_validate(raw)


def test_grid_is_complete_ordered_and_ids_unique():
    config = _config()
    grid = build_grid(config)
    assert len(grid) == 3 * 4 * 2 * 2
    keys = {(s.method, s.dataset, s.rate, s.frozen, s.seed) for s in grid}
    assert len(keys) == len(grid)
    assert len({s.run_id for s in grid}) == len(grid)
    assert grid == build_grid(_config())  # deterministic
    assert [s.rate for s in grid[:4]] == [0.01, 0.1, 0.64, 1.0]  # rates sorted, innermost
    assert all(s.seed == 0 for s in grid[: len(grid) // 2])  # seed outermost
    assert grid[0].run_id == "random-monuseg-tuned-rate0.01-seed0"
    assert grid[-1].run_id == "byol-monuseg-frozen-rate1-seed1"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_partition_the_grid(n):
    grid = build_grid(_config())
    shards = [shard_grid(grid, (i, n)) for i in range(n)]
    ids = [s.run_id for shard in shards for s in shard]
    assert sorted(ids) == sorted(s.run_id for s in grid)  # union = grid, no run twice
    assert len(ids) == len(set(ids))
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1  # round-robin balance


def test_parse_shard_rejects_bad_text():
    assert parse_shard("2/4") == (2, 4)
    for text in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(text)


def test_config_requires_the_iqc_reference_and_covered_interval():
    with pytest.raises(ValueError, match="reference run"):
        _config(methods=["simclr"])
    with pytest.raises(ValueError, match="do not cover"):
        _config(rates=[0.04, 0.64, 1.0])
    with pytest.raises(ValueError, match="unknown method"):
        _config(methods=["random", "simclrr"])


def test_load_yaml_resolves_relative_paths_and_reports_errors(tmp_path):
    (tmp_path / "data").mkdir()
    good = tmp_path / "s.yaml"
    good.write_text("name: s\ndatasets:\n  monuseg: {path: data, kind: monuseg}\npretrain: {max_epochs: 1}\n")
    config = load_study_config(good)
    assert config.datasets["monuseg"].path == (tmp_path / "data").resolve()
    assert config.rates[-1] == 1.0 and config.frozen == [False, True]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\ndatasets: {}\npretrain: {max_epochs: 1}\nrates: [0.5, 2]\n")
    with pytest.raises(ConfigError, match="rates"):
        load_study_config(bad)
    with pytest.raises(ConfigError, match="no such study config"):
        load_study_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["cpu_monuseg", "paper"])
def test_shipped_configs_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "study" / f"{name}.yaml"
    config = load_study_config(path)
    assert build_grid(config)


def test_cli_grid_and_bad_config(tmp_path, capsys):
    from sslzoo.cli import main

    (tmp_path / "data").mkdir()
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nbackbone: resnet18\ndatasets:\n  d: {path: data}\nmethods: [random, simclr]\n"
        "rates: [0.01, 0.64, 1.0]\nseeds: [0]\npretrain: {max_steps: 1}\n"
    )
    assert main(["study", "grid", str(path), "--shard", "1/2"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines == [s.run_id for s in shard_grid(build_grid(load_study_config(path)), (1, 2))]
    assert len(lines) == 6
    assert main(["study", "grid", str(path), "--shard", "2/2"]) == 2
    assert capsys.readouterr().err.startswith("error: shard 2/2")
    path.write_text("name: s\ndatasets:\n  d: {path: data}\npretrain: {}\n")
    assert main(["study", "run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "max_epochs or max_steps" in capsys.readouterr().err
