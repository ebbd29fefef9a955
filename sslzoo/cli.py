"""The ``sslzoo`` command.

Each command group lives beside the code it drives (``sslzoo/<area>/cli.py``) and
exposes ``register(subparsers)``; this module only assembles them. Command modules
import heavy libraries (torch, ...) inside their handlers so that ``--help`` is fast.
The CLI holds no logic the Python API lacks: handlers parse arguments, call the API
and print.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sslzoo import __version__
from sslzoo.errors import SslzooError

#: Modules contributing commands, in the order they appear in ``sslzoo --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "sslzoo.data.cli",
    "sslzoo.pretext.cli",
    "sslzoo.downstream.cli",
    "sslzoo.metrics.cli",
    "sslzoo.metrics.representation_cli",
    "sslzoo.study.cli",
    "sslzoo.hub.cli",
    "sslzoo.serving.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslzoo",
        description=(
            "Self-supervised pretraining, few-label fine-tuning, evaluation and serving "
            "for biomedical image segmentation (after Rettenberger, Schilling et al., "
            "IEEE TBME 2023)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'sslzoo COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"sslzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area has no commands yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result = handler(args)
    except SslzooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
