"""The real pipeline end to end on the bundled MoNuSeg sample: pretrain, fine-tune, runs.csv, iqc.csv, report."""

from __future__ import annotations

import pytest

from sslzoo.study.config import StudyConfig
from sslzoo.study.results import read_runs
from sslzoo.study.runner import run_study


def _tiny_nuclei_dataset(root, n=4, size=128):
    """``train/images`` + ``train/masks`` of ``n`` synthetic H&E-like nuclei images (one tile each)."""
    from sslzoo.data.io import write_image, write_label_map
    from sslzoo.data.synthetic import synthetic_nuclei

    for i in range(n):
        image, labels = synthetic_nuclei(size=size, seed=i)
        write_image(root / "train" / "images" / f"img{i}.png", image)
        write_label_map(root / "train" / "masks" / f"img{i}.png", labels)
    return root


@pytest.mark.slow
def test_tiny_real_study(tmp_path):
    from sslzoo.downstream.finetune import finetune
    from sslzoo.study.report import write_report

    data = _tiny_nuclei_dataset(tmp_path / "data")

    config = StudyConfig.model_validate({
        "name": "tiny",
        "backbone": "resnet18",
        "datasets": {"nuclei": {"path": str(data), "task": "instance"}},
        "methods": ["random", "simclr"],
        "rates": [0.5, 1.0],
        "frozen": [False],
        "seeds": [0],
        "iqc_lower": 0.5,
        "iqc_upper": 1.0,
        "pretrain": {"max_steps": 1, "batch_size": 2, "input_size": 64, "max_tiles": 4, "workers": 0},
        "finetune": {"epochs": 1, "max_steps": 1, "batch_size": 4, "tile_size": 128, "tiles_per_image": 1,
                     "val_fraction": 0.0, "workers": 0},
    })  # fmt: skip
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[2])
        return finetune(*args, **kwargs)

    out, work = tmp_path / "out", tmp_path / "work"
    run_study(config, out, work_dir=work, finetune_fn=counted, accelerator="cpu", devices=1, progress=False)
    rows = {r["run_id"]: r for r in read_runs(out)}
    assert len(rows) == len(calls) == 4
    for row in rows.values():
        assert row["task"] == "instance" and row["metric"] == "aji_plus"
        assert 0.0 <= row["score"] <= 1.0 and row["score"] == pytest.approx(row["aji_plus"])
    assert rows["simclr-nuclei-tuned-rate1-seed0"]["pretrain_seconds"] > 0
    assert (work / "pretrain" / "simclr-resnet18-nuclei" / "model.safetensors").is_file()
    assert not (work / "runs" / "random-nuclei-tuned-rate1-seed0" / "checkpoints").exists()
    assert (work / "runs" / "random-nuclei-tuned-rate1-seed0" / "result.json").is_file()

    run_study(config, out, work_dir=work, finetune_fn=counted, accelerator="cpu", devices=1, progress=False)
    assert len(calls) == 4  # nothing redone
    text = write_report(out).read_text()
    assert "simclr" in text and "IQC" in text
