"""``sslzoo pretrain`` / ``sslzoo methods`` end to end on tiny generated data (resnet18, 32 px)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sslzoo.cli import main


def _strict_load_into_unet(folder: Path, backbone: str = "resnet18") -> torch.nn.Module:
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file

    encoder = smp.Unet(backbone, encoder_weights=None).encoder
    torch.nn.Module.load_state_dict(encoder, load_file(str(folder / "model.safetensors")), strict=True)
    return encoder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    from sslzoo.data.io import write_image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    for i in range(6):
        write_image(folder / f"img{i}.png", rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8))
    return folder


def _pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain", "--method", "simclr", "--data", str(data), "--dataset", "folder", "--backbone", "resnet18",
        "--batch-size", "4", "--input-size", "32", "--out", str(out), "--workers", "0", "--no-progress", *extra,
    ]  # fmt: skip


def test_pretrain_exports_strictly_loadable_encoder_and_resumes(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_pretrain_args(image_folder, out, "--max-steps", "2", "--param", "temperature=0.2")) == 0
    assert "model.safetensors" in capsys.readouterr().out
    first = _strict_load_into_unet(out)
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "simclr" and config["backbone"] == "resnet18" and config["input_size"] == 32
    assert config["training"]["global_step"] == 2 and config["training"]["params"]["temperature"] == 0.2
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2

    # the same folder again without --resume is refused, with the fix in the message
    assert main(_pretrain_args(image_folder, out, "--max-steps", "2")) == 2
    assert "--resume" in capsys.readouterr().err

    assert main(_pretrain_args(image_folder, out, "--max-steps", "4", "--resume", "--param", "temperature=0.2")) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["global_step"] == 4  # continued from step 2, not restarted
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    second = _strict_load_into_unet(out)
    assert not torch.equal(first.conv1.weight, second.conv1.weight)


def test_pretrain_is_reproducible_under_a_seed(image_folder, tmp_path):
    """The same --seed gives the same encoder: the views' albumentations generator is seeded from the config
    (global seeds do not reach it); another seed gives another encoder."""
    runs = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main(_pretrain_args(image_folder, tmp_path / name, "--max-steps", "2", "--seed", seed)) == 0
        runs[name] = _strict_load_into_unet(tmp_path / name).state_dict()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_a_pretraining_that_crashes_resumes_from_its_last_epoch_and_ends_as_if_uninterrupted(
    image_folder, tmp_path, monkeypatch
):
    """``last.ckpt`` is written at every epoch end, and shuffle and views are seeded from (seed, epoch) at every
    epoch start: a run that crashes in epoch 3 resumes from epoch 2's end (not from scratch) and, with the same
    config, ends with the same weights as a run that never crashed (not replaying epoch 0's batches)."""
    import pytorch_lightning as pl

    import sslzoo.pretext.train as train

    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    assert main(_pretrain_args(image_folder, whole, "--epochs", "3")) == 0

    class CrashInThirdEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if trainer.current_epoch == 2:
                raise RuntimeError("simulated crash")

    timing = train._timing_callback
    monkeypatch.setattr(train, "_timing_callback", CrashInThirdEpoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(_pretrain_args(image_folder, crashed, "--epochs", "3"))
    state = torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] > 0  # epoch 1 (the second) finished before the crash
    monkeypatch.setattr(train, "_timing_callback", timing)
    assert main(_pretrain_args(image_folder, crashed, "--epochs", "3", "--resume")) == 0
    a, b = _strict_load_into_unet(whole).state_dict(), _strict_load_into_unet(crashed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_gives_the_same_encoder_with_any_number_of_loader_workers(image_folder, tmp_path):
    """Views are drawn per item from (seed, epoch, item), and the epoch reaches persistent workers through shared
    memory: 0 workers and 2 persistent workers over 2 epochs give bit-identical weights."""
    runs = {}
    for workers in ("0", "2"):
        args = _pretrain_args(image_folder, tmp_path / f"w{workers}", "--epochs", "2")
        args[args.index("--workers") + 1] = workers
        assert main(args) == 0
        runs[workers] = _strict_load_into_unet(tmp_path / f"w{workers}").state_dict()
    assert all(torch.equal(runs["0"][k], runs["2"][k]) for k in runs["0"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["pretrain", "--method", "nope", "--data", ".", "--max-steps", "1", "--out", "x"], "unknown pretext method"),
        (["pretrain", "--method", "simclr", "--data", ".", "--out", "x"], "--epochs N or --max-steps N"),
        (["pretrain", "--method", "simclr", "--max-steps", "1", "--out", "x"], "needs --data"),
        (
            ["pretrain", "--method", "simclr", "--data", ".", "--max-steps", "1", "--out", "x", "--param", "tau"],
            "key=value",
        ),
        (
            ["pretrain", "--method", "simclr", "--data", "/no/such/dir", "--max-steps", "1", "--out", "x"],
            "no such folder",
        ),
    ],
)
def test_pretrain_bad_input_is_one_error_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_batch_larger_than_dataset_is_explained(image_folder, tmp_path, capsys):
    args = _pretrain_args(image_folder, tmp_path / "r", "--max-steps", "1")
    args[args.index("--batch-size") + 1] = "500"
    assert main(args) == 2
    assert "lower --batch-size" in capsys.readouterr().err


def test_random_baseline_is_exported_without_training(tmp_path):
    out = tmp_path / "random"
    assert main(["pretrain", "--method", "random", "--backbone", "resnet18", "--out", str(out)]) == 0
    _strict_load_into_unet(out)
    assert json.loads((out / "config.json").read_text())["method"] == "random"
    assert not (out / "checkpoints").exists()


def _fake_hf_cache(home: Path) -> torch.Tensor:
    """Put a resnet18 state dict where smp 0.6 looks for ``resnet18`` ImageNet weights; return its conv1."""
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders

    from sslzoo.models.encoders import create_encoder, encoder_state_dict

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    repo, revision = settings["repo_id"], settings["revision"]
    snapshot = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    torch.manual_seed(1234)
    state = encoder_state_dict(create_encoder("resnet18"))
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.125)  # unmistakably ours
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text("{}")
    return state["conv1.weight"]


def _run_cli(args: list[str], hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "sslzoo", *args], capture_output=True, text=True, env=env, timeout=300)


def test_imagenet_baseline_from_a_prefilled_offline_cache(tmp_path):
    home = tmp_path / "hf"
    empty = _run_cli(["pretrain", "--method", "imagenet", "--backbone", "resnet18", "--out", str(tmp_path / "a")], home)
    assert empty.returncode == 2 and "error: cannot load ImageNet weights" in empty.stderr

    expected = _fake_hf_cache(home)
    out = tmp_path / "imagenet"
    done = _run_cli(["pretrain", "--method", "imagenet", "--backbone", "resnet18", "--out", str(out)], home)
    assert done.returncode == 0, done.stderr
    encoder = _strict_load_into_unet(out)
    torch.testing.assert_close(encoder.conv1.weight, expected)
    assert json.loads((out / "config.json").read_text())["method"] == "imagenet"


def test_methods_list_and_table(capsys):
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "simclr" in listing and "imagenet" in listing
    assert main(["methods", "--table", "--backbone", "resnet18", "--markdown"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| method |") and "| moco |" in table and "temperature=0.07" in table
    assert main(["methods", "--table", "--backbone", "vgg"]) == 2
