"""``sslzoo zoo build`` | ``publish`` | ``leaderboard``: thin wrappers over :mod:`sslzoo.zoo` (registered under the
``zoo`` command group by :mod:`sslzoo.cli.zoo`)."""

from __future__ import annotations

import argparse
import shlex
import sys

from sslzoo.cli.common import add_trainer_arguments

ZOO_DIR_ENV = "SSLZOO_ZOO_DIR"  # sslzoo.hub.zoo_folder.ZOO_DIR_ENV; no import for --help


def register_zoo_commands(zoo_commands: argparse._SubParsersAction) -> None:
    build = zoo_commands.add_parser(
        "build",
        help="build the whole zoo of a config: pretrain, measure (NQC, frozen probe vs random), card, package",
        description=(
            "Build every (method, dataset) encoder of CONFIG (configs/zoo/*.yaml) into the zoo folder DIR: pretrain "
            "on the dataset's images without the held-out ones, measure NQC and a frozen-encoder few-label probe "
            "(3 seeds) against random init measured the same way, package the encoder (fp16) and the seed-0 probe "
            "segmenter with their cards, and rewrite DIR/LEADERBOARD.md + leaderboard.png after each entry. "
            "Resumable (a killed build continues; nothing finished is redone) and shardable (--shard i/n). "
            f"Point ${ZOO_DIR_ENV} at DIR to resolve its entries by name."
        ),
    )
    build.add_argument("config", metavar="CONFIG", help="zoo config YAML, e.g. configs/zoo/cpu.yaml")
    build.add_argument("--out", required=True, metavar="DIR", help="zoo folder (entries, state, leaderboard)")
    build.add_argument("--shard", default="0/1", metavar="i/n", help="build only shard i of n (default 0/1: all)")
    build.add_argument(
        "--publish", default=None, metavar="NAMESPACE", help="afterwards publish every finished entry to NAMESPACE"
    )
    build.add_argument("--registry", default=None, metavar="FILE", help="registry file for --publish (see publish)")
    build.add_argument("--endpoint", default=None, metavar="URL", help="Hub URL for --publish (default $HF_ENDPOINT)")
    add_trainer_arguments(build, strategy=False)
    build.set_defaults(handler=_build)

    publish = zoo_commands.add_parser(
        "publish",
        help="publish every finished entry of a zoo folder to the Hub and record it in the zoo registry",
        description=(
            "Upload each finished entry of DIR (model files and card only, no build state) to NAMESPACE/<entry> "
            "with huggingface_hub and record name, repo, pinned commit and sha256 per file in the zoo registry "
            "(--registry FILE, default $SSLZOO_HUB_REGISTRY or the packaged one), so that 'sslzoo pull NAME' works. "
            "Entries already recorded with the same files are not uploaded again. HF_ENDPOINT selects the Hub, "
            "HF_TOKEN authenticates."
        ),
    )
    publish.add_argument("folder", metavar="DIR", help="zoo folder made by 'sslzoo zoo build'")
    publish.add_argument("--namespace", required=True, metavar="NS", help="Hub user or organisation")
    publish.add_argument("--registry", default=None, metavar="FILE", help="registry file to record the entries in")
    publish.add_argument("--endpoint", default=None, metavar="URL", help="Hub URL (default $HF_ENDPOINT)")
    publish.add_argument("--private", action="store_true", help="create the repos as private")
    publish.add_argument("--force", action="store_true", help="upload even entries already recorded unchanged")
    publish.set_defaults(handler=_publish)

    board = zoo_commands.add_parser(
        "leaderboard",
        help="write the leaderboard (Markdown + PNG) of a zoo folder, and copy its cards",
        description=(
            "Write LEADERBOARD.md and leaderboard.png of the finished entries of DIR into --out (default DIR), "
            "refresh every entry's card with the current numbers, and copy the cards to --cards-to."
        ),
    )
    board.add_argument("folder", metavar="DIR", help="zoo folder made by 'sslzoo zoo build'")
    board.add_argument("--out", default=None, metavar="FOLDER", help="where to write (e.g. docs/zoo)")
    board.add_argument("--cards-to", default=None, metavar="FOLDER", help="copy each card as FOLDER/<entry>.md")
    board.set_defaults(handler=_leaderboard)


def _quiet_lightning() -> None:
    import logging

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _build(args: argparse.Namespace) -> int:
    import warnings

    from sslzoo.zoo.build import build_zoo
    from sslzoo.zoo.config import load_zoo_config
    from sslzoo.zoo.records import parse_shard

    _quiet_lightning()
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    shard = parse_shard(args.shard)
    config = load_zoo_config(args.config)
    command = shlex.join(["sslzoo", *sys.argv[1:]]) if sys.argv[1:2] == ["zoo"] else None

    def report(line: str) -> None:
        print(line, flush=True)

    summary = build_zoo(
        config,
        args.out,
        shard=shard,
        accelerator=args.accelerator,
        devices=args.devices,
        precision=args.precision,
        command=command,
        report=report,
    )
    total = sum(summary.seconds.values())
    print(
        f"built {len(summary.built)} entries in {total:.0f} s, {len(summary.skipped)} were done already; "
        f"leaderboard: {args.out}/LEADERBOARD.md",
        flush=True,
    )
    if summary.busy:
        print(f"left to the process building them: {', '.join(summary.busy)}", flush=True)
    if summary.failed:
        for name, error in summary.failed.items():
            print(f"FAILED {name}: {error}", file=sys.stderr)
        print(f"{len(summary.failed)} entries failed; rerun the same command to retry them", file=sys.stderr)
        return 1
    if args.publish:
        from sslzoo.zoo.publish import publish_zoo

        publish_zoo(args.out, args.publish, registry=args.registry, endpoint=args.endpoint, report=report)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from sslzoo.zoo.publish import publish_zoo

    published = publish_zoo(
        args.folder,
        args.namespace,
        registry=args.registry,
        endpoint=args.endpoint,
        private=args.private,
        force=args.force,
    )
    uploaded = sum(p.uploaded for p in published)
    print(f"{uploaded} entries uploaded, {len(published) - uploaded} unchanged; see {args.folder}/published.json")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from sslzoo.zoo.build import refresh_cards
    from sslzoo.zoo.leaderboard import write_leaderboard

    cards = refresh_cards(args.folder, cards_to=args.cards_to)
    path = write_leaderboard(args.folder, out=args.out)
    print(f"{path} ({len(cards)} cards refreshed)")
    return 0
