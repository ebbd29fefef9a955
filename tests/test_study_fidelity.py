"""The study under the fixed protocol (issue 12): Table II's RQC averaged over datasets in the report, Fig. 5's
runs (frozen, rate nearest 2 %), the fixed watershed and the authors' settings in every run, the pretraining
images the report states, and the scored-image limit of CPU configurations."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sslzoo.study.config import StudyConfig
from sslzoo.study.figures import cam_runs
from sslzoo.study.history import PRETRAIN_HISTORY_COLUMNS
from sslzoo.study.report import pretraining_images_text, write_report
from sslzoo.study.results import record_run, write_csv_atomic
from sslzoo.study.tables import rqc_per_method

RATES = (0.01, 0.1, 0.64, 1.0)  # the report's IQC interval without study.json is [0.01, 0.64]


def _row(method, dataset, rate, frozen, seed, score=0.3):
    state = "frozen" if frozen else "tuned"
    return {"run_id": f"{method}-{dataset}-{state}-rate{rate:g}-seed{seed}", "method": method, "dataset": dataset,
            "task": "instance", "rate": rate, "frozen": frozen, "seed": seed, "score": score,
            "metric": "aji_plus", "aji_plus": score, "train_seconds": 1.0, "epochs": 1, "run_seconds": 2.0,
            "finished_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip


def _history(method, dataset, seconds, epochs=12):
    losses = [5.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.05, 1.0, 1.0, 1.0, 1.0, 1.0][:epochs]
    return [{"method": method, "dataset": dataset, "epoch": e, "loss": loss, "seconds": seconds}
            for e, loss in enumerate(losses)]  # fmt: skip


# ------------------------------------------------------------------------------------------------ (a) RQC
def test_report_gives_one_rqc_per_method_averaged_over_datasets(tmp_path):
    out = tmp_path / "study"
    for dataset in ("isic", "monuseg"):
        for method in ("random", "simclr", "byol"):
            for rate in RATES:
                record_run(out, _row(method, dataset, rate, False, 0))
    # same loss curves, so RQC = ratio of epoch times: isic simclr 1, byol 2; monuseg simclr 3, byol 1
    history = (_history("simclr", "isic", 2.0) + _history("byol", "isic", 4.0)
               + _history("simclr", "monuseg", 6.0) + _history("byol", "monuseg", 2.0))  # fmt: skip
    write_csv_atomic(out / "pretrain.csv", PRETRAIN_HISTORY_COLUMNS, history)
    text = write_report(out).read_text()

    assert "| method | RQC (Table II: mean over datasets) | RQC isic | RQC monuseg | datasets |" in text
    assert "| simclr | 2.00 | 1.00 | 3.00 | 2 |" in text
    assert "| byol | 1.50 | 2.00 | 1.00 | 2 |" in text
    # the per-dataset table stays beside it
    assert "| isic | byol | 2.00 |" in text and "| monuseg | simclr | 3.00 |" in text


def test_rqc_per_method_keeps_methods_measured_on_one_dataset_only():
    rows = [{"dataset": "a", "method": "simclr", "rqc": 1.0}, {"dataset": "a", "method": "densecl", "rqc": 4.0},
            {"dataset": "b", "method": "simclr", "rqc": 2.0}]  # fmt: skip
    entries = {e["method"]: e for e in rqc_per_method(rows)}
    assert entries["simclr"]["rqc"] == pytest.approx(1.5) and entries["simclr"]["per_dataset"] == {"a": 1.0, "b": 2.0}
    assert entries["densecl"]["rqc"] == pytest.approx(4.0) and entries["densecl"]["per_dataset"] == {"a": 4.0}
    assert [e["method"] for e in rqc_per_method(rows)] == ["simclr", "densecl"]  # Table II order
    assert rqc_per_method([]) == []


# ------------------------------------------------------------------------------------------------ (c) Fig. 5 runs
def test_gradcam_runs_are_frozen_at_the_rate_nearest_two_percent():
    rows = [_row(m, "d", r, f, s) for m in ("random", "simclr") for r in (0.01, 0.04, 0.16, 1.0)
            for f in (False, True) for s in (1, 2)]  # fmt: skip
    cam = cam_runs(rows, "d")
    assert cam is not None and cam.frozen and cam.seed == 1
    assert cam.rate == 0.01  # 0.01 and 0.04 are equally far from 0.02 in log scale: the lower one
    assert cam.run_ids == {"random": "random-d-frozen-rate0.01-seed1", "simclr": "simclr-d-frozen-rate0.01-seed1"}

    exact = cam_runs([r for r in rows if r["rate"] != 0.01] + [_row("simclr", "d", 0.02, True, 2)], "d")
    assert exact is not None and exact.rate == 0.02 and exact.seed == 2 and set(exact.run_ids) == {"simclr"}
    assert cam_runs([r for r in rows if r["rate"] > 0.1], "d").rate == 0.16  # type: ignore[union-attr]

    tuned_only = cam_runs([r for r in rows if not r["frozen"]], "d")
    assert tuned_only is not None and not tuned_only.frozen and tuned_only.rate == 0.01
    assert cam_runs(rows, "other") is None


# ------------------------------------------------------------------------------------------------ (d) protocol
@pytest.fixture
def config(tmp_path) -> StudyConfig:
    data = tmp_path / "data"
    data.mkdir()
    return StudyConfig.model_validate({
        "name": "fake", "backbone": "resnet18",
        "datasets": {"monuseg": {"path": str(data), "kind": "monuseg", "task": "instance"}},
        "methods": ["random", "simclr", "densecl"], "rates": [0.02, 0.16, 1.0], "seeds": [0, 1],
        "iqc_lower": 0.02, "iqc_upper": 0.16, "pretrain": {"max_steps": 1},
    })  # fmt: skip


def test_every_study_run_uses_the_fixed_watershed_and_the_authors_settings(config, tmp_path, monkeypatch):
    from sslzoo.study.runner import run_study

    monkeypatch.setattr("sslzoo.study.runner.pretrain_dataset", lambda config, dataset: None)
    seen = []

    def fake_finetune(ft, data, out_dir, **kwargs):
        seen.append(ft)
        return SimpleNamespace(task="instance", metric="aji_plus", score=0.3, scores={"aji_plus": 0.3},
                               train_seconds=1.0, epochs=2, loss_history=[1.0, 0.5], n_train_tiles=3)  # fmt: skip

    def fake_pretrain(pretext, data, out_dir, **kwargs):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "model.safetensors").write_bytes(b"fake")
        (Path(out_dir) / "config.json").write_text(json.dumps({"training": {"fit_seconds": 1.0}}))

    out = tmp_path / "study"
    run_study(config, out, finetune_fn=fake_finetune, pretrain_fn=fake_pretrain, progress=False)
    assert len(seen) == 3 * 3 * 2 * 2
    assert {ft.watershed for ft in seen} == {"fixed"}  # one post-processing for every method
    assert {ft.frozen_bn for ft in seen} == {"train"} and {ft.val_fraction for ft in seen} == {0.2}
    assert {ft.decoder_channels for ft in seen} == {(512, 256, 128, 64, 32)}
    assert {ft.batch_size for ft in seen} == {4} and {ft.patience for ft in seen} == {40}
    assert {ft.init for ft in seen if "densecl" in ft.init} == {
        str(tmp_path / "study/pretrain/densecl-resnet18-monuseg")
    }

    text = write_report(out).read_text()
    assert "the authors' fixed watershed for every method and run (sigma 1, foreground 0.09, seeds 0.4" in text
    assert "a frozen encoder's batch norm in train mode" in text and "[512, 256, 128, 64, 32]" in text
    assert "val_fraction 0.2 (of each rate subset, drawn inside it)" in text


def test_report_says_when_the_watershed_is_tuned_per_run(config, tmp_path):
    from sslzoo.study.report import config_section

    tuned = config.model_copy(update={"finetune": config.finetune.model_copy(update={"watershed": "tuned"})})
    assert "watershed tuned per run on its training tiles" in config_section(tuned)
    assert "fixed watershed" not in config_section(tuned)


# ------------------------------------------------------------------------------------------------ (e) images
def _simple_dataset(root: Path) -> Path:
    """``simple`` layout: train 4 and val 2 labelled images, unlabeled 3; 32 px."""
    from sslzoo.data.io import write_image, write_label_map

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2), ("unlabeled", 3)):
        for i in range(n):
            write_image(root / split / "images" / f"{split}{i}.png", rng.integers(0, 255, (32, 32, 3), np.uint8))
            if split != "unlabeled":
                labels = np.zeros((32, 32), np.int32)
                labels[4:12, 4:12] = 1
                write_label_map(root / split / "masks" / f"{split}{i}.png", labels)
    return root


def test_report_states_which_images_pretraining_used(tmp_path):
    from sslzoo.study.runner import pretrain_images

    data = _simple_dataset(tmp_path / "data")
    base = {"name": "img", "backbone": "resnet18", "methods": ["random", "simclr"], "rates": list(RATES),
            "frozen": [False], "seeds": [0], "pretrain": {"max_steps": 1}}  # fmt: skip
    config = StudyConfig.model_validate({**base, "datasets": {"d": {"path": str(data)}}})
    assert len(pretrain_images(config, "d")) == 7  # train 4 + unlabeled 3; the scored val split is left out
    text = pretraining_images_text(config, "d")
    assert text.startswith("7 images (train 4, unlabeled 3); left out: the 2 scored images (val 2; split 'val')")
    assert "the authors pretrained on the training split only; this study also uses unlabeled" in text
    assert "`datasets.d.pretrain_skip: [unlabeled]` pretrains as the authors" in text

    authors = StudyConfig.model_validate(
        {**base, "datasets": {"d": {"path": str(data), "pretrain_skip": ["unlabeled"]}}}
    )
    assert [Path(p).parent.parent.name for p in pretrain_images(authors, "d")] == ["train"] * 4
    assert pretraining_images_text(authors, "d").startswith("4 images (train 4); left out: the 2 scored")
    assert "as this study (`pretrain_skip: [unlabeled]`)" in pretraining_images_text(authors, "d")

    missing = StudyConfig.model_validate({**base, "datasets": {"d": {"path": str(tmp_path / "gone")}}})
    assert "not found here" in pretraining_images_text(missing, "d")

    out = tmp_path / "study"
    for rate in RATES:
        record_run(out, _row("random", "d", rate, False, 0))
    (out / "study.json").write_text(config.model_dump_json())
    assert "- pretraining images of `d`: 7 images (train 4, unlabeled 3)" in write_report(out).read_text()


def test_eval_images_scores_an_evenly_spread_part_of_the_scored_split():
    from sslzoo.downstream.data import FinetuneData, TrainEvalSplit
    from sslzoo.downstream.finetune import FinetuneConfig, limit_scored

    scored = [SimpleNamespace(id=f"img{i}") for i in range(6)]
    prepared = FinetuneData("instance", TrainEvalSplit([], scored, "hold-out"), None, None, None)  # type: ignore[arg-type]
    three = limit_scored(prepared, 3)
    assert [s.id for s in three.split.eval] == ["img0", "img2", "img5"]
    assert three.split.rule == "hold-out; 3 of its 6 images scored"
    assert prepared.split.eval == scored  # the input is left alone
    assert limit_scored(prepared, None) is prepared and limit_scored(prepared, 6) is prepared
    with pytest.raises(Exception, match="eval_images must be >= 1"):
        FinetuneConfig(eval_images=0)
    with pytest.raises(Exception, match="tile_overlap must be >= 0"):
        FinetuneConfig(tile_overlap=-1)


# ------------------------------------------------------------------------------------------------ one scale
def test_dataset_resize_gives_pretraining_and_fine_tuning_one_scale(tmp_path):
    """``datasets.<name>.resize`` squeezes whole images in pretraining (each image one view item) and in
    fine-tuning (``input_size``); without it both tile at native size. Instance datasets refuse it."""
    import numpy as np
    from PIL import Image

    from sslzoo.study.grid import RunSpec
    from sslzoo.study.runner import finetune_config, pretrain_dataset

    root = tmp_path / "lesions"
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            rng = np.random.default_rng(i)
            for sub, arr in (("images", rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)),
                             ("masks", (rng.random((150, 200)) > 0.5).astype(np.uint8))):  # fmt: skip
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / split / sub / f"{split}{i}.png")

    def study(resize: int | None) -> StudyConfig:
        return StudyConfig.model_validate({
            "name": "scale", "backbone": "resnet18", "methods": ["random", "simclr"],
            "datasets": {"lesions": {"path": str(root), "task": "semantic", "resize": resize}},
            "pretrain": {"max_steps": 1, "input_size": 64}, "finetune": {"tile_size": 64},
        })  # fmt: skip

    squeezed, native = study(64), study(None)
    assert len(pretrain_dataset(squeezed, "lesions")) == 3  # the 3 training images, one 64 px item each
    assert len(pretrain_dataset(native, "lesions")) > 3  # 200 x 150 images tiled into 64 px views
    spec = RunSpec(method="simclr", dataset="lesions", rate=1.0, frozen=True, seed=0, task="semantic")
    assert finetune_config(squeezed, spec, "random").input_size == 64
    assert finetune_config(native, spec, "random").input_size is None
    with pytest.raises(ValueError, match="only semantic datasets"):
        StudyConfig.model_validate({
            "name": "bad", "pretrain": {"max_steps": 1},
            "datasets": {"m": {"path": str(root), "kind": "monuseg", "resize": 64}},
        })  # fmt: skip
