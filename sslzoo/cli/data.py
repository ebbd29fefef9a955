"""``sslzoo data ...`` commands: inspect datasets and the packaged samples."""

from __future__ import annotations

import argparse

from sslzoo.vocabulary import DATASET_KINDS


def _info(args: argparse.Namespace) -> int:
    from sslzoo.data.info import dataset_info, format_dataset_info

    info = dataset_info(args.path, args.dataset)
    print(info.model_dump_json(indent=2) if args.json else format_dataset_info(info))
    return 0


def _samples(args: argparse.Namespace) -> int:
    from sslzoo.data.samples import list_samples, sample_dataset_path

    kinds = list_samples()
    width = max(len(kind) for kind in kinds)
    for kind in kinds:
        print(f"{kind:<{width}}  {sample_dataset_path(kind)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="inspect datasets (ISIC 2017, MoNuSeg, DSB 2018, image folders) and the packaged samples",
        description=(
            "Inspect datasets. Readable layouts: the official ISIC 2017 challenge folders, the official "
            "MoNuSeg 'Tissue Images/' + 'Annotations/' (Aperio XML), the simple layout "
            "<split>/images/<id>.<ext> + <split>/masks/<id>.png (+ labels.csv with id,split,class), "
            "or any folder of images (pretraining input)."
        ),
    )
    data.set_defaults(handler=lambda _args: (data.print_help(), 2)[1])
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    info = commands.add_parser(
        "info",
        help="summarise a dataset: layout, task, images per split, instances, image sizes, classes",
        description=(
            "Summarise a dataset folder: kind, layout, task, number of images per split, number of "
            "annotated instances (instance datasets; reads every mask), image sizes (from file headers) "
            "and class counts."
        ),
    )
    info.add_argument("path", metavar="PATH", help="dataset folder")
    info.add_argument(
        "--dataset",
        choices=DATASET_KINDS,
        default=None,
        help="dataset kind; default: detected from the layout, folder name or SOURCE.md",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(handler=_info)

    samples = commands.add_parser(
        "samples",
        help="list the small sample datasets shipped with sslzoo and where they are",
        description="List the packaged sample datasets (kind and path); see their ATTRIBUTION.md for licences.",
    )
    samples.set_defaults(handler=_samples)
