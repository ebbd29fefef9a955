"""``sslzoo finetune``: a thin wrapper over :func:`sslzoo.downstream.finetune.finetune`."""

from __future__ import annotations

import argparse

from sslzoo.cli.common import add_trainer_arguments
from sslzoo.errors import ConfigError
from sslzoo.vocabulary import BACKBONES, DATASET_KINDS, FROZEN_BN_MODES, TASKS, WATERSHED_MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a U-Net on few labels and score it",
        description=(
            "Fine-tune a U-Net whose encoder comes from INIT (random, imagenet, an encoder folder or a zoo name) on "
            "a share (--rate) of the training tiles of a labelled dataset: Dice loss (semantic) or smooth-L1 on "
            "per-nucleus distance maps + seeded watershed (instance; fixed or tuned parameters); Adam lr 1e-3, "
            "early stopping on a validation share of the labelled tiles. The segmenter is saved to OUT and "
            "scored on the dataset's test/val split (or a "
            "fixed 20 % hold-out of the images): DSC (semantic) or AJI+ (instance), written to OUT/result.json. "
            "Running again with the same options returns that result without training."
        ),
    )
    p.add_argument("--init", default="random", help="encoder: random, imagenet, an encoder folder or a zoo name")
    p.add_argument("--data", required=True, help="labelled dataset folder (images + masks)")
    p.add_argument("--task", choices=TASKS, help="default: the dataset's task")
    p.add_argument("--rate", type=float, default=1.0, help="annotation rate in (0, 1], e.g. 0.04 (default 1.0)")
    p.add_argument("--frozen", action="store_true", help="keep the encoder frozen (train the decoder only)")
    p.add_argument(
        "--frozen-bn",
        choices=FROZEN_BN_MODES,
        default="train",
        help="batch norm of a --frozen encoder: train (default, as the authors: batch statistics, running "
        "statistics updated) or eval (running statistics fixed)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subset draw and training (default 0)")
    p.add_argument("--out", required=True, help="output folder (segmenter, result.json, metrics.csv, checkpoints)")
    p.add_argument("--backbone", default="resnet50", help=f"ResNet encoder: {', '.join(BACKBONES)} (default resnet50)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=200, help="maximum epochs (default 200; early stopping)")
    length.add_argument("--max-steps", type=int, help="train for at most N optimiser steps instead of epochs")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per step (default 4, as the authors)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--tile-size", type=int, default=256, help="training tile size in pixels (default 256)")
    p.add_argument("--tiles-per-image", type=int, help="use at most N tiles per training image (CPU runs)")
    p.add_argument(
        "--input-size",
        type=int,
        help="semantic only: squeeze whole images to N x N for training and inference (e.g. 128 for ISIC "
        "dermoscopy, whose lesions fill the frame); the mask comes back at the input's size. Default: native "
        "resolution, tiled",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the labelled (rate-subset) tiles held out for validation (default 0.2, as the authors)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=40,
        help="early-stopping patience in epochs (default 40, as the authors; the lr halves after half of it)",
    )
    p.add_argument(
        "--watershed",
        choices=WATERSHED_MODES,
        default="fixed",
        help="instance: the authors' fixed post-processing (default; sigma 1, foreground 0.09, seeds 0.4, hole "
        "filling, area 0.05-10 x median) or parameters tuned on the run's training tiles",
    )
    p.add_argument("--eval-split", help="split to score (default: test, else val, else a fixed 20 %% hold-out)")
    p.add_argument("--dataset", choices=DATASET_KINDS, help="dataset kind (default: detected from the folder)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    add_trainer_arguments(p, strategy=False)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sslzoo.downstream.finetune import FinetuneConfig, finetune

    try:
        config = FinetuneConfig(
            init=args.init,
            backbone=args.backbone,
            task=args.task,
            dataset=args.dataset,
            rate=args.rate,
            frozen=args.frozen,
            frozen_bn=args.frozen_bn,
            seed=args.seed,
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            tile_size=args.tile_size,
            tiles_per_image=args.tiles_per_image,
            input_size=args.input_size,
            val_fraction=args.val_fraction,
            patience=args.patience,
            eval_split=args.eval_split,
            watershed=args.watershed,
            workers=args.workers,
        )
    except ValidationError as exc:
        raise ConfigError(str(exc).replace("\n", " ")) from exc
    result = finetune(
        config,
        args.data,
        args.out,
        accelerator=args.accelerator,
        devices=args.devices,
        precision=args.precision,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(
        f"{result.task} {result.metric} = {result.score:.4f} on {result.n_eval_images} images "
        f"({result.n_train_tiles} training tiles, {result.epochs} epochs, {result.train_seconds:.1f} s)"
    )
    print("mean:   " + "  ".join(f"{k}={v:.4f}" for k, v in result.scores.items()))
    print("pooled: " + "  ".join(f"{k}={v:.4f}" for k, v in result.pooled.items()))
    print(f"segmenter and result.json in {result.out_dir}")
    return 0
