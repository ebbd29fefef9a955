"""``sslzoo pretrain`` and ``sslzoo methods``: thin wrappers over :func:`sslzoo.pretext.train.pretrain`
and :mod:`sslzoo.pretext.table`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sslzoo.cli.common import add_trainer_arguments
from sslzoo.errors import ConfigError
from sslzoo.vocabulary import BACKBONES, BASELINES, DATASET_KINDS, METHODS


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` → dict; values are JSON when they parse (numbers, lists, true/false), else strings."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: write key=value, e.g. --param temperature=0.2")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain an encoder with a self-supervised pretext method",
        description=(
            f"Pretrain a U-Net encoder on unlabelled images with one pretext method ({', '.join(METHODS)}) and "
            "export it to OUT/model.safetensors + config.json. "
            f"The baselines {' and '.join(BASELINES)} are exported without training. "
            "Defaults follow the paper: SGD lr 1e-3, momentum 0.9, weight decay 1e-4, cosine annealing, 256x256."
        ),
    )
    p.add_argument(
        "--method",
        required=True,
        help=f"pretext method or baseline: {', '.join(METHODS + BASELINES)} (see 'sslzoo methods')",
    )
    p.add_argument("--data", help="folder of (unlabelled) images; not needed for random/imagenet")
    p.add_argument(
        "--dataset",
        choices=DATASET_KINDS,
        help="dataset layout and augmentation list (default: the folder's name if it is one of these, else folder)",
    )
    p.add_argument("--backbone", default="resnet50", help=f"ResNet encoder: {', '.join(BACKBONES)} (default resnet50)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="train for N epochs")
    length.add_argument("--max-steps", type=int, help="train for N optimiser steps")
    p.add_argument(
        "--skip-split",
        action="append",
        default=[],
        metavar="SPLIT",
        help="leave this split's images out of pretraining (repeatable), e.g. --skip-split val to keep the images "
        "you will score on unseen",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--input-size", type=int, default=256, help="crop size in pixels (default 256)")
    p.add_argument(
        "--resize-to",
        type=int,
        help="squeeze whole images to N x N before tiling (as finetune --input-size; the authors use 256 for "
        "ISIC); default: native size, tiled",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output folder (weights, config, checkpoints, logs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    add_trainer_arguments(p, strategy=True)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="method hyper-parameter (repeatable), e.g. --param temperature=0.2; see 'sslzoo methods --table'",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run_pretrain)

    m = subparsers.add_parser(
        "methods",
        help="list the pretext methods (or print Table II)",
        description="List the pretext methods; --table prints Table II (ψ, Δθ counted from built modules, ...).",
    )
    m.add_argument("--table", action="store_true", help="print Table II: ψ, Δθ, batch assumption, notes")
    m.add_argument(
        "--backbone", default="resnet50", help=f"backbone for the Δθ count: {', '.join(BACKBONES)} (default resnet50)"
    )
    m.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    m.set_defaults(handler=run_methods)


def _show_sslzoo_logs() -> None:
    """Print sslzoo's INFO messages (e.g. the queue clamp) on stderr, once."""
    import logging

    logger = logging.getLogger("sslzoo")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def run_pretrain(args: argparse.Namespace) -> int:
    _show_sslzoo_logs()
    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.registry import get_method
    from sslzoo.pretext.train import guess_dataset, pretrain

    if args.method not in BASELINES:
        get_method(args.method)  # unknown names fail here, before any data is read
        if args.data is None:
            raise ConfigError(f"method {args.method!r} needs --data FOLDER of unlabelled images")
        if args.epochs is None and args.max_steps is None:
            raise ConfigError("say how long to train: --epochs N or --max-steps N")
    dataset = args.dataset or (guess_dataset(args.data) if args.data else "folder")
    try:
        config = PretextConfig(
            method=args.method,
            backbone=args.backbone,
            dataset=dataset,
            input_size=args.input_size,
            resize_to=args.resize_to,
            batch_size=args.batch_size,
            lr=args.lr,
            max_epochs=args.epochs,
            max_steps=args.max_steps,
            seed=args.seed,
            params=parse_params(args.param),
        )
    except ValueError as exc:  # pydantic ValidationError
        raise ConfigError(" ".join(str(exc).split())) from exc
    out = pretrain(
        config,
        args.data,
        args.out,
        devices=args.devices,
        accelerator=args.accelerator,
        precision=args.precision,
        strategy=args.strategy,
        resume=args.resume,
        workers=args.workers,
        progress=not args.no_progress,
        skip_splits=args.skip_split,
    )
    print(f"exported {args.method} {args.backbone} encoder to {out}/model.safetensors")
    return 0


def run_methods(args: argparse.Namespace) -> int:
    from sslzoo.pretext.registry import get_method, method_names

    if args.table:
        from sslzoo.models.encoders import check_backbone
        from sslzoo.pretext.table import format_table, method_table

        check_backbone(args.backbone)
        print(format_table(method_table(args.backbone), markdown=args.markdown))
        return 0
    for name in method_names():
        print(f"{name:<12} {get_method(name).notes}")
    for name in BASELINES:
        print(f"{name:<12} baseline (not trained)")
    return 0
