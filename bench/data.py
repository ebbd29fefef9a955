"""Two-view augmentation throughput: sslzoo's albumentations pipelines vs the same in torchvision v2.

For each pipeline (the paper's MoNuSeg list on MoNuSeg tiles, the MoCo v2 list on ISIC 2017
images) the same TwoViewDataset is read through a DataLoader (2 workers, batch 32, 256x256
views) once with sslzoo's transform and once with the torchvision.transforms.v2 rewrite below;
measurements alternate between the two and the median is reported. Images are decoded once
up front so that only cropping, augmenting and normalising is timed. Throughput counts source
tiles per second, each giving two views.

    .venv/bin/python bench/data.py            # full run
    .venv/bin/python bench/data.py --quick    # a short run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ViewPair = tuple[torch.Tensor, torch.Tensor]


class TorchvisionTwoViews:
    """Two independent draws of a torchvision v2 pipeline on a uint8 HWC array."""

    def __init__(self, pipeline: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray) -> ViewPair:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return self.pipeline(tensor), self.pipeline(tensor)


def torchvision_pipeline(name: str, size: int = 256) -> TorchvisionTwoViews:
    """The same steps as sslzoo.data.transforms, in torchvision.transforms.v2.

    The blur kernel is fixed at 15 px, the largest one albumentations derives from sigma <= 2
    (``2 * int(3.5 * 2.0) + 1``); albumentations sizes it per draw.
    """
    from torchvision.transforms import v2

    from sslzoo.data.normalization import IMAGENET_MEAN, IMAGENET_STD

    def jitter(p: float, **ranges: tuple[float, float]) -> v2.RandomApply:
        return v2.RandomApply([v2.ColorJitter(**ranges)], p=p)

    blur = v2.GaussianBlur(kernel_size=15, sigma=(0.1, 2.0))
    crop = v2.RandomResizedCrop(size=(size, size), scale=(0.2, 1.0), antialias=True)
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    if name == "monuseg":
        steps = [
            crop,
            jitter(0.8, brightness=(0.4, 1.6)),
            jitter(0.8, contrast=(0.2, 1.8)),
            jitter(0.8, saturation=(0.2, 1.8)),
            jitter(0.8, brightness=(0.8, 1.2)),
            v2.RandomApply([blur], p=0.8),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
        ]
    else:
        steps = [
            crop,
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([blur], p=0.5),
            v2.RandomHorizontalFlip(p=0.5),
        ]
    return TorchvisionTwoViews(v2.Compose(steps + finish))


def load_sources(data: Path, quick: bool) -> dict[str, tuple[str, list[np.ndarray]]]:
    """Decoded images per pipeline: MoNuSeg train and ISIC 2017 unlabelled, else synthetic."""
    from sslzoo.data.io import list_images, read_image
    from sslzoo.data.synthetic import synthetic_lesion, synthetic_nuclei

    limits = {"monuseg": 8 if quick else 30, "isic2017": 160 if quick else 600}
    folders = {"monuseg": data / "monuseg" / "train" / "images", "isic2017": data / "isic2017" / "unlabeled" / "images"}
    sources: dict[str, tuple[str, list[np.ndarray]]] = {}
    for name, folder in folders.items():
        if folder.is_dir() and list_images(folder):
            paths = list_images(folder)[: limits[name]]
            sources[name] = (f"{name} ({len(paths)} images)", [read_image(p) for p in paths])
        elif name == "monuseg":
            images = [synthetic_nuclei(size=1000, n=60, seed=i)[0] for i in range(limits[name] // 4 or 1)]
            sources[name] = (f"synthetic H&E ({len(images)} x 1000^2)", images)
        else:
            images = [synthetic_lesion(size=256, seed=i)[0] for i in range(limits[name])]
            sources[name] = (f"synthetic skin ({len(images)} x 256^2)", images)
    return sources


def _worker_init(_: int) -> None:
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def throughput(dataset: torch.utils.data.Dataset, batches: int, batch_size: int, workers: int) -> float:
    """Tiles per second over ``batches`` batches, after one warm-up batch (worker start-up)."""
    generator = torch.Generator().manual_seed(0)
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=(batches + 1) * batch_size, generator=generator
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_worker_init,
        prefetch_factor=2 if workers else None,
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = 0
    for first, _ in iterator:
        count += len(first)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, batches and repeats")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding monuseg/ and isic2017/")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=None, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=None, help="measurements per (pipeline, library)")
    args = parser.parse_args(argv)
    batches = args.batches or (4 if args.quick else 12)
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(1)

    from tqdm import tqdm

    from sslzoo.data.pretext_dataset import TwoViewDataset
    from sslzoo.data.transforms import two_view_transform

    sources = load_sources(args.data, args.quick)
    pipelines = [("paper MoNuSeg list", "monuseg"), ("MoCo v2 list", "isic2017")]
    results: dict[tuple[str, str], list[float]] = {}
    jobs = [(label, name, lib) for label, name in pipelines for _ in range(repeats) for lib in ("ours", "tv")]
    for label, name, lib in tqdm(jobs, desc="measuring", file=sys.stderr):
        transform = two_view_transform(name) if lib == "ours" else torchvision_pipeline(name)
        dataset = TwoViewDataset(sources[name][1], transform, size=256)
        results.setdefault((label, lib), []).append(throughput(dataset, batches, args.batch_size, args.workers))

    print(
        f"two-view augmentation throughput: 256x256 views, batch {args.batch_size}, {args.workers} workers, "
        f"{batches} batches x {repeats} repeats (median), torch threads 1 per worker; tiles/s, two views each"
    )
    header = f"| {'pipeline':<20} | {'source':<28} | {'sslzoo (albumentations)':>23} | {'torchvision v2':>14} | ratio |"
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for label, name in pipelines:
        ours = statistics.median(results[(label, "ours")])
        tv = statistics.median(results[(label, "tv")])
        print(f"| {label:<20} | {sources[name][0]:<28} | {ours:>23.1f} | {tv:>14.1f} | {ours / tv:>5.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
