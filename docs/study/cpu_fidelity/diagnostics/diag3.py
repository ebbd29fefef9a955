# ruff: noqa: E402, E501
# Diagnostics of docs/study/cpu_fidelity; run from the repository root with PYTHONPATH=$PWD (reads runs/cpu_fidelity).
"""Recalibrate batch-norm running statistics on training tiles (cumulative average, train-mode forward, no grad),
then score one scored image with the fixed watershed: does the collapse come from unconverged BN statistics?"""

import sys

import numpy as np
import torch

torch.set_num_threads(1)
from sslzoo.data.datasets import open_dataset
from sslzoo.data.transforms import normalize_to_tensor
from sslzoo.downstream.data import split_train_eval
from sslzoo.metrics.segmentation import aji_plus
from sslzoo.models.postprocess import FIXED_WATERSHED, distance_to_instances
from sslzoo.models.segmenter import Segmenter

idx = open_dataset("/work/shared/data/monuseg", "monuseg")
train = split_train_eval(idx).train
for run in sys.argv[1:]:
    seg = Segmenter.from_pretrained(f"runs/cpu_fidelity/runs/{run}")
    tiles = []
    for s in train[::3]:
        im = idx.read_image(s)
        tiles += [
            normalize_to_tensor(im[y : y + 128, x : x + 128], seg.config.mean, seg.config.std)
            for y, x in ((0, 0), (400, 400), (800, 800))
        ]
    bns = [m for m in seg.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    seg.model.train()
    with torch.no_grad():
        for b in torch.stack(tiles).split(8):
            seg.model(b)
    seg.model.eval()
    sample = next(s for s in idx.samples if s.id == seg.config.training["eval_ids"][0])
    img, gt = idx.read_image(sample), idx.read_mask(sample)
    d = seg.predict_map(img)
    lab = distance_to_instances(d, FIXED_WATERSHED)
    print(
        f"{run} {sample.id} after BN recalibration on {len(tiles)} training tiles: distance max {d.max():.3f}, "
        f"99 % {np.quantile(d, 0.99):.3f}; fixed watershed {lab.max()} objects (GT {np.unique(gt).size - 1}), AJI+ {aji_plus(gt, lab):.3f}"
    )
