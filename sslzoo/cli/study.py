"""``sslzoo study run|grid|report``: the study grid runner and its report."""

from __future__ import annotations

import argparse

from sslzoo.cli.common import add_trainer_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser(
        "study",
        help="run a study grid (methods x datasets x rates x frozen x seeds) and write its report",
        description=(
            "Pretrain every SSL method once per dataset, fine-tune a U-Net for every (method, dataset, rate, "
            "frozen, seed) of a YAML study config, record each finished run in runs.csv, and report the paper's "
            "tables (scores per rate, IQC + t-test, RQC) and score-vs-rate figures."
        ),
    )
    commands = study.add_subparsers(dest="study_command", metavar="STUDY_COMMAND")

    run = commands.add_parser(
        "run",
        help="run (or continue) a study; finished runs are never redone",
        description=(
            "Run this shard's part of the study grid. Interrupted studies continue where they stopped: rerun "
            "the same command. Shards (--shard i/n, i from 0) split the grid round-robin and may share --out."
        ),
    )
    run.add_argument("config", help="study YAML, e.g. configs/study/cpu_monuseg.yaml")
    run.add_argument("--out", required=True, help="study folder: runs.csv, iqc.csv, REPORT.md, figures/")
    run.add_argument("--work", default=None, help="folder for encoders, checkpoints and segmenters (default: --out)")
    run.add_argument("--shard", default="0/1", help="i/n: run grid indices k with k %% n == i (default 0/1)")
    add_trainer_arguments(run, strategy=False)
    run.add_argument("--no-report", action="store_true", help="do not write REPORT.md at the end")
    run.add_argument("--run-progress", action="store_true", help="show Lightning's progress bar inside each run")
    run.set_defaults(handler=_run)

    grid = commands.add_parser(
        "grid", help="list the runs of a study (and of one shard)", description="Print the grid's run ids in order."
    )
    grid.add_argument("config", help="study YAML")
    grid.add_argument("--shard", default="0/1", help="i/n: only this shard's runs")
    grid.set_defaults(handler=_grid)

    report = commands.add_parser(
        "report",
        help="write REPORT.md, iqc.csv and figures of a study folder",
        description=(
            "Recompute iqc.csv from runs.csv and write REPORT.md with tables and figures/*.png; with the study's "
            "work folder also CKA bars (cka.csv), the nearest-neighbour grid with NQC and a Grad-CAM panel of the "
            "rate-100 % runs (a few dozen held-out tiles on the CPU)."
        ),
    )
    report.add_argument("out", help="study folder (holding runs.csv)")
    report.add_argument("--title", default=None, help="report title (default: Study <name>)")
    report.add_argument(
        "--work",
        default=None,
        help="the study's work folder (--work of 'study run': pretrain/, runs/); default: the study folder when it "
        "holds them, else the representation figures are skipped",
    )
    report.add_argument(
        "--data-root",
        default=None,
        help="folder holding the datasets when they moved since the study ran: DIR/<dataset folder name>",
    )
    report.set_defaults(handler=_report)
    study.set_defaults(handler=lambda args: (study.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    import logging

    from sslzoo.study.config import load_study_config
    from sslzoo.study.grid import parse_shard
    from sslzoo.study.report import write_report
    from sslzoo.study.runner import run_study

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_study_config(args.config)
    shard = parse_shard(args.shard)
    status = run_study(
        config, args.out, work_dir=args.work, shard=shard, accelerator=args.accelerator,
        devices=args.devices, precision=args.precision, run_progress=args.run_progress,
    )  # fmt: skip
    print(
        f"shard {shard[0]}/{shard[1]}: {len(status.ran)} runs done now, {status.skipped} were done before, "
        f"{status.total} in this shard ({status.seconds / 60:.1f} min)"
    )
    if not args.no_report:
        print(f"report: {write_report(args.out, work_dir=args.work)}")
    return 0


def _grid(args: argparse.Namespace) -> int:
    from sslzoo.study.config import load_study_config
    from sslzoo.study.grid import build_grid, parse_shard, shard_grid

    config = load_study_config(args.config)
    grid = build_grid(config)
    for spec in shard_grid(grid, parse_shard(args.shard)):
        print(spec.run_id)
    return 0


def _report(args: argparse.Namespace) -> int:
    from sslzoo.study.report import write_report

    print(write_report(args.out, title=args.title, work_dir=args.work, data_root=args.data_root))
    return 0
