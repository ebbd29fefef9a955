"""``dataset_info`` and ``sslzoo data info`` / ``sslzoo data samples``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.cli import main
from sslzoo.data.datasets import open_dataset
from sslzoo.data.info import DatasetInfo, SizeSummary, dataset_info, format_dataset_info
from sslzoo.data.samples import sample_dataset_path


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _labels(shape: tuple[int, int], ids: list[int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint16)
    for k, value in enumerate(ids):
        mask[1:3, 1 + 3 * k : 3 + 3 * k] = value
    return mask


@pytest.fixture
def cells(tmp_path: Path) -> Path:
    """Simple layout: train a (3 ids, 20x30), b (ids 1 and 7: 2 instances, 20x30), val c (1 id, 40x10),
    unlabeled d (16x16); labels for a, b, c."""
    root = tmp_path / "cells"
    for split, image_id, shape, ids in (
        ("train", "a", (20, 30), [1, 2, 3]),
        ("train", "b", (20, 30), [1, 7]),
        ("val", "c", (40, 10), [4]),
    ):
        _save(root / split / "images" / f"{image_id}.png", np.full((*shape, 3), 100, np.uint8))
        _save(root / split / "masks" / f"{image_id}.png", _labels(shape, ids))
    _save(root / "unlabeled" / "images" / "d.jpg", np.zeros((16, 16, 3), np.uint8))
    (root / "labels.csv").write_text("id,split,class\na,train,tumour\nb,train,normal\nc,val,tumour\n")
    return root


def test_dataset_info_counts_instances_sizes_and_classes(cells: Path) -> None:
    info = dataset_info(cells)
    assert (info.kind, info.layout, info.task) == ("folder", "simple", "instance")
    assert (info.n_images, info.n_labelled, info.n_instances) == (4, 3, 6)
    assert info.class_counts == {"normal": 1, "tumour": 2}
    per_split = {s.name: (s.n_images, s.n_labelled, s.n_instances, s.class_counts) for s in info.splits}
    assert per_split == {
        "train": (2, 2, 5, {"normal": 1, "tumour": 1}),
        "val": (1, 1, 1, {"tumour": 1}),
        "unlabeled": (1, 0, None, {}),
    }
    assert [s.name for s in info.splits] == ["train", "val", "unlabeled"]
    sizes = [(s.height, s.width, s.count) for s in info.image_sizes.most_common]
    assert sizes == [(20, 30, 2), (16, 16, 1), (40, 10, 1)]
    assert (info.image_sizes.smallest, info.image_sizes.largest) == ((16, 16), (20, 30))
    assert DatasetInfo.model_validate_json(info.model_dump_json()) == info


def test_dataset_info_on_monuseg_xml_and_semantic(tmp_path: Path) -> None:
    root = tmp_path / "MoNuSeg"
    _save(root / "Tissue Images" / "t1.tif", np.zeros((12, 12, 3), np.uint8))
    (root / "Annotations").mkdir()
    squares = "".join(
        f'<Region><Vertices><Vertex X="{c}" Y="1"/><Vertex X="{c + 3}" Y="1"/><Vertex X="{c + 3}" Y="4"/>'
        f'<Vertex X="{c}" Y="4"/></Vertices></Region>'
        for c in (0.5, 4.5, 8.5)
    )
    (root / "Annotations" / "t1.xml").write_text(
        f"<Annotations><Annotation><Regions>{squares}</Regions></Annotation></Annotations>"
    )
    assert dataset_info(root).n_instances == 3

    semantic = dataset_info(sample_dataset_path("isic2017"))
    assert (semantic.task, semantic.n_instances, semantic.n_images) == ("semantic", None, 3)


def test_size_summary_with_many_sizes() -> None:
    sizes = [(10 + k, 20) for k in range(12)] + [(11, 20)] * 3
    summary = SizeSummary.from_sizes(sizes)
    assert summary.n_distinct == 12 and len(summary.most_common) == 8
    assert (summary.most_common[0].height, summary.most_common[0].count) == (11, 4)
    assert (summary.smallest, summary.largest) == ((10, 20), (21, 20))
    assert summary.describe() == "12 sizes, 10x20 .. 21x20"
    assert SizeSummary.from_sizes([(5, 6), (5, 6)]).describe() == "5x6 (2)"


def test_format_dataset_info_is_an_aligned_table(cells: Path) -> None:
    text = format_dataset_info(dataset_info(cells))
    lines = text.splitlines()
    assert lines[:4] == [f"path    {cells}", "kind    folder", "layout  simple", "task    instance"]
    table = lines[5:]
    assert table[0].split() == ["split", "images", "labelled", "instances", "sizes", "classes"]
    assert table[1].split()[:4] == ["train", "2", "2", "5"]
    assert table[3].split()[:4] == ["unlabeled", "1", "0", "-"]
    assert table[4].split()[:4] == ["total", "4", "3", "6"]
    # numeric columns are right-aligned: every row ends its "images" cell at the same column
    ends = {line.index(line.split()[1]) + len(line.split()[1]) for line in table}
    assert len(ends) == 1


def test_cli_data_info_json_and_table(cells: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", str(cells), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["n_images"], payload["n_instances"]) == (4, 6)
    assert [s["n_images"] for s in payload["splits"]] == [2, 1, 1]

    assert main(["data", "info", str(cells), "--dataset", "isic2017"]) == 0
    out = capsys.readouterr().out
    assert "kind    isic2017" in out and "task    semantic" in out


def test_cli_data_info_on_packaged_monuseg_sample(capsys: pytest.CaptureFixture[str]) -> None:
    root = sample_dataset_path("monuseg")
    expected = sum(len(np.unique(np.asarray(Image.open(p)))) - 1 for p in sorted((root / "train/masks").glob("*.png")))
    assert main(["data", "info", str(root), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["kind"], payload["task"], payload["n_images"]) == ("monuseg", "instance", 2)
    assert payload["n_instances"] == expected == 72
    assert payload["class_counts"] == {"Breast": 1, "Kidney": 1}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "info", "/no/such/dataset"], "error: /no/such/dataset: no such folder"),
        (["data", "info", "{tmp}", "--json"], "no images found"),
    ],
)
def test_cli_data_info_errors_print_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_cli_data_info_malformed_csv(cells: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cells / "labels.csv").write_text("name,label\na,x\n")
    assert main(["data", "info", str(cells)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels.csv: missing column(s) id, class" in err[0]


def test_cli_data_samples_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "samples"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["dsb2018", "isic2017", "monuseg"]
    assert all(open_dataset(r[1]).kind == r[0] for r in rows)
    assert main(["data"]) == 2
    assert "info" in capsys.readouterr().out


@pytest.mark.shared_data
def test_info_on_shared_monuseg_and_isic(shared_data: Path) -> None:
    monuseg = dataset_info(shared_data / "monuseg", progress=False)
    assert (monuseg.kind, monuseg.n_images, monuseg.n_instances) == ("monuseg", 30, 17012)
    assert sum(monuseg.class_counts.values()) == 30

    isic = dataset_info(shared_data / "isic2017", progress=False)
    assert {s.name: s.n_images for s in isic.splits} == {"train": 1600, "val": 150, "unlabeled": 600}
    classes = {s.name: s.class_counts for s in isic.splits}
    assert classes["train"] == {"melanoma": 299, "nevus": 1098, "seborrheic_keratosis": 203}
    assert classes["val"] == {"melanoma": 30, "nevus": 78, "seborrheic_keratosis": 42}
    assert isic.image_sizes.describe() == "256x256 (2350)"


@pytest.mark.shared_data
def test_info_on_shared_dsb2018(shared_data: Path) -> None:
    info = dataset_info(shared_data / "dsb2018", progress=False)
    assert (info.kind, info.task, info.n_images, info.n_instances) == ("dsb2018", "instance", 664, 28986)
