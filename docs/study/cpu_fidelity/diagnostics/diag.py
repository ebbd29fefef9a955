# ruff: noqa: E402
# Diagnostics of docs/study/cpu_fidelity; run from the repository root with PYTHONPATH=$PWD (reads runs/cpu_fidelity).
"""Why AJI+ collapses under the fixed watershed: predicted distance peaks, objects found vs ground truth."""

import sys

import numpy as np
import torch

torch.set_num_threads(1)
from sslzoo.data.datasets import open_dataset
from sslzoo.metrics.segmentation import aji_plus
from sslzoo.models.postprocess import FIXED_WATERSHED, WatershedParams, distance_to_instances
from sslzoo.models.segmenter import Segmenter

idx = open_dataset("/work/shared/data/monuseg", "monuseg")
for run in sys.argv[1:]:
    seg = Segmenter.from_pretrained(f"runs/cpu_fidelity/runs/{run}")
    sample = next(s for s in idx.samples if s.id == seg.config.training["eval_ids"][0])
    img, gt = idx.read_image(sample), idx.read_mask(sample)
    d = seg.predict_map(img)
    fixed = distance_to_instances(d, FIXED_WATERSHED)
    gtd = np.unique(gt).size - 1
    q = np.quantile(d, [0.5, 0.9, 0.99, 1.0])
    hm = distance_to_instances(
        d, WatershedParams(sigma=1.0, foreground_threshold=0.09, seed_threshold=0.4, h=0.05 * float(d.max()))
    )
    print(
        f"{run} {sample.id}: distance quantiles 50/90/99/100 % = {np.round(q, 3).tolist()}; GT {gtd} nuclei; "
        f"fixed watershed {fixed.max()} objects, AJI+ {aji_plus(gt, fixed):.3f}; "
        f"h-maxima seeds (h = 5 % of max) {hm.max()} objects, AJI+ {aji_plus(gt, hm):.3f}"
    )
