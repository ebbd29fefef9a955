"""Instance metrics: sslzoo's vectorised AJI / AJI+ / PQ vs HoVer-Net's ``stats_utils``.

On 1000x1000 MoNuSeg label maps (the images whose object count is nearest ``--objects``,
default 800), perturbed into predictions (shift, dilation, dropped / split / merged objects,
spurious blobs), each metric runs on the same maps with both implementations in the same
process: wall time per image (ours: best of ``--repeat``; HoVer-Net: one run, it is slow),
peak memory of the call (``tracemalloc``, which sees numpy's allocations; measured in a
separate run from the timing) and the largest absolute difference of the scores. A second
table shows that our peak memory does not grow with the number of objects (synthetic maps).
Without the shared data, synthetic maps with ``--objects`` disks replace MoNuSeg.

HoVer-Net is not part of sslzoo; get its metrics file outside this repository:

    # with the repository cloned somewhere (https://github.com/vqdang/hover_net):
    mkdir -p /tmp/hovernet_ref && git -C /path/to/hover_net archive HEAD metrics | tar -x -C /tmp/hovernet_ref
    .venv/bin/python bench/metrics.py --hovernet /tmp/hovernet_ref

``--hovernet`` takes the folder holding ``metrics/stats_utils.py`` (or the file itself).
Without it, only sslzoo's numbers are measured.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sslzoo.metrics.segmentation import aji, aji_plus, pq, relabel_contiguous  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("SSLZOO_SHARED_DATA", REPO.parent / "shared" / "data"))
HOVERNET_HELP = (
    "HoVer-Net's metrics are not bundled. Get them outside this repository, e.g.\n"
    "  git clone https://github.com/vqdang/hover_net /tmp/hover_net  (or use an existing mirror)\n"
    "  mkdir -p /tmp/hovernet_ref && git -C /tmp/hover_net archive HEAD metrics | tar -x -C /tmp/hovernet_ref\n"
    "then pass --hovernet /tmp/hovernet_ref"
)
HOVERNET_FUNCTIONS = ("get_fast_aji", "get_fast_aji_plus", "get_fast_pq", "remap_label")


# ----------------------------------------------------------------------------- HoVer-Net loading


def load_hovernet(path: Path) -> ModuleType:
    """Import HoVer-Net's ``stats_utils``; if an unrelated import in it fails (cv2, matplotlib),
    load only the metric functions with numpy / scipy in their namespace."""
    file = path if path.is_file() else path / "metrics" / "stats_utils.py"
    if not file.is_file():
        sys.exit(f"error: {file} not found.\n{HOVERNET_HELP}")
    spec = importlib.util.spec_from_file_location("hovernet_stats_utils", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module
    except ImportError as exc:
        print(f"note: importing {file} failed ({exc}); loading only {', '.join(HOVERNET_FUNCTIONS)}", file=sys.stderr)
    import scipy
    from scipy.optimize import linear_sum_assignment

    tree = ast.parse(file.read_text())
    tree.body = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in HOVERNET_FUNCTIONS]
    module = ModuleType("hovernet_stats_utils")
    module.__dict__.update(np=np, scipy=scipy, linear_sum_assignment=linear_sum_assignment)
    exec(compile(tree, str(file), "exec"), module.__dict__)
    return module


# ----------------------------------------------------------------------------- maps


def contiguous(labels: np.ndarray) -> np.ndarray:
    flat, _ = relabel_contiguous(labels)
    return flat.reshape(labels.shape).astype(np.int32)


def perturb(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A realistic imperfect prediction of ``gt`` (vectorised): shift by a few pixels, grow objects
    by one pixel into the background, drop 10 %, merge 5 % into a neighbour id, split 5 % at their
    centroid column, add spurious 3-7 px blobs (5 % of the object count)."""
    from scipy import ndimage as ndi

    pred = np.roll(gt, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    grown = ndi.grey_dilation(pred, size=3)
    pred = np.where(pred == 0, grown, pred)
    n = int(pred.max())
    lookup = np.arange(n + 1)
    ids = rng.permutation(np.arange(1, n + 1))
    n_drop, n_merge, n_split = n // 10, n // 20, n // 20
    lookup[ids[:n_drop]] = 0
    merged = ids[n_drop : n_drop + n_merge]
    lookup[merged] = np.maximum(merged - 1, 1)
    pred = lookup[pred]
    split = ids[n_drop + n_merge : n_drop + n_merge + n_split]
    cols = np.broadcast_to(np.arange(pred.shape[1]), pred.shape)
    counts = np.bincount(pred.ravel(), minlength=n + 1)
    centroid_col = np.bincount(pred.ravel(), weights=cols.ravel(), minlength=n + 1) / np.maximum(counts, 1)
    right_half = np.isin(pred, split) & (cols >= centroid_col[pred])
    pred = np.where(right_half, pred + n, pred)
    for k in range(max(1, n // 20)):
        y, x = rng.integers(0, pred.shape[0] - 8, size=2)
        h, w = rng.integers(3, 8, size=2)
        block = pred[y : y + h, x : x + w]
        block[block == 0] = 3 * n + 1 + k
    return contiguous(pred)


def synthetic_instances(n_objects: int, rng: np.random.Generator, size: int = 1000) -> np.ndarray:
    """Disks at random places (later ones on top), radii scaled so that they cover about 30 % of
    the image whatever their number, as nuclei do in H&E tiles."""
    r0 = max(2.0, float(np.sqrt(0.3 * size * size / (np.pi * n_objects))))
    labels = np.zeros((size, size), dtype=np.int32)
    for k in range(1, n_objects + 1):
        r = int(round(rng.uniform(0.6, 1.4) * r0))
        cy, cx = rng.integers(r, size - r, size=2)
        yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
        window = labels[cy - r : cy + r + 1, cx - r : cx + r + 1]
        window[yy**2 + xx**2 <= r * r] = k
    return contiguous(labels)


def load_maps(data: Path, n_images: int, target: int, synthetic: bool, rng: np.random.Generator):
    """``[(name, gt, pred)]``: MoNuSeg masks nearest ``target`` objects, else synthetic maps."""
    masks = sorted((data / "monuseg" / "train" / "masks").glob("*.png")) if not synthetic else []
    if masks:
        from sslzoo.data.io import read_label_map

        maps = [(path.stem, contiguous(read_label_map(path))) for path in masks]
        maps.sort(key=lambda item: abs(int(item[1].max()) - target))
        chosen = maps[:n_images]
    else:
        if not synthetic:
            print(f"note: no MoNuSeg masks under {data}; using synthetic maps", file=sys.stderr)
        chosen = [(f"synthetic-{k}", synthetic_instances(target, rng)) for k in range(n_images)]
    return [(name, gt, perturb(gt, rng)) for name, gt in chosen]


# ----------------------------------------------------------------------------- measuring


def timed(fn: Callable[[], object], repeat: int) -> tuple[object, float, float]:
    """``(value, best CPU seconds, best wall seconds)`` over ``repeat`` calls. CPU time
    (``time.process_time``) is the fair measure on a shared machine; both are recorded."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        value = fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return value, best_cpu, best_wall


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak of traced allocations during ``fn()`` above what was allocated before, in MiB."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - before) / 2**20


def metric_pairs(hovernet: ModuleType | None) -> dict[str, tuple[Callable, Callable | None]]:
    """metric -> (ours(pred, gt) -> float, theirs(gt, pred) -> float)."""
    theirs: dict[str, Callable | None] = dict.fromkeys(("AJI", "AJI+", "PQ"))
    if hovernet is not None:
        theirs = {
            "AJI": hovernet.get_fast_aji,
            "AJI+": hovernet.get_fast_aji_plus,
            "PQ": lambda true, pred: hovernet.get_fast_pq(true, pred)[0][2],
        }
    return {
        "AJI": (aji, theirs["AJI"]),
        "AJI+": (aji_plus, theirs["AJI+"]),
        "PQ": (lambda pred, gt: pq(pred, gt).pq, theirs["PQ"]),
    }


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    hovernet = load_hovernet(args.hovernet) if args.hovernet is not None else None
    if hovernet is None:
        print(f"note: --hovernet not given; measuring sslzoo only.\n{HOVERNET_HELP}", file=sys.stderr)
    maps = load_maps(args.data, args.images, args.objects, args.synthetic, rng)
    rows = []
    for name, gt, pred in maps:
        for metric, (ours, theirs) in metric_pairs(hovernet).items():
            score, seconds, wall = timed(lambda o=ours, g=gt, p=pred: o(p, g), args.repeat)
            row = {
                "image": name,
                "n_gt": int(gt.max()),
                "n_pred": int(pred.max()),
                "metric": metric,
                "score": float(score),
                "ours_s": seconds,
                "ours_wall_s": wall,
                "ours_peak_mib": peak_mib(lambda o=ours, g=gt, p=pred: o(p, g)),
            }
            if theirs is not None:
                their_score, their_seconds, their_wall = timed(lambda t=theirs, g=gt, p=pred: t(g, p), 1)
                row.update(
                    theirs_s=their_seconds,
                    theirs_wall_s=their_wall,
                    speedup=their_seconds / seconds,
                    theirs_peak_mib=peak_mib(lambda t=theirs, g=gt, p=pred: t(g, p)),
                    abs_diff=abs(float(their_score) - float(score)),
                )
            rows.append(row)
            print(f"  {name} {metric}: done", file=sys.stderr)
    scaling = []
    for n in args.scaling:
        gt = synthetic_instances(n, rng)
        pred = perturb(gt, rng)
        for metric, (ours, _) in metric_pairs(None).items():
            _, seconds, _ = timed(lambda o=ours, g=gt, p=pred: o(p, g), args.repeat)
            scaling.append(
                {
                    "objects": int(gt.max()),
                    "metric": metric,
                    "ours_s": seconds,
                    "ours_peak_mib": peak_mib(lambda o=ours, g=gt, p=pred: o(p, g)),
                }
            )
    return {"rows": rows, "scaling": scaling}


def print_tables(result: dict) -> None:
    rows = result["rows"]
    with_theirs = any("theirs_s" in row for row in rows)
    head = "| image | GT / pred objects | metric | ours CPU s/image | ours peak MiB |"
    if with_theirs:
        head += " HoVer-Net CPU s/image | HoVer-Net peak MiB | speed-up | abs diff |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for row in rows:
        line = (
            f"| {row['image']} | {row['n_gt']} / {row['n_pred']} | {row['metric']} | {row['ours_s']:.4f} "
            f"| {row['ours_peak_mib']:.1f} |"
        )
        if "theirs_s" in row:
            line += (
                f" {row['theirs_s']:.2f} | {row['theirs_peak_mib']:.0f} | {row['speedup']:.0f}x "
                f"| {row['abs_diff']:.1e} |"
            )
        print(line)
    if with_theirs:
        diffs = [row["abs_diff"] for row in rows]
        speedups = [row["speedup"] for row in rows]
        summary = f"speed-up min {min(speedups):.0f}x, median {float(np.median(speedups)):.0f}x"
        print(f"\nmax |difference| over all rows: {max(diffs):.1e}; {summary}")
    if result["scaling"]:
        print("\nsslzoo peak memory vs object count (synthetic 1000x1000 maps)\n")
        print("| objects | metric | ours CPU s/image | ours peak MiB |")
        print("|---|---|---|---|")
        for row in result["scaling"]:
            print(f"| {row['objects']} | {row['metric']} | {row['ours_s']:.4f} | {row['ours_peak_mib']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hovernet", type=Path, help="folder holding HoVer-Net's metrics/stats_utils.py")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--images", type=int, default=2, help="number of 1000x1000 images (default 2)")
    parser.add_argument("--objects", type=int, default=800, help="target objects per image (default 800)")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic maps even when MoNuSeg is present")
    parser.add_argument("--repeat", type=int, default=5, help="timing repeats for sslzoo (best is reported)")
    parser.add_argument(
        "--scaling", type=int, nargs="*", default=[100, 800, 3200], help="object counts for the memory-scaling table"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the raw measurements to this JSON file")
    args = parser.parse_args(argv)
    result = run(args)
    print_tables(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
