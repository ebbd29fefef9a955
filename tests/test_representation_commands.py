"""Commands against known answers: CKA of an encoder with itself is 1, NQC of separable classes is ~1;
``sslzoo --help`` lists every command of every command group and ``sslzoo COMMAND --help`` works."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslzoo.cli import COMMAND_MODULES, build_parser, main
from sslzoo.data.io import write_image, write_label_map
from sslzoo.data.synthetic import synthetic_two_class_images
from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dataset(root: Path, n: int = 16, size: int = 32, textures: bool = False) -> Path:
    """``n`` images in the shared layout + labels.csv: two classes told apart by colour (red vs blue);
    ``textures``: varied blob / stripe images instead (CKA needs images that are not two points)."""
    rng = np.random.default_rng(3)
    varied = synthetic_two_class_images(n, size, seed=3)[0]
    rows = []
    for i in range(n):
        sample_id = f"IMG_{i:04d}"
        colour = np.array([220, 40, 40] if i % 2 else [40, 40, 220], dtype=np.float64)
        image = np.clip(colour + rng.normal(scale=15, size=(size, size, 3)), 0, 255).astype(np.uint8)
        if textures:
            image = varied[i]
        write_image(root / "val" / "images" / f"{sample_id}.png", image)
        write_label_map(root / "val" / "masks" / f"{sample_id}.png", np.zeros((size, size), np.uint8))
        rows.append({"id": sample_id, "split": "val", "class": "red" if i % 2 else "blue"})
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "split", "class"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def texture_data(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("textures"), textures=True)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> tuple[Path, Path]:
    folders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp(f"encoder{seed}")
        save_encoder(
            create_encoder("resnet18"), folder, EncoderConfig(backbone="resnet18", method="simclr", dataset="x")
        )
        folders.append(folder)
    return folders[0], folders[1]


def _run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _cka(capsys, a: Path, b: Path, data: Path) -> dict:
    argv = ["compare-encoders", str(a), str(b), "--data", str(data), "--batch-size", "8", "--size", "32"]
    return _run_json(capsys, [*argv, "--json", "--device", "cpu"])


def test_compare_encoders_an_encoder_with_itself_is_1_and_with_another_less(capsys, texture_data, encoders):
    data = texture_data
    a, b = encoders
    same = _cka(capsys, a, a, data)
    assert same["n_images"] == 16
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in same["cka"].values())
    assert same["mean"] == pytest.approx(1.0, abs=1e-5)
    other = _cka(capsys, a, b, data)
    assert set(other["cka"]) == set(same["cka"])
    assert all(v < 0.995 for v in other["cka"].values())  # measured: 0.978 (Conv1) .. 0.68
    assert other["mean"] < 0.9  # measured 0.77
    # symmetric: B vs A equals A vs B
    reverse = _cka(capsys, b, a, data)
    assert reverse["cka"] == pytest.approx(other["cka"], abs=1e-5)


def test_neighbours_nqc_of_colour_separable_classes_is_near_1(capsys, data, encoders):
    result = _run_json(
        capsys,
        ["neighbours", str(encoders[0]), "--data", str(data), "--size", "32", "--json", "--device", "cpu"],
    )
    assert result["n_images"] == 16 and result["class_counts"] == {"blue": 8, "red": 8}
    assert result["random_expectation"] == pytest.approx(0.5)
    assert result["loo_expectation"] == pytest.approx(2 * 8 * 7 / (16 * 15))
    assert result["nqc"] >= 0.9  # red vs blue: every nearest neighbour shares the class


def test_neighbours_nqc_of_label_noise_is_not_near_1(capsys, tmp_path, encoders):
    root = _dataset(tmp_path / "shuffled")
    rows = list(csv.DictReader((root / "labels.csv").open()))
    for i, row in enumerate(rows):  # classes independent of colour: blue/red alternate in pairs
        row["class"] = "a" if (i // 2) % 2 else "b"
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "split", "class"])
        writer.writeheader()
        writer.writerows(rows)
    result = _run_json(
        capsys, ["neighbours", str(encoders[0]), "--data", str(root), "--size", "32", "--json", "--device", "cpu"]
    )
    assert result["nqc"] <= 0.75


# ------------------------------------------------------------------------------------------------ help
def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_help_lists_every_command_of_every_command_group():
    text = build_parser().format_help()
    assert len(COMMAND_MODULES) >= 8
    for module_name in COMMAND_MODULES:
        scratch = argparse.ArgumentParser(prog="scratch").add_subparsers()
        importlib.import_module(module_name).register(scratch)
        names = list(scratch.choices)
        assert names, f"{module_name} registers no command"
        for name in names:
            assert f"\n    {name} " in text or f"\n    {name}\n" in text, f"{name} ({module_name}) not in --help"


def _all_command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, sub in _commands(parser).items():
        paths.append((*prefix, name))
        paths.extend(_all_command_paths(sub, (*prefix, name)))
    return paths


def test_every_command_help_exits_0_with_its_usage(capsys):
    paths = _all_command_paths(build_parser())
    assert {"pretrain", "finetune", "evaluate", "compare-encoders", "neighbours", "study", "serve"} <= {
        p[0] for p in paths
    }
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"usage: sslzoo {' '.join(path)}"), (path, out[:80])
        assert "-h, --help" in out
