"""Dataset readers: official ISIC 2017 and MoNuSeg layouts, the simple layout, plain folders, samples."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.data.datasets import (
    DATASET_KINDS,
    open_dataset,
    rasterize_monuseg_xml,
    read_image_size,
    unlabelled_images,
)
from sslzoo.data.samples import list_samples, sample_dataset_path
from sslzoo.errors import ConfigError, DataError

# --------------------------------------------------------------------------- fixture writers


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _rect(col0: int, row0: int, col1: int, row1: int) -> list[tuple[float, float]]:
    """Aperio (X, Y) vertices of a rectangle whose pixel centres cover rows row0..row1, cols col0..col1."""
    x0, x1, y0, y1 = col0 - 0.5, col1 + 0.5, row0 - 0.5, row1 + 0.5
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _write_aperio_xml(path: Path, regions: list[list[tuple[float, float]]]) -> Path:
    body = []
    for k, vertices in enumerate(regions, start=1):
        points = "".join(f'<Vertex X="{x:.6f}" Y="{y:.6f}" Z="0"/>' for x, y in vertices)
        body.append(f'<Region Id="{k}" Type="0"><Attributes/><Vertices>{points}</Vertices></Region>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<Annotations MicronsPerPixel="0.252700"><Annotation Id="1"><Attributes/><Regions>'
        '<RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/></RegionAttributeHeaders>'
        + "".join(body)
        + "</Regions><Plots/></Annotation></Annotations>"
    )
    return path


# Regions on a 40x50 image, in XML order. Expected ids after relabelling in comments.
MONUSEG_REGIONS = [
    _rect(3, 2, 12, 9),  # -> 1
    [(30.0, 30.0), (35.0, 35.0)],  # degenerate 2-vertex region: no pixels, no id
    _rect(5, 15, 20, 24),  # -> 2, partly overwritten by the next one
    _rect(15, 20, 30, 29),  # -> 3, overlaps the previous rectangle and wins
    _rect(40, 32, 44, 35),  # fully covered by the next region: dropped
    _rect(38, 30, 55, 45),  # -> 4, clipped to the 40x50 frame
]


def _expected_monuseg_labels() -> np.ndarray:
    expected = np.zeros((40, 50), dtype=np.int64)
    expected[2:10, 3:13] = 1
    expected[15:25, 5:21] = 2
    expected[20:30, 15:31] = 3
    expected[30:40, 38:50] = 4
    return expected


def _write_monuseg_official(root: Path, image_dir: str = "Tissue Images") -> dict[str, np.ndarray]:
    images = {"TCGA-AA-0001": _rgb(40, 50, 1), "TCGA-AA-0002": _rgb(40, 50, 2)}
    (root / image_dir).mkdir(parents=True)
    for image_id, pixels in images.items():
        # LZW like the official release: tifffile needs imagecodecs for it, the reader falls back to Pillow
        Image.fromarray(pixels).save(root / image_dir / f"{image_id}.tif", compression="tiff_lzw")
        _write_aperio_xml(root / "Annotations" / f"{image_id}.xml", MONUSEG_REGIONS)
    return images


def _write_mask_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.uint16)).save(path)


def _disc_mask(height: int, width: int, radius: int) -> np.ndarray:
    rows, cols = np.ogrid[:height, :width]
    return ((rows - height // 2) ** 2 + (cols - width // 2) ** 2 <= radius**2).astype(np.uint8) * 255


def _write_isic_official(root: Path) -> dict[str, np.ndarray]:
    """Training (3 images), Validation (1) and Test_v2 (1, no ground truth). Returns mask per id."""
    splits = {
        "Training": {"ISIC_0000001": (1, 0), "ISIC_0000002": (0, 1), "ISIC_0000003": (0, 0)},
        "Validation": {"ISIC_0000010": (1, 0)},
    }
    masks = {}
    for tag, rows in splits.items():
        data = root / f"ISIC-2017_{tag}_Data"
        data.mkdir(parents=True)
        (data / f"ISIC-2017_{tag}_Data_metadata.csv").write_text("image_id,age_approximate,sex\n")
        with (root / f"ISIC-2017_{tag}_Part3_GroundTruth.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "melanoma", "seborrheic_keratosis"])
            for k, (image_id, (mel, sk)) in enumerate(rows.items()):
                Image.fromarray(_rgb(24, 32, k)).save(data / f"{image_id}.jpg", quality=90)
                Image.fromarray(_rgb(24, 32, k + 50)).save(data / f"{image_id}_superpixels.png")
                masks[image_id] = _disc_mask(24, 32, 3 + 2 * k)
                _write_mask_png(
                    root / f"ISIC-2017_{tag}_Part1_GroundTruth" / f"{image_id}_segmentation.png", masks[image_id]
                )
                writer.writerow([image_id, f"{mel:.1f}", f"{sk:.1f}"])
    test = root / "ISIC-2017_Test_v2_Data"
    test.mkdir()
    Image.fromarray(_rgb(24, 32, 99)).save(test / "ISIC_0000020.jpg")
    return masks


def _write_simple(root: Path, masks: dict[str, dict[str, np.ndarray]], labels: list[tuple[str, str, str]]) -> None:
    """``masks``: split -> id -> label map (None-free); every id gets a random RGB image of the mask's size."""
    for split, by_id in masks.items():
        for k, (image_id, mask) in enumerate(by_id.items()):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(*mask.shape, seed=k)).save(root / split / "images" / f"{image_id}.png")
            _write_mask_png(root / split / "masks" / f"{image_id}.png", mask)
    if labels:
        with (root / "labels.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([("id", "split", "class"), *labels])


def _instance_mask(ids: list[int], shape: tuple[int, int] = (20, 30)) -> np.ndarray:
    """One 4x4 square per id, left to right."""
    mask = np.zeros(shape, dtype=np.uint16)
    for k, value in enumerate(ids):
        mask[2:6, 2 + 6 * k : 6 + 6 * k] = value
    return mask


# --------------------------------------------------------------------------- MoNuSeg official


def test_rasterize_monuseg_xml_matches_hand_drawn_rectangles(tmp_path: Path) -> None:
    xml = _write_aperio_xml(tmp_path / "a.xml", MONUSEG_REGIONS)
    labels = rasterize_monuseg_xml(xml, (40, 50))
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, _expected_monuseg_labels())


def test_monuseg_official_layout(tmp_path: Path) -> None:
    root = tmp_path / "MoNuSeg 2018 Training Data"
    images = _write_monuseg_official(root)
    index = open_dataset(root)
    assert (index.kind, index.layout, index.task) == ("monuseg", "monuseg-official", "instance")
    assert index.splits() == ["train"]
    assert [s.id for s in index.samples] == sorted(images)
    assert all(s.label is None for s in index.samples)
    sample = index.samples[0]
    assert sample.mask is not None and sample.mask.suffix == ".xml"
    np.testing.assert_array_equal(index.read_image(sample), images[sample.id])
    np.testing.assert_array_equal(index.read_mask(sample), _expected_monuseg_labels())
    assert read_image_size(sample.image) == (40, 50)


def test_monuseg_official_organ_labels_and_flat_test_layout(tmp_path: Path) -> None:
    root = tmp_path / "train"
    _write_monuseg_official(root, image_dir="Tissue_Images")
    (root / "labels.csv").write_text("id,split,class\nTCGA-AA-0001,train,Breast\nTCGA-AA-0002,train,Kidney\n")
    assert [s.label for s in open_dataset(root).samples] == ["Breast", "Kidney"]

    flat = tmp_path / "MoNuSegTestData"
    flat.mkdir()
    Image.fromarray(_rgb(40, 50, 3)).save(flat / "TCGA-ZZ-0003.tif")
    _write_aperio_xml(flat / "TCGA-ZZ-0003.xml", MONUSEG_REGIONS)
    index = open_dataset(flat, "monuseg")
    assert (index.layout, index.splits()) == ("monuseg-official", ["test"])
    assert index.read_mask(index.samples[0]).max() == 4


def test_monuseg_broken_xml_and_missing_annotation(tmp_path: Path) -> None:
    root = tmp_path / "monuseg"
    _write_monuseg_official(root)
    broken = root / "Annotations" / "TCGA-AA-0002.xml"
    broken.write_text("<Annotations><Annotation><Regions><Region>")
    index = open_dataset(root)
    with pytest.raises(DataError, match=r"TCGA-AA-0002\.xml.*not well-formed XML"):
        index.read_mask(index.samples[1])
    bad_vertex = _write_aperio_xml(tmp_path / "bad.xml", [[(1.0, 1.0), (5.0, 1.0), (5.0, 5.0)]])
    bad_vertex.write_text(bad_vertex.read_text().replace('Y="5.000000"', 'Y="five"', 1))
    with pytest.raises(DataError, match=r"bad\.xml: Region #1 has a Vertex without numeric X and Y"):
        rasterize_monuseg_xml(bad_vertex, (10, 10))
    broken.unlink()
    with pytest.raises(DataError, match=r"TCGA-AA-0002\.tif: no annotation TCGA-AA-0002\.xml"):
        open_dataset(root)


# --------------------------------------------------------------------------- ISIC 2017 official


def test_isic2017_official_layout(tmp_path: Path) -> None:
    masks = _write_isic_official(tmp_path)
    index = open_dataset(tmp_path)
    assert (index.kind, index.layout, index.task) == ("isic2017", "isic2017-official", "semantic")
    assert index.splits() == ["train", "val", "test"]
    assert {s.id: (s.split, s.label) for s in index.samples} == {
        "ISIC_0000001": ("train", "melanoma"),
        "ISIC_0000002": ("train", "seborrheic_keratosis"),
        "ISIC_0000003": ("train", "nevus"),
        "ISIC_0000010": ("val", "melanoma"),
        "ISIC_0000020": ("test", None),
    }
    assert len(index.labelled()) == 4
    assert index.class_counts("train") == {"melanoma": 1, "nevus": 1, "seborrheic_keratosis": 1}
    for sample in index.labelled():
        mask = index.read_mask(sample)
        assert mask.dtype == np.int64 and set(np.unique(mask)) == {0, 1}
        np.testing.assert_array_equal(mask, (masks[sample.id] > 0).astype(np.int64))
        assert index.read_image(sample).shape == (24, 32, 3)
    assert index.split("test")[0].mask is None
    assert len(unlabelled_images(tmp_path)) == 5  # superpixels and metadata CSVs are not images to train on


def test_isic2017_official_errors(tmp_path: Path) -> None:
    _write_isic_official(tmp_path)
    with pytest.raises(ConfigError, match="isic2017-official.*'monuseg' was requested"):
        open_dataset(tmp_path, "monuseg")
    csv_path = tmp_path / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    csv_path.write_text("image_id,melanoma\nISIC_0000010,1.0\n")
    with pytest.raises(DataError, match=r"Validation_Part3_GroundTruth\.csv: missing column\(s\) seborrheic_keratosis"):
        open_dataset(tmp_path)
    csv_path.write_text("image_id,melanoma,seborrheic_keratosis\nISIC_0000010,yes,0\n")
    with pytest.raises(DataError, match="row 2, column 'melanoma' is 'yes'"):
        open_dataset(tmp_path)
    csv_path.unlink()
    (tmp_path / "ISIC-2017_Training_Part1_GroundTruth" / "ISIC_0000002_segmentation.png").unlink()
    with pytest.raises(DataError, match=r"ISIC_0000002\.jpg: no mask ISIC_0000002_segmentation\.png"):
        open_dataset(tmp_path)


def test_mask_of_wrong_size_is_reported_when_read(tmp_path: Path) -> None:
    _write_isic_official(tmp_path)
    _write_mask_png(
        tmp_path / "ISIC-2017_Validation_Part1_GroundTruth" / "ISIC_0000010_segmentation.png", _disc_mask(20, 20, 4)
    )
    index = open_dataset(tmp_path)
    with pytest.raises(DataError, match=r"mask is 20x20 \(HxW\) but its image ISIC_0000010\.jpg is 24x32"):
        index.read_mask(index.split("val")[0])


# --------------------------------------------------------------------------- simple layout


def test_simple_layout_instance_masks_labels_and_splits(tmp_path: Path) -> None:
    root = tmp_path / "my cells"
    _write_simple(
        root,
        {"train": {"a": _instance_mask([1, 2, 5]), "b": _instance_mask([3])}, "val": {"c": _instance_mask([1, 2])}},
        [("a", "train", "tumour"), ("b", "train", "normal"), ("c", "val", "tumour"), ("zz", "train", "withheld")],
    )
    (root / "unlabeled" / "images").mkdir(parents=True)
    Image.fromarray(_rgb(16, 16, 7)).save(root / "unlabeled" / "images" / "d.jpg")

    index = open_dataset(root)
    assert (index.kind, index.layout, index.task) == ("folder", "simple", "instance")  # ids 1, 2, 5 -> instance
    assert index.splits() == ["train", "val", "unlabeled"]
    assert [(s.id, s.label) for s in index.split("train")] == [("a", "tumour"), ("b", "normal")]
    assert index.split("unlabeled")[0].mask is None and len(index.labelled()) == 3
    assert index.classes() == ["normal", "tumour"]
    np.testing.assert_array_equal(index.read_mask(index.split("train")[0]), _instance_mask([1, 2, 3]))
    np.testing.assert_array_equal(index.read_mask(index.split("train")[1]), _instance_mask([1]))
    assert len(unlabelled_images(root)) == 4
    assert [p.stem for p in unlabelled_images(root, skip_splits=["val"])] == ["a", "b", "d"]  # scored images kept out
    with pytest.raises(ConfigError, match=r"no split named 'test' to skip"):
        unlabelled_images(root, skip_splits=["test"])
    with pytest.raises(ConfigError, match=r"no split 'test'; available splits: train, val, unlabeled"):
        index.split("test")
    with pytest.raises(DataError, match=r"sample 'd' \(split 'unlabeled'\) has no mask"):
        index.read_mask(index.split("unlabeled")[0])


def test_simple_layout_kind_and_task_detection(tmp_path: Path) -> None:
    binary = {"train": {"x": _disc_mask(20, 30, 5)}}
    _write_simple(tmp_path / "lesions", binary, [])
    index = open_dataset(tmp_path / "lesions")
    assert (index.kind, index.task) == ("folder", "semantic")
    assert set(np.unique(index.read_mask(index.samples[0]))) == {0, 1}

    _write_simple(tmp_path / "DSB-2018 subset", {"train": {"x": _instance_mask([1, 2])}}, [])
    assert open_dataset(tmp_path / "DSB-2018 subset").kind == "dsb2018"  # from the folder name

    _write_simple(tmp_path / "noted", {"train": {"x": _instance_mask([1, 2])}}, [])
    (tmp_path / "noted" / "SOURCE.md").write_text("# ISIC 2017 lesions, reduced\n\nmore text\n")
    index = open_dataset(tmp_path / "noted")
    assert (index.kind, index.task) == ("isic2017", "semantic")  # from SOURCE.md; the kind fixes the task
    np.testing.assert_array_equal(index.read_mask(index.samples[0]), (_instance_mask([1, 2]) > 0).astype(np.int64))

    index = open_dataset(tmp_path / "lesions", "monuseg")  # the dataset argument overrides
    assert (index.kind, index.task) == ("monuseg", "instance")

    single = open_dataset(tmp_path / "lesions" / "train")  # a folder holding images/ is one split
    assert (single.splits(), single.task) == (["train"], "semantic")


def test_simple_layout_errors(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write_simple(root, {"train": {"a": _instance_mask([1]), "b": _instance_mask([2])}}, [("a", "train", "x")])
    (root / "train" / "masks" / "b.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask .*\(b\.png\).*unlabeled"):
        open_dataset(root)
    _write_mask_png(root / "train" / "masks" / "b.png", _instance_mask([2]))
    (root / "labels.csv").write_text("id,split,organ\na,train,x\n")
    with pytest.raises(DataError, match=r"labels\.csv: missing column\(s\) class"):
        open_dataset(root)
    (root / "labels.csv").unlink()
    Image.fromarray(_rgb(20, 30, 1)).save(root / "train" / "images" / "a.jpg")
    with pytest.raises(DataError, match="two files share the id 'a'"):
        open_dataset(root)


# --------------------------------------------------------------------------- plain folders and bad paths


def test_folder_of_images_recursive(tmp_path: Path) -> None:
    Image.fromarray(_rgb(8, 8, 0)).save(tmp_path / "a.png")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(_rgb(8, 9, 1)).save(tmp_path / "sub" / "b.jpg")
    Image.fromarray(_rgb(9, 8, 2)).save(tmp_path / "sub" / "deeper" / "c.tif")
    (tmp_path / "sub" / "notes.txt").write_text("not an image")
    for skipped in ("masks", ".cache"):
        (tmp_path / skipped).mkdir()
        Image.fromarray(_rgb(8, 8, 3)).save(tmp_path / skipped / "m.png")

    index = open_dataset(tmp_path)
    assert (index.kind, index.layout, index.task, index.splits()) == ("folder", "folder", None, ["unlabeled"])
    assert [s.id for s in index.samples] == ["a", "sub/b", "sub/deeper/c"]
    assert unlabelled_images(tmp_path) == [tmp_path / "a.png", tmp_path / "sub/b.jpg", tmp_path / "sub/deeper/c.tif"]
    assert open_dataset(tmp_path, "monuseg").kind == "monuseg"
    assert index.read_image(index.samples[2]).shape == (9, 8, 3)


def test_bad_paths_and_kinds(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        open_dataset(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        unlabelled_images(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unknown dataset kind 'cells'; choose one of isic2017, monuseg"):
        open_dataset(tmp_path, "cells")
    assert DATASET_KINDS == ("isic2017", "monuseg", "dsb2018", "folder")


# --------------------------------------------------------------------------- packaged samples


def test_packaged_samples_open_and_are_attributed() -> None:
    assert list_samples() == ["dsb2018", "isic2017", "monuseg"]
    tasks = {"dsb2018": "instance", "isic2017": "semantic", "monuseg": "instance"}
    for kind in list_samples():
        index = open_dataset(sample_dataset_path(kind))
        assert (index.kind, index.layout, index.task) == (kind, "simple", tasks[kind])
        for sample in index.labelled():
            image, mask = index.read_image(sample), index.read_mask(sample)
            assert image.shape[:2] == mask.shape and image.dtype == np.uint8
            ids = np.unique(mask)
            np.testing.assert_array_equal(ids, np.arange(ids.size))  # contiguous 0..N (or 0/1)
            assert ids.size > 1
    isic = open_dataset(sample_dataset_path("isic2017"))
    assert isic.class_counts() == {"melanoma": 1, "nevus": 1, "seborrheic_keratosis": 1}

    root = sample_dataset_path("monuseg").parent
    attribution = (root / "ATTRIBUTION.md").read_text()
    data_files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg")]
    assert len(data_files) == 2 * 2 + 3 * 2 + 2
    for path in data_files:
        assert path.stem in attribution, f"{path} is not listed in ATTRIBUTION.md"
    for licence in ("CC BY-NC-SA 4.0", "CC-0", "CC0 1.0", "Kumar", "Codella", "Caicedo"):
        assert licence in attribution
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 1_000_000
    with pytest.raises(ConfigError, match="no packaged sample 'stardist'; available samples: dsb2018"):
        sample_dataset_path("stardist")
