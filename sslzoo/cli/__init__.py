"""The ``sslzoo`` command.

``sslzoo/cli/`` is the top layer of the package: one module per command group
(``data``, ``pretext``, ``finetune``, ``evaluate``, ``rank``, ``representation``, ``study``,
``zoo``, ``serving``), each exposing ``register(subparsers)``; this module only
assembles them. A command module that fails to import is an error, never skipped. Command modules
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
    "sslzoo.cli.data",
    "sslzoo.cli.pretext",
    "sslzoo.cli.finetune",
    "sslzoo.cli.evaluate",
    "sslzoo.cli.rank",
    "sslzoo.cli.representation",
    "sslzoo.cli.study",
    "sslzoo.cli.zoo",
    "sslzoo.cli.serving",
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
        importlib.import_module(name).register(subparsers)
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
