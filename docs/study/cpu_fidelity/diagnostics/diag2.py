# ruff: noqa: E402, E501
# Diagnostics of docs/study/cpu_fidelity; run from the repository root with PYTHONPATH=$PWD (reads runs/cpu_fidelity).
import sys

import torch

torch.set_num_threads(1)
from sslzoo.data.datasets import open_dataset
from sslzoo.data.transforms import normalize_to_tensor
from sslzoo.models.segmenter import Segmenter

idx = open_dataset("/work/shared/data/monuseg", "monuseg")
for run in sys.argv[1:]:
    seg = Segmenter.from_pretrained(f"runs/cpu_fidelity/runs/{run}")
    print(run, "training flag after load:", seg.model.training)
    sample = next(s for s in idx.samples if s.id == seg.config.training["eval_ids"][0])
    img = idx.read_image(sample)
    x = torch.stack(
        [normalize_to_tensor(img[y : y + 128, 0:128], seg.config.mean, seg.config.std) for y in (0, 128, 256, 384)]
    )
    with torch.no_grad():
        seg.model.eval()
        e = seg.model(x)[:, 0]
        seg.model.train()
        t = seg.model(x)[:, 0]
    print(
        f"  eval-mode output mean {e.mean():.3f} max {e.max():.3f}; train-mode (batch stats) mean {t.mean():.3f} max {t.max():.3f}"
    )
    bns = [(n, m) for n, m in seg.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for n, m in bns[:2] + bns[-3:]:
        print(
            f"  {n}: running_var mean {m.running_var.mean():.3g} min {m.running_var.min():.3g}, running_mean abs {m.running_mean.abs().mean():.3g}, tracked {int(m.num_batches_tracked)}"
        )
