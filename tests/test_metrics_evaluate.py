"""Dataset evaluator and ``sslzoo evaluate``: mean vs pooled, folder matching, errors, CLI output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from sslzoo.cli import main
from sslzoo.data.io import write_label_map
from sslzoo.errors import ConfigError, DataError
from sslzoo.metrics.evaluate import EvaluationResult, evaluate_folders, evaluate_pairs, match_folders


def two_images() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Image 'small': one 2x2 object predicted exactly (C 4, U 4).
    Image 'big': one 10x10 object, the prediction covers its left half (C 50, U 100)."""
    small_gt = np.zeros((12, 12), dtype=np.int64)
    small_gt[1:3, 1:3] = 1
    big_gt = np.zeros((12, 12), dtype=np.int64)
    big_gt[1:11, 1:11] = 4
    big_pred = np.zeros((12, 12), dtype=np.int64)
    big_pred[1:11, 1:6] = 9
    return [("small", small_gt.copy(), small_gt), ("big", big_pred, big_gt)]


def test_mean_and_pooled_differ_as_constructed():
    result = evaluate_pairs(two_images(), "instance")
    assert result.n_images == 2
    assert [row["id"] for row in result.per_image] == ["small", "big"]
    # per image AJI: 1 and 0.5 -> mean 0.75; pooled (4 + 50) / (4 + 100)
    assert result.per_image[0]["aji"] == 1.0
    assert result.per_image[1]["aji"] == 0.5
    assert result.mean["aji"] == pytest.approx(0.75, abs=1e-15)
    assert result.pooled["aji"] == pytest.approx(54 / 104, abs=1e-15)
    assert result.pooled["aji_plus"] == pytest.approx(54 / 104, abs=1e-15)
    # Dice: 1 and 2*50/150 -> mean 5/6; pooled 2 (4 + 50) / (8 + 150)
    assert result.mean["dice"] == pytest.approx(5 / 6, abs=1e-15)
    assert result.pooled["dice"] == pytest.approx(108 / 158, abs=1e-15)
    # PQ: 'big' has IoU 0.5 (no match). Pooled TP 1, FP 1, FN 1 -> DQ 1/2; SQ 1/(1 + 1e-6)
    assert result.mean["dq"] == pytest.approx(0.5, abs=1e-15)
    assert result.pooled["dq"] == pytest.approx(0.5, abs=1e-15)
    assert result.pooled["sq"] == pytest.approx(1 / (1 + 1e-6), abs=1e-15)
    assert result.mean["sq"] == pytest.approx(0.5 / (1 + 1e-6), abs=1e-15)  # 'big' has SQ 0
    assert set(result.mean) == set(result.pooled) == {"aji", "aji_plus", "pq", "dq", "sq", "dice"}


def test_semantic_binarises_and_thresholds_probabilities():
    gt = np.array([[0, 255, 255, 0]], dtype=np.uint8)
    probabilities = np.array([[0.9, 0.51, 0.5, 0.0]])  # > 0.5 -> [1, 1, 0, 0]
    labels = np.array([[0, 3, 7, 0]])  # any id > 0 is foreground
    result = evaluate_pairs([("p", probabilities, gt), ("l", labels, gt)], "semantic")
    assert set(result.mean) == {"dice"}
    assert result.per_image[0]["dice"] == pytest.approx(2 * 1 / 4, abs=1e-15)
    assert result.per_image[1]["dice"] == 1.0
    assert result.pooled["dice"] == pytest.approx(2 * 3 / 8, abs=1e-15)
    with pytest.raises(DataError, match="p2"):
        evaluate_pairs([("p2", np.array([[1.5, 0.2]]), np.array([[1, 0]]))], "semantic")


def test_empty_images_score_one_and_never_nan():
    empty = np.zeros((5, 5), dtype=np.int64)
    result = evaluate_pairs([("e", empty, empty)], "instance")
    assert all(value == 1.0 for value in result.mean.values())
    assert all(value == 1.0 for value in result.pooled.values())


def test_evaluate_pairs_errors():
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate_pairs([], "instance")
    with pytest.raises(DataError, match=r"img7.*\(2, 3\).*\(3, 2\)"):
        evaluate_pairs([("img7", np.zeros((2, 3), int), np.zeros((3, 2), int))], "instance")
    with pytest.raises(ConfigError, match="panoptic"):
        evaluate_pairs(two_images(), "panoptic")


def test_result_json_has_the_contract_shape():
    result = evaluate_pairs(two_images(), "instance", model="nuclei")
    body = json.loads(result.model_dump_json())
    assert list(body) == ["task", "model", "n_images", "mean", "pooled", "per_image"]
    assert body["model"] == "nuclei"
    assert list(body["per_image"][0]) == ["id", "aji", "aji_plus", "pq", "dq", "sq", "dice"]
    assert EvaluationResult.model_validate(body) == result


# ----------------------------------------------------------------------------- folders


def write_pairs(tmp_path, pairs, pred_suffix=".png"):
    for image_id, pred, gt in pairs:
        write_label_map(tmp_path / "gt" / f"{image_id}.png", gt)
        if pred_suffix == ".png":
            write_label_map(tmp_path / "pred" / f"{image_id}.png", pred)
        else:
            (tmp_path / "pred").mkdir(exist_ok=True)
            tifffile.imwrite(tmp_path / "pred" / f"{image_id}{pred_suffix}", pred.astype(np.uint16))
    return tmp_path / "pred", tmp_path / "gt"


def test_folders_match_by_stem_across_suffixes(tmp_path):
    pred_dir, gt_dir = write_pairs(tmp_path, two_images(), pred_suffix=".tif")
    (pred_dir / "notes.txt").write_text("ignored")
    assert [stem for stem, _, _ in match_folders(pred_dir, gt_dir)] == ["big", "small"]
    from_files = evaluate_folders(pred_dir, gt_dir, "instance")
    from_arrays = evaluate_pairs(sorted(two_images()), "instance")
    assert from_files == from_arrays


def test_semantic_float_tiff_probabilities(tmp_path):
    (tmp_path / "pred").mkdir()
    gt = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    write_label_map(tmp_path / "gt" / "a.png", gt)
    tifffile.imwrite(tmp_path / "pred" / "a.tiff", np.array([[0.2, 0.7, 0.4, 0.0]], dtype=np.float32))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", "semantic")
    assert result.per_image[0]["dice"] == pytest.approx(2 / 3, abs=1e-15)
    # the same file is not an instance label map
    with pytest.raises(DataError, match="a.tiff.*not integer"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", "instance")


def test_missing_partner_is_named(tmp_path):
    pred_dir, gt_dir = write_pairs(tmp_path, two_images())
    (pred_dir / "big.png").unlink()
    write_label_map(pred_dir / "extra.png", np.zeros((12, 12), int))
    with pytest.raises(DataError, match=r"no partner.*big.*no partner.*extra"):
        evaluate_folders(pred_dir, gt_dir, "instance")


def test_size_mismatch_names_the_file(tmp_path):
    pred_dir, gt_dir = write_pairs(tmp_path, two_images())
    write_label_map(pred_dir / "small.png", np.zeros((12, 10), int))
    with pytest.raises(DataError, match=r"small\.png.*10x12.*12x12"):
        evaluate_folders(pred_dir, gt_dir, "instance")


def test_duplicate_stems_and_missing_folders(tmp_path):
    pred_dir, gt_dir = write_pairs(tmp_path, two_images())
    tifffile.imwrite(pred_dir / "small.tif", np.zeros((12, 12), np.uint8))
    with pytest.raises(DataError, match="small"):
        evaluate_folders(pred_dir, gt_dir, "instance")
    with pytest.raises(DataError, match="does not exist"):
        evaluate_folders(tmp_path / "nope", gt_dir, "instance")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no label images"):
        evaluate_folders(tmp_path / "empty", gt_dir, "instance")


# ----------------------------------------------------------------------------- CLI


def test_cli_json_equals_evaluate_folders(tmp_path, capsys):
    pred_dir, gt_dir = write_pairs(tmp_path, two_images())
    csv_path = tmp_path / "scores.csv"
    args = ["evaluate", "--task", "instance", "--pred", str(pred_dir), "--gt", str(gt_dir), "--json"]
    assert main([*args, "--csv", str(csv_path)]) == 0
    printed = EvaluationResult.model_validate(json.loads(capsys.readouterr().out))
    assert printed == evaluate_folders(pred_dir, gt_dir, "instance")
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == ["big", "small"]
    assert float(rows[0]["aji"]) == printed.per_image[0]["aji"] == 0.5


def test_cli_table_and_errors(tmp_path, capsys):
    pred_dir, gt_dir = write_pairs(tmp_path, two_images())
    assert main(["evaluate", "--task", "semantic", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "dice"]
    mean_row = next(line.split() for line in lines if line.startswith("mean"))
    assert float(mean_row[1]) == pytest.approx(5 / 6, abs=1e-4)
    assert any(line.startswith("pooled") for line in lines)

    assert main(["evaluate", "--task", "instance", "--pred", str(tmp_path / "nope"), "--gt", str(gt_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nope" in err[0]


def test_progress_bar_only_for_more_than_20_images(tmp_path, capsys):
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[1:3, 1:3] = 1
    pairs = [(f"img{k:02d}", labels, labels) for k in range(21)]
    pred_dir, gt_dir = write_pairs(tmp_path, pairs)
    result = evaluate_folders(pred_dir, gt_dir, "instance", progress=True)
    assert result.n_images == 21 and result.mean["aji"] == 1.0
    assert "21/21" in capsys.readouterr().err
    (pred_dir / "img00.png").unlink()
    (gt_dir / "img00.png").unlink()
    evaluate_folders(pred_dir, gt_dir, "instance", progress=True)
    assert "20/20" not in capsys.readouterr().err
