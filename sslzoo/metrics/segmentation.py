"""Segmentation metrics: DSC, AJI, AJI+ and PQ (CONTRACTS.md section 3).

Instance metrics follow HoVer-Net's ``metrics/stats_utils`` (Graham et al. 2019), which
matches the official MoNuSeg MATLAB AJI. Label maps are first made contiguous (ids keep
their sorted order, so "first on ties" means "smallest original id").

All instance metrics come from one sparse overlap table (:func:`overlap_table`), built in a
single pass over the pixels: for every (ground-truth object g, predicted object p) pair that
shares at least one pixel, ``inter(g, p)`` is counted; object areas come from ``np.bincount``,
and ``union(g, p) = area(g) + area(p) - inter(g, p)``. Memory grows with the number of pixels
and overlapping pairs, never with objects x pixels.

Empty cases: both maps empty -> 1.0; exactly one empty -> 0.0; never NaN, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sslzoo.errors import DataError

#: Epsilon added to the union in AJI / AJI+ IoUs (as in HoVer-Net and the MoNuSeg code).
IOU_EPS = 1.0e-6
#: Epsilon added to TP in SQ (as in HoVer-Net).
SQ_EPS = 1.0e-6
#: A PQ match needs IoU strictly above this.
PQ_MATCH_IOU = 0.5


class PQResult(NamedTuple):
    """Panoptic quality: ``pq = dq * sq``."""

    dq: float
    sq: float
    pq: float


@dataclass(frozen=True)
class OverlapTable:
    """Areas and pairwise overlaps of two contiguous label maps.

    Object ``k`` (1-based id) is at index ``k - 1`` of ``gt_area`` / ``pred_area``. The
    pair arrays ``gt_index``, ``pred_index`` (0-based) and ``inter`` list every pair with
    ``inter > 0``, sorted by ``(gt_index, pred_index)``.
    """

    gt_area: np.ndarray
    pred_area: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray
    inter: np.ndarray

    @property
    def n_gt(self) -> int:
        return int(self.gt_area.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_area.size)

    @property
    def union(self) -> np.ndarray:
        """``area(g) + area(p) - inter(g, p)`` per listed pair."""
        return self.gt_area[self.gt_index] + self.pred_area[self.pred_index] - self.inter


def _safe_ratio(num: float, den: float) -> float:
    """``num / den``, or 1.0 when ``den == 0`` (both maps empty)."""
    return 1.0 if den == 0 else float(num) / float(den)


def as_label_map(labels: np.ndarray, name: str = "label map") -> np.ndarray:
    """Return ``labels`` as a non-negative ``int64`` array; reject fractional or negative values."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    whole_floats = np.issubdtype(arr.dtype, np.floating) and bool(
        np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    )
    if not (np.issubdtype(arr.dtype, np.integer) or whole_floats):
        raise DataError(
            f"{name}: expected an integer label map (0 = background, 1..N = object ids), "
            f"got dtype {arr.dtype} with non-integer values; threshold or label it first"
        )
    out = arr.astype(np.int64, copy=False)
    if out.size and out.min() < 0:
        raise DataError(f"{name}: label map has negative values; ids must be 0 (background) or positive")
    return out


def _check_shapes(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise DataError(
            f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}; "
            "both label maps must have the same height and width"
        )


def _relabel_with_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened map with ids 1..N in sorted order, and the N object areas.

    Small ids (at most a few times the pixel count): one ``np.bincount`` gives the areas and a
    lookup table; a map that is already contiguous is returned as is. Huge ids: ``np.unique``.
    Memory is O(pixels) either way.
    """
    flat = as_label_map(labels).ravel()
    if flat.size == 0:
        return flat, np.zeros(0, dtype=np.int64)
    top = int(flat.max())
    if top <= 4 * flat.size + 1024:
        counts = np.bincount(flat, minlength=top + 1)
        present = counts > 0
        present[0] = False
        if present[1:].all():
            return flat, counts[1:]
        lookup = np.cumsum(present)  # id -> its rank among the present ids (1-based)
        return lookup[flat], counts[present]
    ids, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    if ids[0] == 0:
        return inverse, counts[1:]
    return inverse + 1, counts


def relabel_contiguous(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map the ids of ``labels`` onto 1..N in sorted order (0 stays background).

    Returns the flattened ``int64`` relabelled map and N (HoVer-Net's ``remap_label``, vectorised).
    """
    flat, areas = _relabel_with_areas(labels)
    return flat, int(areas.size)


def overlap_table(pred: np.ndarray, gt: np.ndarray) -> OverlapTable:
    """Build the sparse overlap table of two instance label maps of equal shape.

    One pass over the pixels: when the joint table of the raw ids is no larger than the image,
    ``np.bincount`` of ``gt_id * (max_pred_id + 1) + pred_id`` gives intersections and areas at
    once, and dropping absent ids makes the labels contiguous. Otherwise both maps are relabelled
    (:func:`relabel_contiguous`) and ``np.unique`` counts the keys of pixels where both are
    foreground. Memory is O(pixels) either way, independent of the object count.
    """
    pred = as_label_map(pred, "prediction")
    gt = as_label_map(gt, "ground truth")
    _check_shapes(pred, gt)
    budget = gt.size + (1 << 16)
    gt_top, pred_top = int(gt.max(initial=0)), int(pred.max(initial=0))
    if (gt_top + 1) * (pred_top + 1) <= budget:
        stride = pred_top + 1
        keys = gt * stride
        keys += pred
        joint = np.bincount(keys.ravel(), minlength=(gt_top + 1) * stride)
        joint = joint.reshape(gt_top + 1, stride)
        gt_area, pred_area = joint[1:].sum(axis=1), joint[:, 1:].sum(axis=0)
        gt_present, pred_present = gt_area > 0, pred_area > 0
        inter_table = joint[1:, 1:]
        if not gt_present.all():
            inter_table, gt_area = inter_table[gt_present], gt_area[gt_present]
        if not pred_present.all():
            inter_table, pred_area = inter_table[:, pred_present], pred_area[pred_present]
        gt_index, pred_index = np.nonzero(inter_table)
        inter = inter_table[gt_index, pred_index]
    else:
        gt_flat, gt_area = _relabel_with_areas(gt)
        pred_flat, pred_area = _relabel_with_areas(pred)
        stride = pred_area.size + 1
        both = (gt_flat > 0) & (pred_flat > 0)
        pair_keys, inter = np.unique(gt_flat[both] * stride + pred_flat[both], return_counts=True)
        gt_index, pred_index = pair_keys // stride - 1, pair_keys % stride - 1
    return OverlapTable(
        gt_area=gt_area.astype(np.int64),
        pred_area=pred_area.astype(np.int64),
        gt_index=gt_index.astype(np.int64),
        pred_index=pred_index.astype(np.int64),
        inter=inter.astype(np.int64),
    )


# ----------------------------------------------------------------------------- raw sums


def aji_sums(table: OverlapTable) -> tuple[int, int]:
    """AJI numerator C and denominator U (Kumar 2017, MoNuSeg code).

    Each GT object g takes the prediction p* = argmax_p inter/(union + 1e-6) (first p on ties,
    predictions may be reused); GT objects without any overlap stay unmatched.
    C = sum_g inter(g, p*), U = sum_g union(g, p*) + area(unmatched GT) + area(predictions never chosen).
    """
    union = table.union
    iou = table.inter / (union + IOU_EPS)
    # pairs are sorted by (gt, pred): order by gt, then IoU descending, then pred ascending
    order = np.lexsort((table.pred_index, -iou, table.gt_index))
    gt_sorted = table.gt_index[order]
    first_of_gt = np.ones(gt_sorted.size, dtype=bool)
    first_of_gt[1:] = gt_sorted[1:] != gt_sorted[:-1]
    best = order[first_of_gt]
    gt_matched = np.zeros(table.n_gt, dtype=bool)
    gt_matched[table.gt_index[best]] = True
    pred_chosen = np.zeros(table.n_pred, dtype=bool)
    pred_chosen[table.pred_index[best]] = True
    inter_sum = int(table.inter[best].sum())
    union_sum = int(union[best].sum() + table.gt_area[~gt_matched].sum() + table.pred_area[~pred_chosen].sum())
    return inter_sum, union_sum


def _one_to_one_pairs(table: OverlapTable, iou: np.ndarray) -> np.ndarray:
    """Indices into the pair list of a maximum-total-IoU one-to-one matching (IoU > 0 only).

    The bipartite overlap graph splits into connected components; pairs alone in their
    component are matched directly, larger components are solved with
    ``scipy.optimize.linear_sum_assignment`` on their dense sub-block. Objects of other
    components have IoU 0 with them, so the optimum equals that of the full matrix (HoVer-Net
    runs one assignment on the full GT x prediction matrix); where several optima tie, the
    choice agreed with the full-matrix assignment on every tie-heavy random case tested
    (tests/test_metrics_segmentation.py). Memory: O(rows x columns of the largest component).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_pairs = table.inter.size
    if n_pairs == 0:
        return np.zeros(0, dtype=np.int64)
    n_gt, n_pred = table.n_gt, table.n_pred
    graph = coo_matrix(
        (np.ones(n_pairs, dtype=np.int8), (table.gt_index, n_gt + table.pred_index)), shape=(n_gt + n_pred,) * 2
    )
    n_components, component = connected_components(graph, directed=False)
    gt_component, pred_component = component[:n_gt], component[n_gt:]
    # position of each object among the objects of its component, in id order (block row / column)
    gt_rank, gt_count = _rank_within(gt_component, n_components)
    pred_rank, pred_count = _rank_within(pred_component, n_components)
    pair_component = gt_component[table.gt_index]
    order = np.argsort(pair_component, kind="stable")
    sorted_component = pair_component[order]
    starts = np.flatnonzero(np.r_[True, sorted_component[1:] != sorted_component[:-1]])
    sizes = np.diff(np.r_[starts, n_pairs])
    chosen = [order[starts[sizes == 1]]]  # a pair alone in its component is matched
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        members = order[start : start + size]
        comp = sorted_component[start]
        rows, cols = gt_rank[table.gt_index[members]], pred_rank[table.pred_index[members]]
        block = np.zeros((gt_count[comp], pred_count[comp]))
        block[rows, cols] = iou[members]
        pair_of = np.full(block.shape, -1, dtype=np.int64)
        pair_of[rows, cols] = members
        r, c = linear_sum_assignment(-block)  # maximise the total IoU, as HoVer-Net does
        picked = pair_of[r, c]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def _rank_within(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """For each element, its position among the elements of the same group (in index order),
    and the size of every group."""
    order = np.argsort(group, kind="stable")
    count = np.bincount(group, minlength=n_groups)
    first = np.cumsum(count) - count
    rank = np.empty(group.size, dtype=np.int64)
    rank[order] = np.arange(group.size) - first[group[order]]
    return rank, count


def aji_plus_sums(table: OverlapTable) -> tuple[int, int]:
    """AJI+ numerator and denominator (Graham et al. 2019).

    One-to-one pairs maximise the total IoU = inter/(union + 1e-6) (linear_sum_assignment);
    pairs with IoU 0 are dropped. C = sum inter over pairs; U = sum union over pairs + areas of
    unpaired GT and unpaired predictions.
    """
    union = table.union
    pairs = _one_to_one_pairs(table, table.inter / (union + IOU_EPS))
    gt_paired = np.zeros(table.n_gt, dtype=bool)
    gt_paired[table.gt_index[pairs]] = True
    pred_paired = np.zeros(table.n_pred, dtype=bool)
    pred_paired[table.pred_index[pairs]] = True
    inter_sum = int(table.inter[pairs].sum())
    union_sum = int(union[pairs].sum() + table.gt_area[~gt_paired].sum() + table.pred_area[~pred_paired].sum())
    return inter_sum, union_sum


def pq_counts(table: OverlapTable) -> tuple[int, int, int, float]:
    """PQ raw counts ``(tp, fp, fn, iou_sum)``: pairs with IoU = inter/union > 0.5 match (unique by
    construction); FP = unmatched predictions, FN = unmatched GT objects."""
    iou = table.inter / table.union
    matched = iou > PQ_MATCH_IOU
    tp = int(matched.sum())
    return tp, table.n_pred - tp, table.n_gt - tp, float(iou[matched].sum())


def pq_from_counts(tp: float, fp: float, fn: float, iou_sum: float) -> PQResult:
    """DQ = TP / (TP + FP/2 + FN/2), SQ = sum IoU / (TP + 1e-6), PQ = DQ * SQ; all 1.0 when both are empty."""
    den = tp + 0.5 * fp + 0.5 * fn
    if den == 0:
        return PQResult(1.0, 1.0, 1.0)
    dq = float(tp) / den
    sq = float(iou_sum) / (tp + SQ_EPS)
    return PQResult(dq, sq, dq * sq)


def dice_sums(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """``(|A ∩ B|, |A| + |B|)`` of the foregrounds (> 0) of two masks or label maps."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    _check_shapes(pred, gt)
    pred_fg = pred > 0
    gt_fg = gt > 0
    return int(np.count_nonzero(pred_fg & gt_fg)), int(np.count_nonzero(pred_fg) + np.count_nonzero(gt_fg))


# ----------------------------------------------------------------------------- public scores


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """DSC of hard masks: 2|A ∩ B| / (|A| + |B|), foreground = values > 0 (for instance maps: all
    objects together). Both empty -> 1.0."""
    inter, total = dice_sums(pred, gt)
    return _safe_ratio(2 * inter, total)


def aji(pred: np.ndarray, gt: np.ndarray) -> float:
    """Aggregated Jaccard Index C / U (see :func:`aji_sums`). Both empty -> 1.0."""
    return _safe_ratio(*aji_sums(overlap_table(pred, gt)))


def aji_plus(pred: np.ndarray, gt: np.ndarray) -> float:
    """AJI+ C / U with one-to-one pairing (see :func:`aji_plus_sums`). Both empty -> 1.0."""
    return _safe_ratio(*aji_plus_sums(overlap_table(pred, gt)))


def pq(pred: np.ndarray, gt: np.ndarray) -> PQResult:
    """Panoptic quality (Kirillov 2019, HoVer-Net variant), see :func:`pq_from_counts`."""
    return pq_from_counts(*pq_counts(overlap_table(pred, gt)))


def instance_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float | int]:
    """All instance metrics of one image from one overlap table.

    Keys: ``aji``, ``aji_plus``, ``pq``, ``dq``, ``sq``, ``dice`` and the raw sums for pooling
    over a dataset: ``aji_inter``, ``aji_union``, ``aji_plus_inter``, ``aji_plus_union``, ``tp``,
    ``fp``, ``fn``, ``iou_sum``, ``dice_inter``, ``dice_total`` (= |A| + |B|), ``n_gt``, ``n_pred``.
    """
    pred = as_label_map(pred, "prediction")
    gt = as_label_map(gt, "ground truth")
    table = overlap_table(pred, gt)
    aji_inter, aji_union = aji_sums(table)
    plus_inter, plus_union = aji_plus_sums(table)
    tp, fp, fn, iou_sum = pq_counts(table)
    dice_inter, dice_total = dice_sums(pred, gt)
    panoptic = pq_from_counts(tp, fp, fn, iou_sum)
    return {
        "aji": _safe_ratio(aji_inter, aji_union),
        "aji_plus": _safe_ratio(plus_inter, plus_union),
        "pq": panoptic.pq,
        "dq": panoptic.dq,
        "sq": panoptic.sq,
        "dice": _safe_ratio(2 * dice_inter, dice_total),
        "aji_inter": aji_inter,
        "aji_union": aji_union,
        "aji_plus_inter": plus_inter,
        "aji_plus_union": plus_union,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "iou_sum": iou_sum,
        "dice_inter": dice_inter,
        "dice_total": dice_total,
        "n_gt": table.n_gt,
        "n_pred": table.n_pred,
    }
