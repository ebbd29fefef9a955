"""Representation figures of a study report (CKA bars, neighbour grid + NQC, Grad-CAM) on a tiny fake study."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch

from sslzoo.study.config import StudyConfig
from sslzoo.study.figures import CKA_FILE, FigureSettings, representation_figures
from sslzoo.study.report import write_report
from sslzoo.study.results import record_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IDS = [f"img{i}" for i in range(8)]
HELD_OUT = IDS[-4:]
SMALL = FigureSettings(tiles=16, batch_size=8, crop_size=64, queries=2, columns=3)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dataset(root):
    """8 synthetic nuclei images of 128 px (``train/images``, ``train/masks``) with two classes in labels.csv."""
    from sslzoo.data.io import write_image, write_label_map
    from sslzoo.data.synthetic import synthetic_nuclei

    rows = ["id,split,class"]
    for i, image_id in enumerate(IDS):
        image, labels = synthetic_nuclei(size=128, seed=i)
        write_image(root / "train" / "images" / f"{image_id}.png", image)
        write_label_map(root / "train" / "masks" / f"{image_id}.png", labels)
        rows.append(f"{image_id},train,{'a' if i % 2 else 'b'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _segmenter(model, run_dir, data):
    from sslzoo.models.segmenter import Segmenter, SegmenterConfig

    training = {"eval_ids": HELD_OUT, "data": str(data)}
    config = SegmenterConfig(task="instance", backbone="resnet18", tile_size=64, training=training)
    Segmenter(model, config).save_pretrained(run_dir)


def _fake_study(tmp_path):
    """Study folder, work folder. Table III's supervised reference S (random, fine-tuned, rate 1) is the seeded
    random init with ``layer3`` perturbed; simclr's PRETRAINED encoder is a copy of S's encoder, while simclr's own
    fine-tuned run has ``layer1`` perturbed (so comparing with its own run would not give 1 at Conv1). Frozen runs
    at rate 0.5 (the rate nearest to 2 %) are the Grad-CAM runs."""
    from sslzoo.hub import load_encoder
    from sslzoo.models.encoders import EncoderConfig, save_encoder
    from sslzoo.models.unet import build_unet

    data = _dataset(tmp_path / "data")
    out, work = tmp_path / "out", tmp_path / "work"
    config = StudyConfig.model_validate({
        "name": "fake", "backbone": "resnet18", "datasets": {"d": {"path": str(data), "task": "instance"}},
        "methods": ["random", "simclr"], "rates": [0.5, 1.0], "frozen": [False, True], "seeds": [0],
        "iqc_lower": 0.5, "iqc_upper": 1.0, "pretrain": {"max_steps": 1},
    })  # fmt: skip
    out.mkdir()
    (out / "study.json").write_text(config.model_dump_json(indent=2))
    torch.manual_seed(0)  # as finetune's seed_everything(0) before load_encoder("random") and build_unet
    reference = build_unet(load_encoder("random", "resnet18")[0], "resnet18", "instance")
    with torch.no_grad():
        for p in reference.encoder.layer3.parameters():
            p.add_(0.5 * torch.randn_like(p))
    _segmenter(reference, work / "runs" / "random-d-tuned-rate1-seed0", data)
    folder = save_encoder(copy.deepcopy(reference.encoder), work / "pretrain" / "simclr-resnet18-d",
                          EncoderConfig(backbone="resnet18", method="simclr", dataset="d"))  # fmt: skip
    simclr = build_unet(load_encoder(folder)[0], "resnet18", "instance")
    with torch.no_grad():
        for p in simclr.encoder.layer1.parameters():
            p.add_(0.5 * torch.randn_like(p))
    _segmenter(simclr, work / "runs" / "simclr-d-tuned-rate1-seed0", data)
    for method in ("random", "simclr"):
        torch.manual_seed(0)
        start = load_encoder("random", "resnet18")[0] if method == "random" else load_encoder(folder)[0]
        _segmenter(build_unet(start, "resnet18", "instance", frozen=True),
                   work / "runs" / f"{method}-d-frozen-rate0.5-seed0", data)  # fmt: skip
    for method in ("random", "simclr"):
        for frozen in (False, True):
            for rate in (0.5, 1.0):
                state = "frozen" if frozen else "tuned"
                record_run(out, {
                    "run_id": f"{method}-d-{state}-rate{rate:g}-seed0", "method": method, "dataset": "d",
                    "task": "instance", "rate": rate, "frozen": frozen, "seed": 0, "score": 0.2 + 0.1 * rate,
                    "metric": "aji_plus", "aji_plus": 0.2 + 0.1 * rate, "train_seconds": 1.0, "epochs": 1,
                    "run_seconds": 2.0, "finished_at": "2026-01-01T00:00:00+00:00",
                })  # fmt: skip
    return out, work


def test_report_with_work_folder_writes_cka_neighbours_and_gradcam(tmp_path):
    out, work = _fake_study(tmp_path)
    text = write_report(out, work_dir=work).read_text()

    for name in ("cka_d.png", "neighbours_d.png", "gradcam_d.png"):
        png = out / "figures" / name
        assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC, name
        assert f"](figures/{name})" in text
    assert "skipped" not in text.lower()

    with (out / CKA_FILE).open(newline="") as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"random", "simclr"} and rows["simclr"]["n_tiles"] == "16"
    assert {r["reference_run"] for r in rows.values()} == {"random-d-tuned-rate1-seed0"}  # ONE reference
    stages = ("Conv1", "Conv2", "Conv3", "Conv4")
    for row in rows.values():
        assert all(-1e-6 <= float(row[s]) <= 1 + 1e-6 for s in stages)
    # Table III: simclr's pretrained encoder IS the reference's encoder -> 1 everywhere (against its own
    # fine-tuned run, whose layer1 moved, Conv1 would be below 1)
    assert all(float(rows["simclr"][s]) == pytest.approx(1.0, abs=1e-9) for s in stages)
    # the random init vs S (that init with layer3 perturbed): Conv1 = layer1 and Conv2 = layer2 unchanged,
    # Conv3 = layer3 and Conv4 = layer4 (after the perturbation) differ -- the stages are layer1..layer4
    assert all(float(rows["random"][s]) == pytest.approx(1.0, abs=1e-9) for s in stages[:2])
    assert float(rows["random"]["Conv3"]) < 0.99 and float(rows["random"]["Conv4"]) < 0.99
    assert "| simclr | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" in text
    assert "ONE network trained supervised" in text and "Conv1..Conv4 = layer1..layer4" in text
    assert "Table III reference S: `random-d-tuned-rate1-seed0`" in text
    # NQC on the scored split only (the fixed hold-out of split_train_eval), not on every labelled image
    from sslzoo.data.datasets import open_dataset
    from sslzoo.downstream.data import split_train_eval

    scored = split_train_eval(open_dataset(tmp_path / "data")).eval
    counts = {c: sum(IDS.index(s.id) % 2 == (c == "a") for s in scored) for c in ("a", "b")}
    classes = ", ".join(f"{c} {n}" for c, n in counts.items() if n)
    assert "NQC" in text and "chance (leave-one-out)" in text and f"classes: {classes})" in text
    assert f"on the {len(scored)} images of the scored split" in text
    # Fig. 5: the frozen runs at the rate nearest to 2 % (0.5 here), not the fine-tuned 100 % runs
    assert "CAM quality" in text and "| random |" in text
    assert "Fig. 5 runs (encoder frozen, rate 50 %, seed 0): `random-d-frozen-rate0.5-seed0`" in text
    assert "skipped" not in text.lower()


def test_report_without_work_folder_notes_the_skip(tmp_path):
    out, _ = _fake_study(tmp_path)
    text = write_report(out).read_text()
    assert "Representations (Table III, Figs. 4-5 style)" in text
    assert "_Skipped: no work folder given; pass `--work DIR`" in text
    assert not (out / CKA_FILE).exists() and not (out / "figures" / "cka_d.png").exists()
    assert (out / "figures" / "curves_d_tuned.png").is_file()  # the rest of the report is there


def test_missing_runs_and_dataset_are_noted_not_fatal(tmp_path):
    out, work = _fake_study(tmp_path)
    from sslzoo.study.results import read_runs

    rows = read_runs(out)
    empty = tmp_path / "empty_work"
    empty.mkdir()
    text = "\n".join(representation_figures(out, empty, rows, ["random", "simclr"], settings=SMALL))
    assert "_Skipped: neither the supervised reference (random, rate 100 %, fine-tuned) nor" in text

    config = StudyConfig.model_validate(json.loads((out / "study.json").read_text()))
    moved = "\n".join(representation_figures(out, work, rows, ["random", "simclr"], config,
                                             data_root=tmp_path / "nowhere", settings=SMALL))  # fmt: skip
    assert "_Skipped: dataset folder" in moved and "--data-root" in moved
    # without study.json the dataset path comes from the runs' segmenter.json
    unknown = "\n".join(representation_figures(out, work, rows, ["random", "simclr"],
                                               data_root=tmp_path / "nowhere", settings=SMALL))  # fmt: skip
    assert f"dataset folder {tmp_path / 'nowhere' / 'data'} not found" in unknown
