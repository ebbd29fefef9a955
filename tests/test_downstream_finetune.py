"""Fine-tuning: data rules (splits, tiles, nested rate subsets) and end-to-end runs on tiny synthetic data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sslzoo.data.datasets import open_dataset
from sslzoo.data.io import write_image, write_label_map
from sslzoo.data.synthetic import synthetic_lesion, synthetic_nuclei
from sslzoo.data.targets import distance_map_target
from sslzoo.downstream.data import (
    HOLDOUT_FRACTION,
    image_tiles,
    load_tiles,
    prepare_data,
    select_tiles,
    split_train_eval,
)
from sslzoo.downstream.finetune import (
    FinetuneConfig,
    FinetuneResult,
    evaluate_segmenter,
    finetune,
    load_result,
)
from sslzoo.errors import ConfigError, DataError
from sslzoo.models.encoders import EncoderConfig, create_encoder, encoder_state_dict, save_encoder
from sslzoo.models.segmenter import Segmenter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = {"backbone": "resnet18", "tile_size": 64, "batch_size": 4, "workers": 0, "epochs": 2}


def write_nuclei_dataset(root: Path, n: int = 5, size: int = 96) -> Path:
    for i in range(n):
        image, labels = synthetic_nuclei(size, n=10, seed=i)
        write_image(root / "train" / "images" / f"n{i}.png", image)
        write_label_map(root / "train" / "masks" / f"n{i}.png", labels)
    return root


def write_lesion_dataset(root: Path, splits: dict[str, int], size: int = 64) -> Path:
    seed = 0
    for split, n in splits.items():
        for _ in range(n):
            image, mask = synthetic_lesion(size, seed=seed)
            write_image(root / split / "images" / f"l{seed}.png", image)
            write_label_map(root / split / "masks" / f"l{seed}.png", mask)
            seed += 1
    return root


@pytest.fixture(scope="module")
def nuclei_dir(tmp_path_factory) -> Path:
    return write_nuclei_dataset(tmp_path_factory.mktemp("nuclei"))


@pytest.fixture(scope="module")
def lesion_dir(tmp_path_factory) -> Path:
    return write_lesion_dataset(tmp_path_factory.mktemp("lesion"), {"train": 6, "val": 2})


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("encoder")
    save_encoder(create_encoder("resnet18"), folder, EncoderConfig(backbone="resnet18", method="simclr", dataset="x"))
    return folder


# ---------------------------------------------------------------------------- data rules
def test_holdout_is_fixed_and_independent_of_the_run_seed(nuclei_dir):
    index = open_dataset(nuclei_dir)
    first = split_train_eval(index)
    again = split_train_eval(open_dataset(nuclei_dir))
    assert [s.id for s in first.eval] == [s.id for s in again.eval]
    assert len(first.eval) == max(1, round(HOLDOUT_FRACTION * 5))
    assert {s.id for s in first.train}.isdisjoint({s.id for s in first.eval})
    assert len(first.train) + len(first.eval) == 5
    # the hold-out does not move with the run's seed or rate
    a = prepare_data(index, "instance", 0.5, seed=3, val_fraction=0.1, tile_size=64)
    b = prepare_data(index, "instance", 1.0, seed=7, val_fraction=0.1, tile_size=64)
    assert [s.id for s in a.split.eval] == [s.id for s in b.split.eval] == [s.id for s in first.eval]


def test_val_split_of_the_dataset_is_scored_when_present(lesion_dir):
    split = split_train_eval(open_dataset(lesion_dir))
    assert {s.split for s in split.eval} == {"val"} and len(split.eval) == 2
    assert {s.split for s in split.train} == {"train"} and len(split.train) == 6
    with pytest.raises(ConfigError, match="no labelled split 'test'"):
        split_train_eval(open_dataset(lesion_dir), eval_split="test")
    with pytest.raises(ConfigError, match="is the training split"):
        split_train_eval(open_dataset(lesion_dir), eval_split="train")


def test_rate_subsets_are_nested_and_validation_lies_inside_each(nuclei_dir):
    index = open_dataset(nuclei_dir)
    split = split_train_eval(index)
    ids = [f"img{i}@{t.y:05d}_{t.x:05d}" for i in range(8) for t in image_tiles(600, 600, 256)]
    selections = {rate: select_tiles(ids, rate, seed=2, val_fraction=0.2) for rate in (0.04, 0.16, 0.64, 1.0)}
    rates = sorted(selections)
    for small, large in zip(rates, rates[1:], strict=False):
        assert set(selections[small].labelled) <= set(selections[large].labelled)  # nested labelled subsets
    for s in selections.values():
        assert set(s.val).isdisjoint(s.train) and len(s.train) >= 1
        assert set(s.train) | set(s.val) == set(s.labelled)
    assert len(selections[1.0].labelled) == len(ids) == 8 * 9
    other_seed = select_tiles(ids, 0.16, seed=3, val_fraction=0.2)
    assert set(other_seed.labelled) != set(selections[0.16].labelled)
    # the data module draws from the real training tiles the same way
    small = prepare_data(index, "instance", 0.25, seed=0, val_fraction=0.2, tile_size=64)
    large = prepare_data(index, "instance", 1.0, seed=0, val_fraction=0.2, tile_size=64)
    assert set(small.selection.labelled) <= set(large.selection.labelled)
    assert small.val is not None and set(small.val.ids) <= set(small.selection.labelled)
    assert len(small.selection.all_ids) == len(split.train) * 4  # 96 px image -> 2 x 2 tiles of 64


def test_validation_is_a_fifth_of_the_rate_subset_and_scales_with_it():
    """Issue 12, defect 1: at 1 % the validation tiles come from the 1 % subset, not from all tiles."""
    ids = [f"img{i:04d}@00000_00000" for i in range(2000)]
    sizes = {}
    for rate in (0.01, 0.02, 0.16, 1.0):
        s = select_tiles(ids, rate, seed=0, val_fraction=0.2)
        n = len(s.labelled)
        assert n == max(1, round(rate * len(ids)))
        assert set(s.val) <= set(s.labelled) and set(s.train) <= set(s.labelled)
        assert len(s.val) == max(1, round(0.2 * n)) and len(s.train) == n - len(s.val)
        sizes[rate] = len(s.val)
    assert sizes == {0.01: 4, 0.02: 8, 0.16: 64, 1.0: 400}  # validation grows with the rate
    # ISIC, 2 %: the authors' "32 annotated samples" = 40 labelled x 0.8
    isic = select_tiles([f"isic{i:04d}" for i in range(2000)], 0.02, seed=1, val_fraction=0.2)
    assert (len(isic.labelled), len(isic.train), len(isic.val)) == (40, 32, 8)
    # one labelled tile: it trains, nothing is left to validate on
    single = select_tiles(ids, 0.0001, seed=0, val_fraction=0.2)
    assert len(single.train) == 1 and single.val == []
    assert select_tiles(ids, 0.01, seed=0, val_fraction=0.0).val == []


def test_tiles_hold_crops_of_image_labels_and_distance_target(nuclei_dir):
    index = open_dataset(nuclei_dir)
    sample = index.samples[0]
    tiles = load_tiles(index, [sample], None, tile_size=64, tiles_per_image=None, task="instance")
    image, labels = index.read_image(sample), index.read_mask(sample)
    distance = distance_map_target(labels)
    assert tiles.ids[-1].endswith("@00032_00032") and len(tiles) == 4
    last = len(tiles) - 1
    np.testing.assert_array_equal(tiles.images[last], image[32:96, 32:96])
    np.testing.assert_array_equal(tiles.labels[last], labels[32:96, 32:96])
    np.testing.assert_array_equal(tiles.distances[last], distance[32:96, 32:96])
    x, y = tiles[last]
    assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64) and y.dtype == torch.float32
    np.testing.assert_allclose(y[0].numpy(), distance[32:96, 32:96])
    capped = image_tiles(1000, 1000, 256, tiles_per_image=3)
    assert len(capped) == 3 and capped[0] == (0, 0, 256, 256) and capped[-1] == (744, 744, 256, 256)


def test_semantic_targets_are_binary(lesion_dir):
    index = open_dataset(lesion_dir)
    tiles = load_tiles(index, index.split("train")[:2], None, tile_size=64, tiles_per_image=None, task="semantic")
    assert tiles.distances is None
    _, y = tiles[0]
    assert set(np.unique(y.numpy())) <= {0.0, 1.0} and y.sum() > 0


# ---------------------------------------------------------------------------- bad input
def test_bad_config_values_raise_config_error():
    with pytest.raises(ConfigError, match=r"rate must lie in \(0, 1\]"):
        FinetuneConfig(rate=0)
    with pytest.raises(ConfigError, match="tile_size must be a multiple of 32"):
        FinetuneConfig(tile_size=100)
    bad_copy = FinetuneConfig().model_copy(update={"rate": 1.5})  # model_copy skips validation ...
    with pytest.raises(ConfigError, match="rate"):
        finetune(bad_copy, "/nonexistent", "/tmp/unused")  # ... finetune checks again before any work


def test_dataset_without_masks_raises_data_error(tmp_path):
    image, _ = synthetic_lesion(64, seed=0)
    write_image(tmp_path / "data" / "train" / "images" / "a.png", image)
    write_image(tmp_path / "data" / "train" / "images" / "b.png", image)
    with pytest.raises(DataError, match="no masks"):
        finetune(FinetuneConfig(**TINY), tmp_path / "data", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_task_mismatch_raises(lesion_dir, tmp_path):
    with pytest.raises(ConfigError, match="holds semantic masks"):
        finetune(FinetuneConfig(**TINY, task="instance"), lesion_dir, tmp_path / "out")


# ---------------------------------------------------------------------------- end to end
def _rescore(out_dir: Path, data: Path, ids: list[str]) -> dict[str, float]:
    segmenter = Segmenter.from_pretrained(out_dir)
    index = open_dataset(data)
    samples = [s for s in index.samples if s.id in ids]
    return evaluate_segmenter(segmenter, index, samples).mean


def test_instance_end_to_end_and_cached_second_call(nuclei_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = FinetuneConfig(**TINY, init="random", rate=0.5, seed=1)
    result = finetune(config, nuclei_dir, out, accelerator="cpu", progress=False)
    assert isinstance(result, FinetuneResult)
    assert result.task == "instance" and result.metric == "aji_plus" and result.config.task == "instance"
    assert result.n_eval_images == 1 and result.epochs == 2 == len(result.loss_history) == len(result.epoch_seconds)
    assert len(result.val_history) == 2 and all(s > 0 for s in result.epoch_seconds)
    assert set(result.scores) == {"aji", "aji_plus", "pq", "dq", "sq", "dice"}
    assert result.score == result.scores["aji_plus"]
    # the saved segmenter reproduces the stored score on the stored evaluation images
    stored = json.loads((out / "segmenter.json").read_text())
    assert stored["task"] == "instance" and stored["tile_size"] == 64 and stored["backbone"] == "resnet18"
    from sslzoo.models.postprocess import FIXED_WATERSHED

    assert config.watershed == "fixed"  # the study-comparison default: the authors' fixed post-processing
    assert stored["watershed"] == FIXED_WATERSHED.model_dump(mode="json")
    assert "watershed_train_aji_plus" not in stored["training"]
    rescored = _rescore(out, nuclei_dir, stored["training"]["eval_ids"])
    assert rescored["aji_plus"] == pytest.approx(result.score, abs=1e-9)
    assert load_result(out) == result
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,val_loss,lr,seconds" and len(rows) == 3
    assert (out / "checkpoints" / "last.ckpt").is_file()

    # second call: same config -> stored result, no model is built
    import sslzoo.models.unet as unet

    def no_training(*args, **kwargs):
        raise AssertionError("finetune trained again although result.json matches")

    monkeypatch.setattr(unet, "build_unet", no_training)
    again = finetune(config.model_copy(update={"workers": 3}), nuclei_dir, out, progress=False)
    assert again == result
    with pytest.raises(ConfigError, match="another configuration"):
        finetune(config.model_copy(update={"rate": 1.0}), nuclei_dir, out, progress=False)


def _encoder_weights(segmenter_dir: Path) -> dict[str, torch.Tensor]:
    return encoder_state_dict(Segmenter.from_pretrained(segmenter_dir).model.encoder)


@pytest.mark.parametrize(("frozen", "frozen_bn"), [(True, "eval"), (True, "train"), (False, "train")])
def test_semantic_end_to_end_frozen_encoder_unchanged(lesion_dir, encoder_dir, tmp_path, frozen, frozen_bn):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    config = FinetuneConfig(**TINY | {"epochs": 1}, init=str(encoder_dir), frozen=frozen, frozen_bn=frozen_bn, rate=1.0)
    result = finetune(config, lesion_dir, out, accelerator="cpu", progress=False)
    assert result.task == "semantic" and result.metric == "dice" and set(result.scores) == {"dice"}
    assert result.n_eval_images == 2 and 0.0 <= result.score <= 1.0
    assert result.n_train_tiles == 5  # 6 one-tile images minus 1 validation tile
    stored = json.loads((out / "segmenter.json").read_text())
    assert stored["method"] == "simclr" and stored["training"]["frozen"] is frozen
    assert _rescore(out, lesion_dir, stored["training"]["eval_ids"])["dice"] == pytest.approx(result.score, abs=1e-9)

    initial = load_file(str(encoder_dir / "model.safetensors"))
    trained = _encoder_weights(out)
    assert set(initial) == set(trained)
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    if frozen and frozen_bn == "eval":
        assert changed == []  # weights and batch-norm statistics untouched
    elif frozen:  # the authors' frozen encoder: weights fixed, batch-norm statistics follow the data
        assert changed and all(k.endswith(statistics) for k in changed)
    else:
        assert any(k.endswith("weight") for k in changed)


def test_tuned_watershed_is_chosen_on_the_training_tiles(nuclei_dir, tmp_path):
    config = FinetuneConfig(**TINY | {"epochs": 1}, init="random", rate=0.5, seed=1, watershed="tuned")
    finetune(config, nuclei_dir, tmp_path / "run", accelerator="cpu", progress=False)
    stored = json.loads((tmp_path / "run" / "segmenter.json").read_text())
    assert "watershed_train_aji_plus" in stored["training"] and stored["watershed"]["fill_holes"] is False


def test_same_seed_gives_the_same_run(tmp_path):
    data = write_lesion_dataset(tmp_path / "data", {"train": 4}, size=64)
    config = FinetuneConfig(**TINY | {"epochs": 1, "val_fraction": 0.0}, rate=0.5, seed=5)
    first = finetune(config, data, tmp_path / "a", accelerator="cpu", progress=False)
    second = finetune(config, data, tmp_path / "b", accelerator="cpu", progress=False)
    assert first.loss_history == second.loss_history and first.score == second.score
    assert first.val_history == [] and first.n_train_tiles == 2  # no validation tiles: 50 % of 3 training images


def test_input_size_squeezes_whole_images_for_training_and_inference(tmp_path):
    data = write_lesion_dataset(tmp_path / "data", {"train": 4, "val": 2}, size=96)
    index = open_dataset(data)
    prepared = prepare_data(index, "semantic", 1.0, 0, 0.0, 64, resize_to=64)
    assert prepared.train.images.shape == (4, 64, 64, 3) and len(prepared.train) == 4  # one tile per image
    assert set(np.unique(prepared.train.labels)) <= {0, 1}

    config = FinetuneConfig(**TINY | {"epochs": 1, "val_fraction": 0.0}, input_size=64)
    result = finetune(config, data, tmp_path / "run", accelerator="cpu", progress=False)
    segmenter = Segmenter.from_pretrained(tmp_path / "run")
    assert segmenter.config.resize_to == 64 and result.n_eval_images == 2
    image = index.read_image(index.labelled()[0])
    assert segmenter.predict(image).shape == image.shape[:2] == (96, 96)


def test_input_size_is_refused_for_instance_models_and_bad_sizes(nuclei_dir, tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        FinetuneConfig(input_size=100)
    with pytest.raises(ConfigError, match="semantic segmentation only"):
        finetune(FinetuneConfig(**TINY, input_size=64), nuclei_dir, tmp_path / "x", accelerator="cpu", progress=False)


def test_max_steps_ending_mid_epoch_with_validation_finishes(lesion_dir, tmp_path):
    """Early stopping is checked after validation only: a run that stops inside its first epoch (5 steps),
    before any val/loss exists, must not crash."""
    config = FinetuneConfig(**TINY | {"batch_size": 1, "epochs": 5}, max_steps=3, val_fraction=0.2)
    result = finetune(config, lesion_dir, tmp_path / "run", accelerator="cpu", progress=False)
    assert result.epochs >= 1 and 0.0 <= result.score <= 1.0
    assert json.loads((tmp_path / "run" / "segmenter.json").read_text())["training"]["global_step"] == 3


def test_resuming_a_checkpoint_of_another_architecture_says_what_to_delete(lesion_dir, tmp_path):
    """A checkpoint left by an interrupted run with other decoder widths is refused with the folder to delete,
    not a wall of ``size mismatch`` errors (seen when a zoo build resumed across an sslzoo upgrade)."""
    narrow = FinetuneConfig(**TINY | {"epochs": 1, "val_fraction": 0.0}, decoder_channels=(64, 32, 16, 16, 8))
    finetune(narrow, lesion_dir, tmp_path / "narrow", accelerator="cpu", progress=False)
    out = tmp_path / "wide"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "narrow" / "checkpoints" / "last.ckpt", out / "checkpoints" / "last.ckpt")
    wide = narrow.model_copy(update={"decoder_channels": (128, 64, 32, 32, 16)})
    with pytest.raises(ConfigError, match=r"another model architecture .*size|delete .*checkpoints"):
        finetune(wide, lesion_dir, out, accelerator="cpu", progress=False, resume=True)
    # the same architecture resumes
    same = tmp_path / "same"
    (same / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "narrow" / "checkpoints" / "last.ckpt", same / "checkpoints" / "last.ckpt")
    assert finetune(narrow, lesion_dir, same, accelerator="cpu", progress=False, resume=True).epochs >= 1


def test_inference_tile_size_is_the_segmenters_and_scores_the_images(nuclei_dir, tmp_path):
    """Trained on 64 px tiles, scored in windows of at most 64 px (the 96 px test images: overlapping, blended):
    the saved segmenter keeps that bound and reproduces the stored score; the probe's decoder widths reach the
    model."""
    from sslzoo.zoo.config import ProbeSettings
    from sslzoo.zoo.probe import probe_config

    settings = ProbeSettings(steps=2, tile_size=64, inference_tile_size=64, decoder_channels=(64, 32, 16, 16, 8))
    config = probe_config("random", "resnet18", "monuseg", None, settings, seed=0).model_copy(update={"workers": 0})
    assert config.frozen and config.max_steps == 2 and config.decoder_channels == (64, 32, 16, 16, 8)
    out = tmp_path / "run"
    result = finetune(config, nuclei_dir, out, accelerator="cpu", progress=False)
    stored = json.loads((out / "segmenter.json").read_text())
    assert stored["inference_tile"] == 64 and stored["tile_size"] == 64 == stored["training"]["tile_size"]
    assert json.loads((out / "config.json").read_text())["decoder_channels"] == [64, 32, 16, 16, 8]
    rescored = _rescore(out, nuclei_dir, stored["training"]["eval_ids"])
    assert rescored["aji_plus"] == pytest.approx(result.score, abs=1e-9)
    with pytest.raises(ConfigError, match="inference_tile_size must be a multiple of 32"):
        FinetuneConfig(inference_tile_size=100)


def test_eval_images_and_tile_overlap_reach_the_scored_set_and_the_segmenter(tmp_path):
    """CPU configurations score part of the scored split (evenly spread) and may tile whole images with less
    overlap; both are recorded in segmenter.json."""
    data = write_lesion_dataset(tmp_path / "data", {"train": 3, "val": 3})
    config = FinetuneConfig(**TINY | {"epochs": 1}, max_steps=1, eval_images=2, tile_overlap=16)
    result = finetune(config, data, tmp_path / "run", accelerator="cpu", progress=False)
    stored = json.loads((tmp_path / "run" / "segmenter.json").read_text())
    assert result.n_eval_images == 2 and stored["training"]["eval_ids"] == ["l3", "l5"]  # val l3, l4, l5
    assert stored["tile_overlap"] == 16 and "2 of its 3 images scored" in stored["training"]["eval_rule"]
