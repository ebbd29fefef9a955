"""``sslzoo evaluate``: score folders of predicted label images against ground truth."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sslzoo.vocabulary import TASKS

if TYPE_CHECKING:
    from sslzoo.metrics.evaluate import EvaluationResult

DESCRIPTION = """\
Score predicted masks / label maps against ground truth, matched by file name
without suffix (PNG, TIF, TIFF).

semantic: masks are binarised (> 0; float probability TIFFs at 0.5); metric: dice.
instance: 0 = background, 1..N = one id per object; metrics: aji, aji_plus, pq,
          dq, sq, dice (HoVer-Net / MoNuSeg semantics, see CONTRACTS.md section 3).

Prints a per-image table plus the dataset scores: 'mean' (mean of per-image
scores, the challenge convention) and 'pooled' (sums over all images before
dividing). --json prints the same as JSON (the shape of POST /predictions/evaluate).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks/label maps against ground truth (DSC, AJI, AJI+, PQ)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="kind of segmentation")
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predictions")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground-truth masks")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the per-image scores to this CSV file")
    parser.add_argument("--model", help="model name to record in the result (optional)")
    parser.set_defaults(handler=run_evaluate)


def print_table(result: EvaluationResult, out: TextIO) -> None:
    """Per-image rows, then the 'mean' and 'pooled' rows, 4 decimals."""
    from sslzoo.metrics.evaluate import METRICS

    names = METRICS[result.task]
    width = max([len("pooled")] + [len(str(row["id"])) for row in result.per_image])
    header = f"{'id':<{width}}  " + "  ".join(f"{name:>8}" for name in names)
    print(header, file=out)
    print("-" * len(header), file=out)

    def line(label: str, scores: dict[str, Any]) -> str:
        return f"{label:<{width}}  " + "  ".join(f"{float(scores[name]):>8.4f}" for name in names)

    for row in result.per_image:
        print(line(str(row["id"]), row), file=out)
    print("-" * len(header), file=out)
    print(line("mean", result.mean), file=out)
    print(line("pooled", result.pooled), file=out)
    print(f"{result.n_images} image(s), task {result.task}", file=out)


def write_csv(result: EvaluationResult, path: Path) -> None:
    """One row per image: ``id`` and the task's metrics."""
    from sslzoo.metrics.evaluate import METRICS

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", *METRICS[result.task]])
        writer.writeheader()
        writer.writerows(result.per_image)


def run_evaluate(args: argparse.Namespace) -> int:
    from sslzoo.metrics.evaluate import evaluate_folders

    result = evaluate_folders(args.pred, args.gt, args.task, model=args.model, progress=True)
    if args.csv is not None:
        write_csv(result, args.csv)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_table(result, sys.stdout)
        if args.csv is not None:
            print(f"per-image scores written to {args.csv}")
    return 0
