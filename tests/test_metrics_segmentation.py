"""Segmentation metrics: hand-computed cases, empty cases, and equality with a slow reference.

The slow reference below follows CONTRACTS.md section 3 literally: one full boolean mask per
object, a dense pairwise table, ``np.argmax`` for AJI, ``linear_sum_assignment`` on the full
matrix for AJI+, IoU > 0.5 for PQ.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from sslzoo.errors import DataError
from sslzoo.metrics.segmentation import (
    PQResult,
    aji,
    aji_plus,
    dice,
    instance_scores,
    overlap_table,
    pq,
    relabel_contiguous,
)

SCORE_KEYS = ("aji", "aji_plus", "pq", "dq", "sq", "dice")


# ----------------------------------------------------------------------------- slow reference


def slow_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Per-object reference: loops over objects with full boolean masks."""
    gt_ids = [i for i in np.unique(gt) if i != 0]  # sorted: "first on ties" = smallest id
    pred_ids = [i for i in np.unique(pred) if i != 0]
    gt_masks = [gt == i for i in gt_ids]
    pred_masks = [pred == i for i in pred_ids]
    n_g, n_p = len(gt_masks), len(pred_masks)
    inter = np.zeros((n_g, n_p))
    union = np.zeros((n_g, n_p))
    for a, gm in enumerate(gt_masks):
        for b, pm in enumerate(pred_masks):
            if (gm & pm).any():
                inter[a, b] = (gm & pm).sum()
                union[a, b] = (gm | pm).sum()
    iou_eps = inter / (union + 1e-6)

    # AJI: each GT takes its best prediction (first on ties, reuse allowed)
    c = u = 0.0
    chosen = set()
    for a in range(n_g):
        if n_p and iou_eps[a].max() > 0:
            b = int(np.argmax(iou_eps[a]))
            c += inter[a, b]
            u += union[a, b]
            chosen.add(b)
        else:
            u += gt_masks[a].sum()
    u += sum(pred_masks[b].sum() for b in range(n_p) if b not in chosen)
    aji_value = 1.0 if u == 0 else c / u

    # AJI+: linear_sum_assignment on the full matrix, pairs of IoU 0 dropped
    c = u = 0.0
    paired_g, paired_p = set(), set()
    if n_g and n_p:
        rows, cols = linear_sum_assignment(-iou_eps)
        for a, b in zip(rows, cols, strict=True):
            if iou_eps[a, b] > 0:
                c += inter[a, b]
                u += union[a, b]
                paired_g.add(a)
                paired_p.add(b)
    u += sum(gt_masks[a].sum() for a in range(n_g) if a not in paired_g)
    u += sum(pred_masks[b].sum() for b in range(n_p) if b not in paired_p)
    aji_plus_value = 1.0 if u == 0 else c / u

    # PQ: IoU = inter / union, match if IoU > 0.5
    tp, iou_sum = 0, 0.0
    for a in range(n_g):
        for b in range(n_p):
            if union[a, b] > 0 and inter[a, b] / union[a, b] > 0.5:
                tp += 1
                iou_sum += inter[a, b] / union[a, b]
    fp, fn = n_p - tp, n_g - tp
    if tp + fp + fn == 0:
        dq = sq = 1.0
    else:
        dq = tp / (tp + 0.5 * fp + 0.5 * fn)
        sq = iou_sum / (tp + 1e-6)

    fg_inter = np.logical_and(gt > 0, pred > 0).sum()
    fg_total = (gt > 0).sum() + (pred > 0).sum()
    dice_value = 1.0 if fg_total == 0 else 2 * fg_inter / fg_total
    return {"aji": aji_value, "aji_plus": aji_plus_value, "pq": dq * sq, "dq": dq, "sq": sq, "dice": dice_value}


# ----------------------------------------------------------------------------- random maps


def random_instances(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """Disks and rectangles painted in order (later ones overwrite earlier ones)."""
    labels = np.zeros(shape, dtype=np.int64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(2, 7)
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= rng.integers(1, 7))
        labels[mask] = k
    return labels


def perturb(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A plausible prediction: shifted, one object split, two merged, some dropped, spurious added."""
    pred = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1)).copy()
    ids = np.unique(pred)
    ids = ids[ids > 0]
    if ids.size >= 1:  # split one object along a vertical line through its centre
        k = rng.choice(ids)
        ys, xs = np.nonzero(pred == k)
        right = (pred == k) & (np.arange(pred.shape[1])[None, :] >= int(xs.mean()))
        pred[right] = pred.max() + 1
    if ids.size >= 2:  # merge two
        a, b = rng.choice(ids, 2, replace=False)
        pred[pred == b] = a
    for k in rng.choice(ids, size=min(ids.size, int(rng.integers(0, 3))), replace=False):  # drop
        pred[pred == k] = 0
    for _ in range(int(rng.integers(0, 3))):  # spurious objects
        y, x = rng.integers(0, pred.shape[0]), rng.integers(0, pred.shape[1])
        pred[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = pred.max() + 1
    return pred


def scatter_ids(rng: np.random.Generator, labels: np.ndarray, high: int) -> np.ndarray:
    """Replace ids 1..N by random distinct non-contiguous ids below ``high`` (order shuffled)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    new = rng.choice(np.arange(1, high), size=ids.size, replace=False) if high < 10**7 else None
    if new is None:
        new = np.unique(rng.integers(1, high, size=ids.size * 2))[: ids.size]
        rng.shuffle(new)
    lookup = dict(zip(ids.tolist(), new.tolist(), strict=True))
    out = np.zeros_like(labels)
    for old, value in lookup.items():
        out[labels == old] = value
    return out


def assert_matches_reference(pred: np.ndarray, gt: np.ndarray) -> None:
    ours = instance_scores(pred, gt)
    ref = slow_scores(pred, gt)
    for key in SCORE_KEYS:
        assert abs(ours[key] - ref[key]) <= 1e-12, (key, ours[key], ref[key])
        assert np.isfinite(ours[key])


# ----------------------------------------------------------------------------- hand-made cases


def test_reuse_of_one_prediction_separates_aji_from_aji_plus_and_pq_is_strict():
    gt = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 0, 0]])
    pred = np.array([[1, 1, 1, 1, 1, 1, 1, 1, 0, 2]])
    # (g1, p1): inter 4, union 8; (g2, p1): inter 4, union 8; p2 (area 1) overlaps nothing.
    # AJI: both GT take p1 -> C = 8, U = 16 + area(p2) = 17.
    assert aji(pred, gt) == pytest.approx(8 / 17, abs=1e-15)
    # AJI+: p1 pairs with one GT only -> C = 4, U = 8 + 4 (other GT) + 1 (p2) = 13.
    assert aji_plus(pred, gt) == pytest.approx(4 / 13, abs=1e-15)
    # PQ: IoU 0.5 is not > 0.5 -> TP 0, FP 2, FN 2.
    assert pq(pred, gt) == PQResult(0.0, 0.0, 0.0)
    # Dice: |gt| = 8, |pred| = 9, overlap 8 -> 16/17.
    assert dice(pred, gt) == pytest.approx(16 / 17, abs=1e-15)


def test_good_matches_with_non_contiguous_ids():
    gt = np.array([[1, 1, 1, 1, 0, 2, 2, 2, 0, 0]])
    pred = np.array([[5, 5, 5, 0, 0, 9, 9, 9, 9, 0]])
    # (g1, p5): inter 3, union 4; (g2, p9): inter 3, union 4. AJI = AJI+ = 6/8.
    assert aji(pred, gt) == pytest.approx(0.75, abs=1e-15)
    assert aji_plus(pred, gt) == pytest.approx(0.75, abs=1e-15)
    # PQ: TP 2, FP 0, FN 0 -> DQ 1, SQ = (0.75 + 0.75) / (2 + 1e-6).
    dq, sq, pq_value = pq(pred, gt)
    assert dq == 1.0
    assert sq == pytest.approx(1.5 / (2 + 1e-6), abs=1e-15)
    assert pq_value == pytest.approx(1.5 / (2 + 1e-6), abs=1e-15)
    # Dice: 7 and 7 foreground pixels, 6 shared -> 12/14.
    assert dice(pred, gt) == pytest.approx(12 / 14, abs=1e-15)


def test_epsilon_breaks_iou_ties_towards_the_larger_union():
    gt = np.array([[1, 1, 1, 1, 1, 1, 0, 0, 0, 0]])
    pred = np.array([[1, 1, 2, 2, 2, 0, 2, 2, 2, 0]])
    # (g1, p1): 2 / 6; (g1, p2): 3 / 9 -- equal IoU, but 2/(6+1e-6) < 3/(9+1e-6), so g1 takes p2.
    # AJI: C = 3, U = 9 + area(p1) = 11. (Taking p1 would give 2 / (6 + 6) instead.)
    assert aji(pred, gt) == pytest.approx(3 / 11, abs=1e-15)
    assert aji_plus(pred, gt) == pytest.approx(3 / 11, abs=1e-15)
    assert pq(pred, gt).pq == 0.0


def test_exact_ties_go_to_the_smallest_prediction_id():
    # gt: g1 = pixels 2..5, g2 = pixels 6..9; pred: a = pixels 0..3, b = pixels 4..7.
    # (g1, a): inter 2, union 6; (g1, b): inter 2, union 6 (exact tie); (g2, b): inter 2, union 6.
    gt = np.array([[0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]])
    a_first = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0]])
    # a has the smaller id: g1 -> a, g2 -> b, every prediction chosen: AJI = 4 / 12.
    assert aji(a_first, gt) == pytest.approx(4 / 12, abs=1e-15)
    # b has the smaller id: g1 -> b, g2 -> b, a is never chosen: AJI = 4 / (12 + 4).
    b_first = np.where(a_first == 1, 7, np.where(a_first == 2, 3, 0))
    assert aji(b_first, gt) == pytest.approx(4 / 16, abs=1e-15)
    # AJI+ is one-to-one either way: (g1, a) and (g2, b) -> 4 / 12.
    assert aji_plus(b_first, gt) == pytest.approx(4 / 12, abs=1e-15)
    # Dice: 8 and 8 foreground pixels, 6 shared.
    assert dice(b_first, gt) == pytest.approx(0.75, abs=1e-15)


def test_perfect_prediction():
    gt = np.array([[0, 3, 3], [4, 4, 0]])
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    scores = instance_scores(pred, gt)
    assert scores["aji"] == scores["aji_plus"] == scores["dice"] == scores["dq"] == 1.0
    assert scores["sq"] == pytest.approx(2 / (2 + 1e-6), abs=1e-15)  # the contract's 1e-6 in SQ
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 0, 0)


# ----------------------------------------------------------------------------- empty cases

EMPTY = np.zeros((4, 5), dtype=np.int64)
ONE_OBJECT = np.pad(np.ones((2, 2), dtype=np.int64), ((1, 1), (1, 2)))


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [(EMPTY, EMPTY, 1.0), (ONE_OBJECT, EMPTY, 0.0), (EMPTY, ONE_OBJECT, 0.0)],
    ids=["both-empty", "gt-empty", "pred-empty"],
)
def test_empty_cases(pred, gt, expected):
    assert dice(pred, gt) == expected
    assert aji(pred, gt) == expected
    assert aji_plus(pred, gt) == expected
    assert pq(pred, gt) == PQResult(expected, expected, expected)
    scores = instance_scores(pred, gt)
    assert all(scores[key] == expected for key in SCORE_KEYS)


def test_semantic_dice_on_boolean_masks():
    gt = np.zeros((4, 4), dtype=bool)
    gt[:2] = True  # 8 pixels
    pred = np.zeros((4, 4), dtype=bool)
    pred[1:3] = True  # 8 pixels, 4 shared
    assert dice(pred, gt) == pytest.approx(2 * 4 / 16, abs=1e-15)


# ----------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"\(3, 4\).*\(4, 3\)"):
        instance_scores(np.zeros((3, 4), int), np.zeros((4, 3), int))
    with pytest.raises(DataError, match="shape"):
        dice(np.zeros((3, 4)), np.zeros((4, 3)))


def test_fractional_or_negative_labels_are_rejected():
    with pytest.raises(DataError, match="not|non-integer"):
        aji(np.full((2, 2), 0.5), np.zeros((2, 2), int))
    with pytest.raises(DataError, match="negative"):
        pq(np.zeros((2, 2), int), -np.ones((2, 2), int))
    # whole-valued floats are fine
    assert aji(np.ones((2, 2), float), np.ones((2, 2), int)) == 1.0


# ----------------------------------------------------------------------------- vectorised table


def test_overlap_table_counts_and_relabelling():
    gt = np.array([[0, 10, 10], [30, 30, 0]])
    pred = np.array([[7, 7, 0], [7, 2, 2]])
    table = overlap_table(pred, gt)
    assert table.gt_area.tolist() == [2, 2]  # ids 10 -> 1, 30 -> 2
    assert table.pred_area.tolist() == [2, 3]  # ids 2 -> 1, 7 -> 2
    pairs = sorted(zip(table.gt_index.tolist(), table.pred_index.tolist(), table.inter.tolist(), strict=True))
    assert pairs == [(0, 1, 1), (1, 0, 1), (1, 1, 1)]
    assert table.union.tolist() == [2 + 3 - 1, 2 + 2 - 1, 2 + 3 - 1]


def test_relabel_keeps_sorted_order_for_huge_ids():
    labels = np.array([[0, 2**40, 5], [5, 0, 2**33]])
    flat, n = relabel_contiguous(labels)
    assert n == 3
    assert flat.tolist() == [0, 3, 1, 1, 0, 2]
    small = np.array([[0, 9, 5], [5, 0, 7]])
    flat, n = relabel_contiguous(small)
    assert (n, flat.tolist()) == (3, [0, 3, 1, 1, 0, 2])


# ----------------------------------------------------------------------------- reference equality


@pytest.mark.parametrize("seed", range(40))
def test_random_maps_match_slow_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(16, 48)), int(rng.integers(16, 48)))
    gt = random_instances(rng, shape, int(rng.integers(1, 25)))
    pred = perturb(rng, gt)
    if seed % 5 == 4:  # an unrelated prediction: mostly false positives and misses
        pred = random_instances(rng, shape, int(rng.integers(0, 15)))
    high = 2**45 if seed % 4 == 3 else 5000  # non-contiguous ids, some beyond the lookup-table path
    assert_matches_reference(scatter_ids(rng, pred, high), scatter_ids(rng, gt, high))


@pytest.mark.parametrize("seed", range(30))
def test_tie_heavy_block_maps_match_slow_reference(seed):
    """Equal-sized square objects on shifted grids produce many exactly equal IoUs."""
    rng = np.random.default_rng(1000 + seed)
    h, w = int(rng.integers(6, 24)), int(rng.integers(6, 24))

    def blocks(size: int, keep: float) -> np.ndarray:
        gh, gw = h // size + 1, w // size + 1
        ids = np.arange(1, gh * gw + 1).reshape(gh, gw) * (rng.random((gh, gw)) < keep)
        return np.kron(ids, np.ones((size, size), dtype=np.int64))[:h, :w]

    gt = blocks(int(rng.integers(1, 5)), rng.uniform(0.3, 1.0))
    pred = np.roll(blocks(int(rng.integers(1, 5)), rng.uniform(0.3, 1.0)), int(rng.integers(0, 3)), axis=1)
    assert_matches_reference(pred, gt)


# ----------------------------------------------------------------------------- real data, via the CLI


@pytest.mark.shared_data
def test_cli_on_real_monuseg_matches_slow_reference(shared_data, tmp_path, capsys):
    from scipy import ndimage as ndi

    from sslzoo.cli import main
    from sslzoo.data.io import list_images, read_label_map, write_label_map

    masks = list_images(shared_data / "monuseg" / "train" / "masks")[:3]
    if not masks:
        pytest.skip("no MoNuSeg masks found")
    rng = np.random.default_rng(7)
    expected = {}
    for k, path in enumerate(masks):
        gt = read_label_map(path)[300:556, 300:556]  # a 256x256 crop keeps the slow reference quick
        if k == 0:  # eroded objects
            pred = np.where(ndi.grey_erosion(gt, size=3) == gt, gt, 0)
        elif k == 1:  # shifted
            pred = np.roll(gt, (3, -2), axis=(0, 1))
        else:  # randomly dropped objects and a split
            pred = perturb(rng, gt)
            ids = np.unique(gt)[1:]
            pred[np.isin(pred, rng.choice(ids, ids.size // 5, replace=False))] = 0
        write_label_map(tmp_path / "gt" / f"{path.stem}.png", gt)
        write_label_map(tmp_path / "pred" / f"{path.stem}.png", pred)
        expected[path.stem] = slow_scores(pred, gt)
    capsys.readouterr()
    args = ["evaluate", "--task", "instance", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == len(masks)
    for row in result["per_image"]:
        for key in SCORE_KEYS:
            assert abs(row[key] - expected[row["id"]][key]) <= 1e-12, (row["id"], key)
    assert 0.0 < result["mean"]["aji"] < 1.0


# ----------------------------------------------------------------------------- pinned by the mutation run


@pytest.mark.parametrize("seed", range(12))
def test_one_small_id_map_against_one_huge_id_map_matches_reference(seed):
    """Mixed id ranges take the relabelling path of the table with one map on the lookup-table branch
    (contiguous ids, or ids with gaps) and the other on the ``np.unique`` branch; a map without background
    (every pixel an object) reaches the ``np.unique`` branch's no-zero case."""
    rng = np.random.default_rng(100 + seed)
    shape = (int(rng.integers(16, 40)), int(rng.integers(16, 40)))
    gt = random_instances(rng, shape, int(rng.integers(2, 20)))
    gt = relabel_contiguous(gt)[0].reshape(shape)  # ids 1..N, no gaps
    pred = perturb(rng, gt)
    small = gt if seed % 3 else scatter_ids(rng, gt, 3 * gt.size)  # contiguous, or with gaps
    huge = scatter_ids(rng, pred, 2**45)
    if seed % 2:
        huge = np.where(huge == 0, 2**46 + 1, huge)  # no background pixel at all
    assert_matches_reference(huge, small)
    assert_matches_reference(small, huge)


def test_exactly_one_overlapping_pair_is_matched():
    """One GT object and one prediction overlapping with IoU 1/3: AJI+ pairs them (C = 2, U = 6), PQ does not."""
    gt = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[0, 0, 2, 2, 2, 2]])
    scores = instance_scores(pred, gt)
    assert scores["aji_plus_inter"] == 2 and scores["aji_plus_union"] == 6
    assert scores["aji_inter"] == 2 and scores["aji_union"] == 6
    assert (scores["tp"], scores["fp"], scores["fn"]) == (0, 1, 1)


def test_pooling_sums_are_exact_for_a_hand_counted_image():
    """The raw sums ``instance_scores`` returns for dataset pooling (see metrics.evaluate), counted by hand."""
    gt = np.array([[1, 1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 0, 0, 7, 7]])  # object 1: inter 2, union 3; object 2: a perfect match
    scores = instance_scores(pred, gt)
    expected = {
        "aji_inter": 4, "aji_union": 5, "aji_plus_inter": 4, "aji_plus_union": 5, "tp": 2, "fp": 0, "fn": 0,
        "dice_inter": 4, "dice_total": 9, "n_gt": 2, "n_pred": 2,
    }  # fmt: skip
    assert {k: scores[k] for k in expected} == expected
    assert scores["iou_sum"] == pytest.approx(2 / 3 + 1)
    assert set(scores) == {*SCORE_KEYS, *expected, "iou_sum"}


def test_boolean_and_whole_float_label_maps_score_like_integer_ones():
    rng = np.random.default_rng(7)
    gt = random_instances(rng, (24, 24), 8)
    pred = perturb(rng, gt)
    reference = instance_scores(pred, gt)
    assert instance_scores(pred.astype(np.float64), gt.astype(np.float32)) == reference
    semantic = instance_scores(pred > 0, gt > 0)
    assert semantic == instance_scores((pred > 0).astype(np.int64), (gt > 0).astype(np.int64))
    assert overlap_table(pred > 0, gt > 0).gt_area.dtype == np.int64


def test_errors_say_which_map_is_wrong():
    fractional, negative = np.full((2, 2), 0.5), -np.ones((2, 2), int)
    zeros = np.zeros((2, 2), int)
    for call in (instance_scores, overlap_table):
        with pytest.raises(DataError, match=r"^prediction: expected an integer label map"):
            call(fractional, zeros)
        with pytest.raises(DataError, match=r"^ground truth: label map has negative values"):
            call(zeros, negative)
    with pytest.raises(DataError, match="both label maps must have the same height and width"):
        overlap_table(np.zeros((3, 4), int), np.zeros((4, 3), int))


def test_relabel_edge_cases_and_table_dtypes():
    assert relabel_contiguous(np.zeros((0, 0), int))[1] == 0
    assert relabel_contiguous(np.array([[0]]))[1] == 0
    flat, n = relabel_contiguous(np.array([[4]]))  # one pixel, one object
    assert (flat.tolist(), n) == ([1], 1)
    flat, n = relabel_contiguous(np.array([[2, 3, 3]]))  # id 1 absent, the others present
    assert (flat.tolist(), n) == ([1, 2, 2], 2)
    one = instance_scores(np.array([[4]]), np.array([[9]]))
    assert (one["aji"], one["n_gt"], one["n_pred"], one["tp"]) == (1.0, 1, 1, 1)
    for pred, gt in [(np.array([[0, 5, 5]]), np.array([[1, 1, 0]])), (np.array([[0, 2**40]]), np.array([[3, 3]]))]:
        table = overlap_table(pred, gt)
        for field in ("gt_area", "pred_area", "gt_index", "pred_index", "inter"):
            assert getattr(table, field).dtype == np.int64, field


def test_unnamed_label_maps_are_called_label_map_in_errors():
    with pytest.raises(DataError, match=r"^label map: expected an integer label map"):
        relabel_contiguous(np.full((2, 2), 0.5))
