"""``sslzoo rank``: which encoder for my labelled images? (:mod:`sslzoo.downstream.rank`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from sslzoo.vocabulary import BACKBONES, RANK_BUDGETS, RANK_PROBES, RANK_PROXIES, TASKS

if TYPE_CHECKING:
    from sslzoo.downstream.rank import Ranking

# torch-free names for --help (sslzoo.downstream.rank uses the same Literals)
BUDGET_NAMES, PROBE_NAMES, PROXY_NAMES = RANK_BUDGETS, RANK_PROBES, RANK_PROXIES

DESCRIPTION = """\
Rank candidate encoders on your own few labelled images by a cheap proxy of few-label fine-tuning: a
frozen-encoder hypercolumn read-out (every encoder stage upsampled to a common grid and concatenated per
pixel; a closed-form ridge read-out fitted on some images and scored on the others, over repeated seeded
splits). No decoder is trained; the result is deterministic for a seed.

--probe finetune instead trains a light U-Net decoder on the frozen encoder's cached features for a few
steps per split and scores the held-out images with the fine-tuning's metric (DSC; AJI+ after watershed
for instance). It costs more (about 10 s per ResNet-18 encoder on 20 images of 250 px at 2 threads).

Proxy: semantic -> foreground DSC; instance -> foreground DSC (also reported: R² of the distance map and AJI+
after watershed). See docs/rank.md for the validation and when not to trust the ranking.

Candidates (--encoders all, the default): the packaged encoders, finished encoder entries of the zoo folders
in $SSLZOO_ZOO_DIR ('sslzoo zoo build'), and random init. Or name them: zoo names, encoder folders, random,
imagenet (needs its weights in the local cache). Nothing is downloaded.

--data takes any dataset folder sslzoo reads (<split>/images + <split>/masks with matching file names, the
official ISIC 2017 / MoNuSeg layouts): every labelled image is used.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rank",
        help="rank the zoo's encoders on your few labelled images (which pretraining to use?)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder with images and masks")
    parser.add_argument("--task", required=True, choices=TASKS, help="kind of segmentation")
    parser.add_argument(
        "--encoders", nargs="+", default=None, metavar="NAME", help="'all' (default) or encoder names / folders"
    )
    parser.add_argument(
        "--budget",
        default="standard",
        choices=BUDGET_NAMES,
        help="readout: quick 3 splits x 1024 cells/image, standard 5 x 2048, thorough 10 x 4096; "
        "finetune: quick 1 split x 20 steps, standard 2 x 15, thorough 3 x 40",
    )
    parser.add_argument(
        "--probe", default="readout", choices=PROBE_NAMES, help="readout (default) or a short finetune per split"
    )
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="--probe finetune: steps per split")
    parser.add_argument("--splits", type=int, default=None, metavar="N", help="repeated splits (overrides --budget)")
    parser.add_argument("--proxy", default=None, choices=PROXY_NAMES, help="rank by this proxy")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="use at most N labelled images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and pixel draws (default 0)")
    parser.add_argument(
        "--backbone",
        default=None,
        help=f"backbone of random/imagenet init: {', '.join(BACKBONES)} (default: the one most candidates use)",
    )
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    parser.add_argument("--plot", default=None, metavar="PNG", help="also write a bar chart of the ranking")
    parser.add_argument("--json", action="store_true", help="print the ranking as JSON (the REST answer's shape)")
    parser.set_defaults(handler=run_rank)


def print_table(ranking: Ranking, out: TextIO) -> None:
    """Rank, encoder, score ± std, the other proxies, where it comes from; then timing and the recommendation."""
    from sslzoo.downstream.rank import UNSTABLE_AGREEMENT

    names = list(ranking.ranking[0].proxies) if ranking.ranking else []
    width = max([len("encoder")] + [len(r.encoder) for r in ranking.ranking])
    header = f"{'rank':>4}  {'encoder':<{width}}  {'score':>7}  {'± std':>6}  " + "  ".join(f"{n:>8}" for n in names)
    print(header + "  source", file=out)
    print("-" * (len(header) + 8), file=out)
    for row in ranking.ranking:
        proxies = "  ".join(f"{row.proxies[n]:>8.4f}" for n in names)
        print(
            f"{row.rank:>4}  {row.encoder:<{width}}  {row.score:>7.4f}  {row.std:>6.4f}  {proxies}  {row.source}",
            file=out,
        )
    print(
        f"score: {ranking.proxy_description} ({ranking.proxy}), mean ± std over {ranking.n_splits} splits of "
        f"{ranking.n_images} images ({ranking.test_images_per_split} held out each); {ranking.seconds:.1f} s",
        file=out,
    )
    if ranking.split_agreement is not None:
        print(
            f"split agreement: {ranking.split_agreement:.2f} (Spearman between the splits' encoder orders; "
            f"below {UNSTABLE_AGREEMENT} the order is mostly noise)",
            file=out,
        )
    for warning in ranking.warnings:
        print(f"warning: {warning}", file=out)
    print(f"recommendation: {ranking.recommendation}", file=out)


def run_rank(args: argparse.Namespace) -> int:
    from sslzoo.downstream.rank import RankSettings, plot_ranking, rank_folder

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = RankSettings.from_budget(
        args.budget,
        splits=args.splits,
        proxy=args.proxy,
        seed=args.seed,
        backbone=args.backbone,
        probe=args.probe,
        finetune_steps=args.steps,
    )

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    ranking = rank_folder(
        args.data,
        args.task,
        args.encoders,
        settings,
        max_images=args.max_images,
        progress=None if args.json else progress,
    )
    if args.json:
        print(ranking.model_dump_json(indent=2))
    else:
        print_table(ranking, sys.stdout)
    if args.plot:
        path = plot_ranking(ranking, args.plot)
        print(f"bar chart written to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0
