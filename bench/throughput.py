"""Pretraining throughput: images per second of every sslzoo pretext method, on the CPU or a GPU, with AMP.

One image = one pair of views (the paper's unit: its setup reports about 44 img/s for ResNet-50 at 256x256 on an
A100). Each timed step is forward on both views + loss + backward + optimiser step + momentum update, on a fixed
random batch (no data loading: this measures the model, see bench/data.py for the loader). Steps are timed with
``torch.cuda.synchronize`` on a GPU; the first ``--warmup`` steps are not timed.

    .venv/bin/python bench/throughput.py --backbone resnet18 --size 128 --batch-size 16 --steps 3   # CPU smoke
    python3 bench/throughput.py --device cuda --amp --backbone resnet50 --size 256 --batch-size 64  # bench/gpu.sh
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def time_method(
    method: str, backbone: str, batch_size: int, size: int, steps: int, warmup: int, device: str, amp: bool
) -> tuple[float, float]:
    """``(median seconds per step, peak GPU memory in GiB or 0)`` of ``method``."""
    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.registry import build_method

    torch.manual_seed(0)
    module = build_method(
        PretextConfig(method=method, backbone=backbone, input_size=size, batch_size=batch_size, samples_per_epoch=4096)
    ).to(device)
    module.train()
    optimizers = module.configure_optimizers()
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    if isinstance(optimizer, (list, tuple)):
        optimizer = optimizer[0]
    scaler = torch.amp.GradScaler(device, enabled=amp and device.startswith("cuda"))
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    views = [torch.randn(batch_size, 3, size, size, device=device) for _ in range(2)]
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype, enabled=amp):
            loss, _ = module.training_loss(*views)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        module.after_optimizer_step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return statistics.median(times), peak


def main() -> None:
    from sslzoo.pretext.registry import method_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=None, help="default: all seven")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=256, help="view size in pixels (paper: 256)")
    parser.add_argument("--batch-size", type=int, default=32, help="images (view pairs) per step (paper: 32)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, allocator)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--amp", action="store_true", help="autocast (fp16 + GradScaler on GPU, bf16 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no GPU; run on a GPU machine or use --device cpu")
        torch.backends.cudnn.benchmark = True
        where = torch.cuda.get_device_name(torch.device(args.device))
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    rows = []
    for method in args.methods or method_names():
        seconds, peak = time_method(
            method, args.backbone, args.batch_size, args.size, args.steps, args.warmup, args.device, args.amp
        )
        rows.append((method, seconds, args.batch_size / seconds, peak))
        print(f"{method}: {seconds:.3f} s/step, {args.batch_size / seconds:.1f} img/s", flush=True)
    print(
        f"\n{args.backbone}, {args.size}x{args.size}, batch {args.batch_size}, {where}, "
        f"AMP {'on' if args.amp else 'off'}, median of {args.steps} steps; "
        "paper's reference: ~44 img/s (ResNet-50, 256x256, A100)"
    )
    print("| method | s/step | img/s | peak GPU memory [GiB] |\n|---|---|---|---|")
    for method, seconds, rate, peak in rows:
        print(f"| {method} | {seconds:.3f} | {rate:.1f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
