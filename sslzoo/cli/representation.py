"""Commands ``sslzoo compare-encoders`` (stage-wise CKA, Table III) and ``sslzoo neighbours`` (NQC, Fig. 4).

Thin wrappers over :mod:`sslzoo.metrics.representation`: datasets are opened with
:func:`sslzoo.data.datasets.open_dataset` and images go through the evaluation transform (shorter side resized,
centre crop, the encoder's mean/std). Heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from sslzoo.errors import ConfigError, DataError
from sslzoo.vocabulary import BACKBONES, DATASET_KINDS


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available; use --device cpu")
    return torch.device(name)


def _fmt(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.4f}"


def compare_encoders(args: argparse.Namespace) -> int:
    import torch

    from sslzoo.hub import load_encoder
    from sslzoo.metrics.representation import encoder_stage_cka, images_loader, select_samples, stage_means

    if args.batch_size < 4:
        raise ConfigError(f"--batch-size must be at least 4 (unbiased HSIC), got {args.batch_size}")
    torch.manual_seed(args.seed)  # 'random' A and B are two different draws
    device = _device(args.device)
    encoder_a, config_a = load_encoder(args.encoder_a, args.backbone)
    encoder_b, config_b = load_encoder(args.encoder_b, args.backbone)
    if (config_a.mean, config_a.std) != (config_b.mean, config_b.std):
        print(
            f"warning: the encoders expect different normalisation; images use A's mean {config_a.mean} "
            f"and std {config_a.std}",
            file=sys.stderr,
        )
    index, samples = select_samples(args.data, args.dataset, args.split, args.max_images, args.seed)
    if len(samples) < args.batch_size:
        raise DataError(
            f"{len(samples)} image(s) cannot fill one CKA minibatch of {args.batch_size}; "
            "lower --batch-size or pass more images"
        )
    size = args.size or config_a.input_size
    loader = images_loader(index, samples, size, config_a.mean, config_a.std, args.batch_size)
    values = encoder_stage_cka(
        encoder_a.to(device), encoder_b.to(device), loader, args.stages, batch_size=args.batch_size, progress=True
    )
    row = stage_means(values)
    used = (len(samples) // args.batch_size) * args.batch_size
    result = {
        "encoder_a": str(args.encoder_a),
        "encoder_b": str(args.encoder_b),
        "backbone_a": config_a.backbone,
        "backbone_b": config_b.backbone,
        "data": str(args.data),
        "n_images": used,
        "n_dropped": len(samples) - used,
        "batch_size": args.batch_size,
        "size": size,
        "cka": {k: None if math.isnan(v) else v for k, v in row.items() if k != "mean"},
        "mean": None if math.isnan(row["mean"]) else row["mean"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"linear CKA (unbiased HSIC, minibatches of {args.batch_size}) on {used} images of {args.data}")
    print(f"A = {args.encoder_a}\nB = {args.encoder_b}")
    print("stage  CKA")
    for label, value in row.items():
        print(f"{label:<5}  {_fmt(value)}")
    return 0


def neighbours(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sslzoo.hub import load_encoder
    from sslzoo.metrics.representation import embed_images, images_loader, nqc, plot_neighbours, select_samples

    torch.manual_seed(args.seed)
    device = _device(args.device)
    encoder, config = load_encoder(args.encoder, args.backbone)
    index, samples = select_samples(args.data, args.dataset, args.split, args.max_images, args.seed, labelled=True)
    labels = [str(s.label) for s in samples]
    size = args.size or config.input_size
    loader = images_loader(index, samples, size, config.mean, config.std, args.batch_size)
    embeddings = embed_images(encoder.to(device), loader, progress=True)
    result = nqc(embeddings, labels, n_components=args.components)

    grid = None
    if args.out is not None:
        rng = np.random.default_rng(args.seed)
        queries = sorted(rng.choice(len(samples), size=min(args.queries, len(samples)), replace=False).tolist())
        shown = {int(j) for q in queries for j in (q, result.nearest_index[q], result.farthest_index[q])}
        images = {j: index.read_image(samples[j]) for j in shown}
        grid = plot_neighbours(images, labels, result.nearest_index, result.farthest_index, queries, args.out)
    class_counts = {str(k): v for k, v in result.class_counts.items()}
    payload = {
        "encoder": str(args.encoder),
        "backbone": config.backbone,
        "data": str(args.data),
        "n_images": len(samples),
        "n_components": result.n_components,
        "nqc": result.nqc,
        "random_expectation": result.random_expectation,
        "loo_expectation": result.loo_expectation,
        "class_counts": class_counts,
        "grid": None if grid is None else str(grid),
    }
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in class_counts.items())
    print(f"NQC of {args.encoder} on {len(samples)} images of {args.data} ({counts})")
    print(f"NQC                               {result.nqc:.4f}")
    print(f"random expectation sum (n_c/l)^2  {result.random_expectation:.4f}")
    print(f"leave-one-out expectation         {result.loo_expectation:.4f}")
    if grid is not None:
        print(f"grid: {grid}")
    return 0


# ----------------------------------------------------------------------------------------------- registration


def _add_common(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--data", required=True, help="dataset folder (e.g. ../shared/data/isic2017)")
    parser.add_argument(
        "--dataset", choices=DATASET_KINDS, default=None, help="dataset layout (default: detected from the folder)"
    )
    parser.add_argument("--split", default=None, help="use only this split (e.g. val); default: all samples")
    parser.add_argument(
        "--backbone",
        default="resnet50",
        help=f"backbone for 'random'/'imagenet': {', '.join(BACKBONES)} (default resnet50)",
    )
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"images per batch (default {batch_size})")
    parser.add_argument("--max-images", type=int, default=None, help="use a seeded random subset of N images")
    parser.add_argument("--size", type=int, default=None, help="input size (default: the encoder's, usually 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsets and random init (default 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:
    compare = subparsers.add_parser(
        "compare-encoders",
        help="stage-wise CKA between two encoders (Table III)",
        description=(
            "Linear CKA (unbiased HSIC, averaged over fixed-size minibatches; the last partial batch is dropped) "
            "between stage k of encoder A and stage k of encoder B on the images of a dataset. Stages follow "
            "Table III and the authors' code: Conv1..Conv4 = ResNet layer1..layer4 (0 = the stem). Encoders are "
            "'random', 'imagenet' or an exported encoder folder."
        ),
    )
    compare.add_argument("encoder_a", metavar="A", help="first encoder: random | imagenet | folder")
    compare.add_argument("encoder_b", metavar="B", help="second encoder: random | imagenet | folder")
    _add_common(compare, batch_size=16)
    compare.add_argument(
        "--stages",
        type=int,
        nargs="+",
        choices=[0, 1, 2, 3, 4],
        default=[1, 2, 3, 4],
        help="encoder stages: 1 = Conv1 (layer1) .. 4 = Conv4 (layer4), 0 = the stem (default 1 2 3 4)",
    )
    compare.set_defaults(handler=compare_encoders)

    near = subparsers.add_parser(
        "neighbours",
        help="NQC: nearest-neighbour class agreement of an encoder's embeddings (Fig. 4)",
        description=(
            "Embeds every labelled image (global-average-pooled last stage), reduces to 10 PCA dimensions "
            "fitted on these images, and reports NQC = share of images whose Euclidean nearest neighbour "
            "(not itself) has the same class, with the random expectation sum_c (n_c/l)^2 and the exact "
            "leave-one-out one. Class labels come from the dataset (ISIC 2017 diagnosis, MoNuSeg organ). "
            "--out writes a PNG grid of query images with their nearest and farthest neighbours."
        ),
    )
    near.add_argument("encoder", metavar="ENCODER", help="random | imagenet | exported encoder folder")
    _add_common(near, batch_size=32)
    near.add_argument("--components", type=int, default=10, help="PCA dimensions (default 10)")
    near.add_argument("--out", default=None, help="write the neighbour grid PNG here (e.g. grid.png)")
    near.add_argument("--queries", type=int, default=6, help="query rows in the grid (default 6)")
    near.set_defaults(handler=neighbours)
