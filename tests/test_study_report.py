"""REPORT.md and figures from a synthetic runs.csv."""

from __future__ import annotations

import math

import pytest

from sslzoo.errors import DataError
from sslzoo.study.history import read_lightning_history, record_pretrain_history, rqc_rows
from sslzoo.study.report import write_report
from sslzoo.study.results import record_run


def _synthetic_study(out, methods=("random", "simclr"), seeds=(0, 1)):
    for method in methods:
        for frozen in (False, True):
            for seed in seeds:
                for rate in (0.01, 0.1, 0.64, 1.0):
                    score = 0.3 + 0.3 * rate + (0.1 if method != "random" else 0.0) - 0.05 * frozen + 0.01 * seed
                    state = "frozen" if frozen else "tuned"
                    record_run(out, {
                        "run_id": f"{method}-d-{state}-rate{rate:g}-seed{seed}", "method": method, "dataset": "d",
                        "task": "semantic", "rate": rate, "frozen": frozen, "seed": seed, "score": score,
                        "metric": "dice", "dice": score, "train_seconds": 10.0, "epochs": 3,
                        "converged_epoch": None, "pretrain_seconds": None if method == "random" else 30.0,
                        "finished_at": "2026-01-01T00:00:00+00:00", "run_seconds": 20.0 + seed,
                    })  # fmt: skip


def test_report_renders_tables_and_pngs(tmp_path):
    out = tmp_path / "study"
    _synthetic_study(out)
    (out / "notes.md").write_text("Hand-written discussion.")
    report = write_report(out)
    text = report.read_text()
    assert "Table I style" in text and "Table IV style" in text
    assert "| simclr |" in text and "| 1 % |" in text and "| 64 % |" in text
    assert "Hand-written discussion." in text
    for state in ("tuned", "frozen"):
        png = out / "figures" / f"curves_d_{state}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/curves_d_{state}.png" in text
    # scores at 1 %: random tuned seeds 0.303, 0.313 -> mean 0.308
    assert "0.308 ± 0.007" in text
    assert (out / "iqc.csv").is_file()
    assert "p (frozen)" in text


def test_report_without_runs_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="sslzoo study run"):
        write_report(tmp_path)


def test_pretrain_history_and_rqc(tmp_path):
    folder = tmp_path / "enc" / "logs" / "version_0"
    folder.mkdir(parents=True)
    losses = [5.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.05, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    lines = ["epoch,step,train/loss_step,train/loss_epoch,time/epoch_seconds"]
    for e, loss in enumerate(losses):
        lines.append(f"{e},{e * 2},{loss + 0.1},,")
        lines.append(f"{e},{e * 2 + 1},,{loss},2.0")
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    got_losses, seconds = read_lightning_history(tmp_path / "enc")
    assert got_losses == losses and seconds == [2.0] * len(losses)

    out = tmp_path / "study"
    out.mkdir()
    record_pretrain_history(out, "simclr", "d", tmp_path / "enc")
    record_pretrain_history(out, "simclr", "d", tmp_path / "enc")  # replaces, does not duplicate
    from sslzoo.study.history import read_pretrain_history

    history = read_pretrain_history(out)
    assert len(history) == len(losses)
    slow = [dict(h, method="byol", seconds=4.0) for h in history]
    rows = {r["method"]: r for r in rqc_rows(history + slow)}
    assert rows["simclr"]["rqc"] == pytest.approx(1.0)
    assert rows["byol"]["rqc"] == pytest.approx(2.0)
    assert rows["simclr"]["converged"] and math.isclose(rows["simclr"]["time_s"], 2.0 * rows["simclr"]["epochs"])
