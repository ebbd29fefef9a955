"""The study runner with fake pretrain / finetune: caching, resume after a crash, shards, runs.csv, iqc.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sslzoo.study.config import StudyConfig
from sslzoo.study.grid import build_grid
from sslzoo.study.results import RUN_COLUMNS, iqc_table, read_runs
from sslzoo.study.runner import run_study


class Crash(RuntimeError):
    pass


class FakeFinetune:
    """Records calls; the score depends on (method, rate, frozen, seed); raises Crash on call number ``crash_at``."""

    def __init__(self, crash_at: int | None = None):
        self.calls: list[str] = []
        self.crash_at = crash_at

    def __call__(self, config, data, out_dir, **kwargs):
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise Crash(f"killed at run {self.crash_at}")
        self.calls.append(Path(out_dir).name)
        bonus = 0.0 if config.init == "random" else 0.05
        score = min(1.0, 0.4 + 0.1 * np.log10(100 * config.rate) + bonus - 0.02 * config.frozen + 0.01 * config.seed)
        scores = {"aji": score - 0.05, "aji_plus": score, "pq": score - 0.1, "dice": score + 0.1}
        return SimpleNamespace(
            task="instance",
            metric="aji_plus",
            score=score,
            scores=scores,
            train_seconds=1.5,
            epochs=3,
            loss_history=[1.0, 0.5, 0.4],
            n_train_tiles=7,
        )


class FakePretrain:
    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, config, data, out_dir, **kwargs):
        self.calls.append(config.method)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"fake")
        (out / "config.json").write_text(json.dumps({"training": {"fit_seconds": 12.5}}))
        return out


@pytest.fixture
def config(tmp_path) -> StudyConfig:
    data = tmp_path / "data"
    data.mkdir()
    return StudyConfig.model_validate(
        {
            "name": "fake",
            "backbone": "resnet18",
            "datasets": {"monuseg": {"path": str(data), "kind": "monuseg", "task": "instance"}},
            "methods": ["random", "simclr"],
            "rates": [0.01, 0.1, 0.64, 1.0],
            "seeds": [0, 1],
            "pretrain": {"max_steps": 1},
        }
    )


@pytest.fixture(autouse=True)
def _no_real_pretrain_data(monkeypatch):
    monkeypatch.setattr("sslzoo.study.runner.pretrain_dataset", lambda config, dataset: None)


def _csv_ids(out: Path) -> list[str]:
    with (out / "runs.csv").open() as handle:
        return [row["run_id"] for row in csv.DictReader(handle)]


def test_killed_study_resumes_without_redoing_or_losing_runs(config, tmp_path):
    out = tmp_path / "study"
    grid_ids = [s.run_id for s in build_grid(config)]
    pretrain = FakePretrain()
    first = FakeFinetune(crash_at=5)
    with pytest.raises(Crash):
        run_study(config, out, finetune_fn=first, pretrain_fn=pretrain, progress=False)
    assert _csv_ids(out) == grid_ids[:5]

    second = FakeFinetune()
    status = run_study(config, out, finetune_fn=second, pretrain_fn=pretrain, progress=False)
    assert status.skipped == 5 and len(status.ran) == len(grid_ids) - 5
    executed = first.calls + second.calls
    assert sorted(executed) == sorted(grid_ids)  # every run exactly once over both attempts
    assert len(executed) == len(set(executed))
    ids = _csv_ids(out)
    assert sorted(ids) == sorted(grid_ids) and len(ids) == len(set(ids))
    assert pretrain.calls == ["simclr"]  # pretrained once, then cached

    third = FakeFinetune()
    assert run_study(config, out, finetune_fn=third, pretrain_fn=pretrain, progress=False).ran == []
    assert third.calls == [] and pretrain.calls == ["simclr"]

    with (out / "runs.csv").open() as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == RUN_COLUMNS
    rows = {r["run_id"]: r for r in read_runs(out)}
    simclr = rows["simclr-monuseg-frozen-rate0.1-seed1"]
    assert simclr["pretrain_seconds"] == 12.5 and simclr["frozen"] is True and simclr["seed"] == 1
    assert simclr["aji_plus"] == pytest.approx(simclr["score"]) and simclr["metric"] == "aji_plus"
    assert (
        rows["random-monuseg-tuned-rate1-seed0"]["pretrain_seconds"]
        != rows["random-monuseg-tuned-rate1-seed0"]["pretrain_seconds"]
    )  # NaN: baselines are not pretrained


def test_shards_share_one_folder(config, tmp_path):
    out = tmp_path / "study"
    pretrain = FakePretrain()
    calls = []
    for i in range(3):
        fake = FakeFinetune()
        run_study(config, out, shard=(i, 3), finetune_fn=fake, pretrain_fn=pretrain, progress=False)
        calls += fake.calls
    grid_ids = sorted(s.run_id for s in build_grid(config))
    assert sorted(calls) == grid_ids
    assert sorted(_csv_ids(out)) == grid_ids


def test_other_config_in_same_folder_is_refused(config, tmp_path):
    from sslzoo.errors import ConfigError

    out = tmp_path / "study"
    run_study(config, out, finetune_fn=FakeFinetune(), pretrain_fn=FakePretrain(), progress=False, shard=(0, 50))
    changed = config.model_copy(update={"seeds": [0, 1, 2]})
    with pytest.raises(ConfigError, match="other settings"):
        run_study(changed, out, finetune_fn=FakeFinetune(), pretrain_fn=FakePretrain(), progress=False)


def _row(method, frozen, seed, rate, score):
    return {
        "run_id": f"{method}-{frozen}-{seed}-{rate}",
        "method": method,
        "dataset": "d",
        "frozen": frozen,
        "seed": seed,
        "rate": rate,
        "score": score,
        "metric": "dice",
    }


def test_iqc_csv_follows_from_runs_by_hand():
    # random, fine-tuned: seed 0 curve 0.2, 0.4, 0.6 at 0.01, 0.32, 0.64; full score 0.8 (seed 0) and 0.6 (seed 1)
    rows = []
    curves = {
        ("random", False, 0): [0.2, 0.4, 0.6, 0.8],
        ("random", False, 1): [0.1, 0.3, 0.5, 0.6],
        ("ssl", False, 0): [0.5, 0.6, 0.7, 0.8],
        ("ssl", False, 1): [0.6, 0.6, 0.6, 0.7],
        ("ssl", True, 0): [0.3, 0.3, 0.3, 0.3],
    }
    rates = [0.01, 0.32, 0.64, 1.0]
    for (method, frozen, seed), scores in curves.items():
        rows += [_row(method, frozen, seed, r, s) for r, s in zip(rates, scores, strict=True)]
    rows.append(_row("ssl", True, 1, 0.01, 0.9))  # incomplete curve: left out
    reference = (0.8 + 0.6) / 2

    def by_hand(s):  # trapezoid over 0.01..0.32..0.64
        return ((s[0] + s[1]) / 2 * 0.31 + (s[1] + s[2]) / 2 * 0.32) / (reference * 0.63)

    table = {(e["method"], e["frozen"]): e for e in iqc_table(rows, 0.01, 0.64)}
    assert set(table) == {("random", False), ("ssl", False), ("ssl", True)}
    expected_random = [by_hand(curves[("random", False, s)]) for s in (0, 1)]
    expected_ssl = [by_hand(curves[("ssl", False, s)]) for s in (0, 1)]
    assert table[("random", False)]["iqc_mean"] == pytest.approx(np.mean(expected_random))
    assert table[("ssl", False)]["iqc_mean"] == pytest.approx(np.mean(expected_ssl))
    assert table[("ssl", False)]["iqc_std"] == pytest.approx(np.std(expected_ssl, ddof=1))
    assert table[("ssl", True)]["n_seeds"] == 1
    from scipy.stats import ttest_ind

    p = ttest_ind(expected_ssl, expected_random, alternative="greater").pvalue
    assert table[("ssl", False)]["p_value"] == pytest.approx(p)
    assert table[("random", False)]["p_value"] is None
    assert table[("ssl", False)]["reference"] == pytest.approx(reference)
    assert table[("ssl", False)]["metric"] == "dice"


def test_iqc_csv_written_from_runs_csv(config, tmp_path):
    out = tmp_path / "study"
    run_study(config, out, finetune_fn=FakeFinetune(), pretrain_fn=FakePretrain(), progress=False)
    with (out / "iqc.csv").open() as handle:
        written = list(csv.DictReader(handle))
    expected = iqc_table(read_runs(out), config.iqc_lower, config.iqc_upper)
    assert len(written) == len(expected) == 4  # (random, simclr) x (tuned, frozen)
    for w, e in zip(written, expected, strict=True):
        assert (w["method"], w["frozen"]) == (e["method"], str(e["frozen"]).lower())
        assert float(w["iqc_mean"]) == pytest.approx(e["iqc_mean"], rel=1e-5)
        assert int(w["n_seeds"]) == 2
    simclr = next(w for w in written if w["method"] == "simclr" and w["frozen"] == "false")
    assert float(simclr["p_value"]) < 0.05  # the fake adds 0.05 to SSL scores at every rate


def test_unresumable_checkpoint_restarts_the_run_once(config, tmp_path):
    out = tmp_path / "study"
    first_id = build_grid(config)[0].run_id
    stale = out / "runs" / first_id / "checkpoints" / "last.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"saved mid-epoch by a killed process")

    class RejectsStaleCheckpoint(FakeFinetune):
        def __call__(self, config, data, out_dir, **kwargs):
            if (Path(out_dir) / "checkpoints" / "last.ckpt").exists():
                raise RuntimeError("cannot resume this checkpoint")
            return super().__call__(config, data, out_dir, **kwargs)

    fake = RejectsStaleCheckpoint()
    run_study(config, out, finetune_fn=fake, pretrain_fn=FakePretrain(), progress=False)
    assert fake.calls.count(first_id) == 1 and not stale.exists()
    assert sorted(_csv_ids(out)) == sorted(s.run_id for s in build_grid(config))


def test_failures_without_a_checkpoint_propagate(config, tmp_path):
    def broken(config, data, out_dir, **kwargs):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        run_study(config, tmp_path / "study", finetune_fn=broken, pretrain_fn=FakePretrain(), progress=False)
    assert read_runs(tmp_path / "study") == []
