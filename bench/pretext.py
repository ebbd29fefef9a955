"""Seconds per optimiser step of each sslzoo pretext method beside lightly's implementation of the same method.

Both sides use the same smp ResNet encoder, head sizes, SGD settings and random
input batch; each step is forward on two views + loss + backward + SGD step +
momentum update. lightly (bench-only; ``pip install --no-deps lightly``) supplies
heads, losses and momentum utilities, as in its own examples. Methods and sides
alternate step by step so that load changes on a shared machine hit both alike.

    .venv/bin/python bench/pretext.py                     # resnet18, batch 16, 224 px, CPU, 3 timed steps
    .venv/bin/python bench/pretext.py --steps 5 --methods simclr moco
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

StepFn = Callable[[Tensor, Tensor], None]


def _pooled(encoder: nn.Module, x: Tensor) -> Tensor:
    return encoder(x)[-1].mean(dim=(2, 3))


def lightly_step(method: str, backbone: str, batch_size: int, queue_size: int) -> StepFn:
    """One optimiser step of lightly's version of ``method`` (heads/loss/momentum from lightly)."""
    import copy

    from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss
    from lightly.models import utils
    from lightly.models.modules import (
        BarlowTwinsProjectionHead,
        BYOLPredictionHead,
        BYOLProjectionHead,
        DenseCLProjectionHead,
        MoCoProjectionHead,
        SimCLRProjectionHead,
    )

    from sslzoo.models.encoders import create_encoder

    encoder = create_encoder(backbone)
    dim = int(encoder.out_channels[-1])
    modules: dict[str, nn.Module] = {"encoder": encoder}
    momentum: list[tuple[nn.Module, nn.Module, float]] = []

    def momentum_copy(name: str, module: nn.Module, m: float) -> nn.Module:
        target = copy.deepcopy(module)
        utils.deactivate_requires_grad(target)
        momentum.append((module, target, m))
        modules[name] = target
        return target

    if method == "simclr":
        head = modules["head"] = SimCLRProjectionHead(dim, 1024, 128)
        ntxent = NTXentLoss(temperature=0.1)

        def loss_fn(v1: Tensor, v2: Tensor) -> Tensor:
            return ntxent(head(_pooled(encoder, v1)), head(_pooled(encoder, v2)))

    elif method == "byol":
        proj = modules["proj"] = BYOLProjectionHead(dim, 4096, 256)
        pred = modules["pred"] = BYOLPredictionHead(256, 4096, 256)
        t_enc, t_proj = momentum_copy("t_enc", encoder, 0.996), momentum_copy("t_proj", proj, 0.996)
        ncs = NegativeCosineSimilarity()

        def loss_fn(v1: Tensor, v2: Tensor) -> Tensor:
            p1, p2 = pred(proj(_pooled(encoder, v1))), pred(proj(_pooled(encoder, v2)))
            with torch.no_grad():
                z1, z2 = t_proj(_pooled(t_enc, v1)), t_proj(_pooled(t_enc, v2))
            return 0.5 * (ncs(p1, z2) + ncs(p2, z1))

    elif method == "moco":
        head = modules["head"] = MoCoProjectionHead(dim, 2048, 128)
        k_enc, k_head = momentum_copy("k_enc", encoder, 0.999), momentum_copy("k_head", head, 0.999)
        ntxent = NTXentLoss(temperature=0.2, memory_bank_size=(queue_size, 128))

        def loss_fn(v1: Tensor, v2: Tensor) -> Tensor:
            q = head(_pooled(encoder, v1))
            with torch.no_grad():
                k = k_head(_pooled(k_enc, v2))
            return ntxent(q, k)

    elif method == "barlowtwins":
        head = modules["head"] = BarlowTwinsProjectionHead(dim, 2048, 2048)
        bt = BarlowTwinsLoss(lambda_param=5e-3)

        def loss_fn(v1: Tensor, v2: Tensor) -> Tensor:
            return bt(head(_pooled(encoder, v1)), head(_pooled(encoder, v2)))

    elif method == "densecl":
        g_head = modules["g_head"] = MoCoProjectionHead(dim, 2048, 128)
        l_head = modules["l_head"] = DenseCLProjectionHead(dim, 2048, 128)
        k_enc = momentum_copy("k_enc", encoder, 0.999)
        k_g, k_l = momentum_copy("k_g", g_head, 0.999), momentum_copy("k_l", l_head, 0.999)
        crit_g = NTXentLoss(temperature=0.2, memory_bank_size=(queue_size, 128))
        crit_l = NTXentLoss(temperature=0.2, memory_bank_size=(queue_size, 128))

        def branch(x: Tensor, enc: nn.Module, gh: nn.Module, lh: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
            features = enc(x)[-1]
            flat = features.flatten(2).permute(0, 2, 1)
            return flat, gh(features.mean(dim=(2, 3))), lh(flat)

        def loss_fn(v1: Tensor, v2: Tensor) -> Tensor:
            q_feat, q_global, q_local = branch(v1, encoder, g_head, l_head)
            with torch.no_grad():
                k_feat, k_global, k_local = branch(v2, k_enc, k_g, k_l)
                k_local = utils.select_most_similar(q_feat, k_feat, k_local)
            loss_local = crit_l(q_local.flatten(end_dim=1), k_local.flatten(end_dim=1))
            return 0.5 * (crit_g(q_global, k_global) + loss_local)

    else:
        raise ValueError(f"no lightly counterpart for {method!r}")

    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step(v1: Tensor, v2: Tensor) -> None:
        loss = loss_fn(v1, v2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for online, target, m in momentum:
            utils.update_momentum(online, target, m)

    return step


def sslzoo_step(method: str, backbone: str, batch_size: int, queue_size: int) -> StepFn:
    """One optimiser step of sslzoo's ``method`` (the same calls the Lightning training_step makes)."""
    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.registry import build_method

    module = build_method(PretextConfig(method=method, backbone=backbone, samples_per_epoch=queue_size))
    module.train()
    optimizer = module.configure_optimizers()

    def step(v1: Tensor, v2: Tensor) -> None:
        loss, _ = module.training_loss(v1, v2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module.after_optimizer_step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", help="default: every sslzoo method with a lightly counterpart")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method and side (after 1 warm-up)")
    parser.add_argument("--queue", type=int, default=4096, help="queue / memory-bank length (MoCo, DenseCL)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    from sslzoo.pretext.registry import method_names

    torch.set_num_threads(args.threads)
    with_lightly = ("simclr", "byol", "moco", "barlowtwins", "densecl")
    methods = args.methods or [m for m in method_names() if m in with_lightly]
    torch.manual_seed(0)
    shape = (args.batch_size, 3, args.size, args.size)
    v1, v2 = torch.randn(shape), torch.randn(shape)

    rows = []
    for method in methods:
        sides = {
            "sslzoo": sslzoo_step(method, args.backbone, args.batch_size, args.queue),
            "lightly": lightly_step(method, args.backbone, args.batch_size, args.queue),
        }
        times: dict[str, list[float]] = {side: [] for side in sides}
        for i in range(args.steps + 1):
            for side, step in sides.items():
                start = time.perf_counter()
                step(v1, v2)
                if i > 0:  # the first step is warm-up
                    times[side].append(time.perf_counter() - start)
        ours, theirs = statistics.median(times["sslzoo"]), statistics.median(times["lightly"])
        rows.append((method, ours, theirs, ours / theirs))
        print(f"{method}: sslzoo {ours:.3f} s/step, lightly {theirs:.3f} s/step", flush=True)

    title = (
        f"seconds per optimiser step (median of {args.steps}), {args.backbone}, batch {args.batch_size}, "
        f"{args.size}x{args.size}, CPU, {args.threads} thread(s)"
    )
    print("\n" + title)
    if args.markdown:
        print("| method | sslzoo [s/step] | lightly [s/step] | sslzoo / lightly |\n|---|---|---|---|")
        for method, ours, theirs, ratio in rows:
            print(f"| {method} | {ours:.3f} | {theirs:.3f} | {ratio:.2f} |")
    else:
        print(f"{'method':<12} {'sslzoo':>8} {'lightly':>8} {'ratio':>6}")
        for method, ours, theirs, ratio in rows:
            print(f"{method:<12} {ours:>8.3f} {theirs:>8.3f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
