"""``sslzoo finetune``: help, one-line errors, an end-to-end run, and --resume after an interruption."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from sslzoo.cli import main
from sslzoo.data.io import write_image, write_label_map
from sslzoo.data.synthetic import synthetic_lesion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY_ARGS = shlex.split("--backbone resnet18 --tile-size 64 --batch-size 4 --workers 0 --no-progress --accelerator cpu")


@pytest.fixture(scope="module")
def lesion_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lesions")
    for i in range(5):
        image, mask = synthetic_lesion(64, seed=i)
        write_image(root / "train" / "images" / f"l{i}.png", image)
        write_label_map(root / "train" / "masks" / f"l{i}.png", mask)
    return root


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in shlex.split(
        "--init --data --task --rate --frozen --seed --out --epochs --max-steps --resume --devices"
    ):
        assert option in text


def test_epochs_and_max_steps_exclude_each_other(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["finetune", "--data", str(tmp_path), "--out", str(tmp_path), "--epochs", "2", "--max-steps", "3"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "0"], "rate must lie in (0, 1]"),
        (["--rate", "1.5"], "rate must lie in (0, 1]"),
        (["--tile-size", "100"], "multiple of 32"),
    ],
)
def test_bad_options_give_one_error_line(lesion_dir, tmp_path, capsys, extra, message):
    code = main(["finetune", "--data", str(lesion_dir), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_dataset_without_masks_is_an_error(tmp_path, capsys):
    image, _ = synthetic_lesion(64, seed=0)
    write_image(tmp_path / "plain" / "a.png", image)
    code = main(["finetune", "--data", str(tmp_path / "plain"), "--out", str(tmp_path / "o"), *TINY_ARGS])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "no masks" in err


def test_finetune_runs_and_resumes_after_an_interruption(lesion_dir, tmp_path, capsys, monkeypatch):
    import sslzoo.downstream.finetune as finetune_module

    out = tmp_path / "run"
    options = shlex.split("--init random --task semantic --rate 0.5 --seed 2 --epochs 1")
    args = ["finetune", "--data", str(lesion_dir), "--out", str(out), *options, *TINY_ARGS]
    real_evaluate = finetune_module.evaluate_segmenter

    def crash(*a, **k):
        raise KeyboardInterrupt  # the job is killed after training, before scoring

    monkeypatch.setattr(finetune_module, "evaluate_segmenter", crash)
    assert main(args) == 130
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "result.json").exists()
    capsys.readouterr()

    monkeypatch.setattr(finetune_module, "evaluate_segmenter", real_evaluate)
    assert main(args) == 2  # an unfinished run is never overwritten silently
    assert "--resume" in capsys.readouterr().err

    assert main([*args, "--resume"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["epochs"] == 1 and len(result["loss_history"]) == 1  # history restored from the checkpoint
    assert result["metric"] == "dice" and f"dice = {result['score']:.4f}" in printed
    # 4 images: 1 scored; 50 % of the other 3 = 2 labelled tiles, of which 1 validates (20 %, at least one)
    assert result["n_eval_images"] == 1 and result["n_train_tiles"] == 1
    assert (out / "segmenter.json").is_file()

    assert main(args) == 0  # finished: the stored result is printed again without training
    assert f"dice = {result['score']:.4f}" in capsys.readouterr().out
