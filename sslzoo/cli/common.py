"""Argument groups shared by several commands (kept free of heavy imports)."""

from __future__ import annotations

import argparse


def parse_devices(value: str) -> int | str:
    """Lightning ``devices``: a count (``"4"`` → 4), ``"auto"``, or a list such as ``"0,1"``."""
    return int(value) if value.isdigit() else value


def add_trainer_arguments(parser: argparse.ArgumentParser, strategy: bool = True) -> None:
    """``--accelerator --devices --precision [--strategy]``, passed through to ``pl.Trainer``."""
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: cpu, gpu, auto, ...")
    parser.add_argument("--devices", type=parse_devices, default="auto", help="Lightning devices: N, 'auto' or a list")
    parser.add_argument("--precision", default=None, help="Lightning precision, e.g. 16-mixed, bf16-mixed, 32")
    if strategy:
        parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
