"""Zoo commands: ``sslzoo publish``, ``sslzoo pull``, ``sslzoo zoo list`` | ``card`` | ``package``, and
``zoo build`` | ``publish`` | ``leaderboard`` from :mod:`sslzoo.cli.zoo_build`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from sslzoo.hub.names import DEFAULT_NAMESPACE, NAME_FORMAT, NAMESPACE_ENV

if TYPE_CHECKING:
    from sslzoo.hub.registry import ZooEntry

WEIGHTS_DTYPES = ("float16", "bfloat16", "float32")  # sslzoo.models.encoders.WeightsDtype; no torch import for --help


def register(subparsers: argparse._SubParsersAction) -> None:
    publish = subparsers.add_parser(
        "publish",
        help="upload an encoder or segmenter folder (weights, config, model card) to a Hugging Face Hub repo",
        description=(
            "Upload DIR (from 'sslzoo pretrain' or 'sslzoo finetune') to the Hub repo NAMESPACE/NAME: writes the "
            "model card README.md if missing, computes the sha256 of every file, creates the repo if needed and "
            "uploads the folder in one commit, then prints the commit. HF_ENDPOINT selects the Hub (or a "
            "Hub-compatible server), HF_TOKEN authenticates."
        ),
    )
    publish.add_argument(
        "folder", metavar="DIR", help="model folder: model.safetensors + config.json [+ segmenter.json]"
    )
    publish.add_argument(
        "--repo",
        required=True,
        metavar="NAMESPACE/NAME",
        help=f"target repo, e.g. {DEFAULT_NAMESPACE}/densecl-resnet50-monuseg",
    )
    publish.add_argument(
        "--revision", default=None, metavar="R", help="branch to commit to (created if missing; default main)"
    )
    publish.add_argument("--private", action="store_true", help="create the repo as private")
    publish.add_argument(
        "--rewrite-card", action="store_true", help="regenerate README.md even if the folder has its own card"
    )
    publish.add_argument(
        "--evaluation",
        default=None,
        metavar="JSON",
        help="evaluation results ('sslzoo evaluate' output) for the card's model-index",
    )
    publish.add_argument(
        "--record",
        nargs="?",
        const=True,
        default=None,
        metavar="REGISTRY",
        help="add the published entry (pinned commit + sha256) to the zoo registry "
        "(the packaged one, or the file given)",
    )
    publish.add_argument(
        "--endpoint", default=None, metavar="URL", help="Hub URL (default: $HF_ENDPOINT or huggingface.co)"
    )
    publish.add_argument("--json", action="store_true", help="print the result as JSON")
    publish.set_defaults(handler=_publish)

    pull = subparsers.add_parser(
        "pull",
        help="download a zoo model into the Hugging Face cache and verify its sha256",
        description=(
            f"Fetch NAME (a zoo name: {NAME_FORMAT}; an alias nuclei | lesion | embed; or a repo id NAMESPACE/NAME) "
            "into the Hugging Face cache. The cache is used first; HF_HUB_OFFLINE=1 works from a filled cache, "
            "HF_ENDPOINT selects a mirror. Files of registry entries are checked against the registry's sha256 and "
            f"refused on mismatch. The namespace is {DEFAULT_NAMESPACE} unless ${NAMESPACE_ENV} or --namespace says "
            "otherwise."
        ),
    )
    pull.add_argument("name", metavar="NAME", help="zoo name, alias or NAMESPACE/NAME repo id")
    pull.add_argument("--revision", default=None, metavar="R", help="revision (default: the registry's pinned commit)")
    pull.add_argument("--out", default=None, metavar="DIR", help="also copy the files into DIR")
    pull.add_argument(
        "--namespace", default=None, help=f"Hub namespace (default ${NAMESPACE_ENV} or {DEFAULT_NAMESPACE})"
    )
    pull.add_argument(
        "--endpoint", default=None, metavar="URL", help="Hub URL (default: $HF_ENDPOINT or huggingface.co)"
    )
    pull.add_argument("--json", action="store_true", help="print the result as JSON")
    pull.set_defaults(handler=_pull)

    zoo = subparsers.add_parser(
        "zoo",
        help="the model zoo: list entries, write model cards, package compact entries",
        description="Inspect the model zoo: which encoders and segmenters exist and where they live.",
    )
    zoo_commands = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo.set_defaults(handler=lambda args: _help(zoo))

    listing = zoo_commands.add_parser(
        "list",
        help="list zoo entries: name, kind, method, backbone, dataset, task, metrics, licence, where",
        description=(
            "List the zoo's entries and where each lives: 'packaged' (embedded in sslzoo), 'zoo-folder' (built by "
            "'sslzoo zoo build' into a folder named by $SSLZOO_ZOO_DIR), 'cached' (in the local Hugging Face "
            "cache) or 'hub' (downloaded on first use); with --all also the 'planned' names that are not published "
            "yet."
        ),
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.add_argument("--all", action="store_true", help="include planned, unpublished entries")
    listing.add_argument(
        "--namespace", default=None, help=f"Hub namespace (default ${NAMESPACE_ENV} or {DEFAULT_NAMESPACE})"
    )
    listing.set_defaults(handler=_list)

    card = zoo_commands.add_parser(
        "card",
        help="write the model card (README.md) of a model folder",
        description=(
            "Generate the model card of MODEL from its config and optional evaluation results: YAML metadata "
            "(licence of the training data, tags, datasets, metrics, pipeline tag, base model, model-index) and "
            "the sections intended use, not for clinical use, out-of-scope use, training data, training "
            "procedure, input contract, evaluation, limitations, citation."
        ),
    )
    card.add_argument(
        "folder",
        metavar="MODEL",
        help="model folder (encoder or segmenter), or an alias / zoo name: its card is then printed (or written "
        "to --out), never into the packaged or cached folder",
    )
    card.add_argument("--repo", default=None, metavar="NAMESPACE/NAME", help="repo id the card describes")
    card.add_argument(
        "--evaluation", default=None, metavar="JSON", help="evaluation results ('sslzoo evaluate' output)"
    )
    card.add_argument("--evaluation-dataset", default=None, metavar="TEXT", help="what the evaluation ran on")
    card.add_argument(
        "--out", default=None, metavar="FILE", help="where to write (default: DIR/README.md; stdout for a name)"
    )
    card.set_defaults(handler=_card)

    pack = zoo_commands.add_parser(
        "package",
        help="make a compact zoo entry (float16 weights, config, model card) from a model folder",
        description=(
            "Copy what zoo entry ENTRY needs from SRC (encoder: model.safetensors + config.json; segmenter: also "
            "segmenter.json; no checkpoints, logs or results) into DIR/ENTRY, store the weights' floating-point "
            "tensors in --dtype (recorded as weights_dtype in the config), write the model card and print the "
            "sizes. ENTRY must agree with SRC's config. Loading the entry gives a float32 model. The embedded "
            "defaults are packaged with --out sslzoo/zoo."
        ),
    )
    pack.add_argument("folder", metavar="SRC", help="model folder from 'sslzoo pretrain' or 'sslzoo finetune'")
    pack.add_argument("--name", required=True, metavar="ENTRY", help=f"zoo name: {NAME_FORMAT}")
    pack.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder of zoo entries: writes DIR/ENTRY (DIR itself if named ENTRY), replacing a previous package",
    )
    pack.add_argument(
        "--dtype", default="float16", choices=WEIGHTS_DTYPES, help="storage dtype of the weights (default float16)"
    )
    pack.add_argument(
        "--evaluation",
        default=None,
        metavar="JSON",
        help="evaluation results for the card (default: SRC/evaluation.json, else the segmenter's own metrics)",
    )
    pack.add_argument("--card-to", default=None, metavar="FOLDER", help="also copy the card to FOLDER/ENTRY.md")
    pack.add_argument(
        "--provenance",
        default=None,
        metavar="MD",
        help="Markdown file with how the model was made (commands, data split, wall time, machine): becomes the "
        "card's 'How this model was made' section",
    )
    pack.add_argument("--json", action="store_true", help="print the result as JSON")
    pack.set_defaults(handler=_package)

    from sslzoo.cli.zoo_build import register_zoo_commands  # build | publish | leaderboard (sslzoo.zoo)

    register_zoo_commands(zoo_commands)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _publish(args: argparse.Namespace) -> int:
    from sslzoo.hub.publish import load_evaluation, publish

    result = publish(
        args.folder,
        args.repo,
        revision=args.revision,
        private=args.private,
        endpoint=args.endpoint,
        evaluation=load_evaluation(args.evaluation),
        record=args.record,
        rewrite_card=args.rewrite_card,
    )
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    if result.card_written:
        print(f"wrote model card {args.folder}/README.md")
    for filename, digest in result.files.items():
        print(f"  {digest}  {filename}")
    print(f"published {result.repo_id}@{result.revision}: commit {result.commit}")
    print(result.commit_url)
    if result.registry:
        print(f"recorded {result.entry.name if result.entry else result.repo_id} in {result.registry}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    import warnings

    from sslzoo.hub.pull import pull

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pull(args.name, revision=args.revision, out=args.out, namespace=args.namespace, endpoint=args.endpoint)
    for warning in caught:
        if issubclass(warning.category, UserWarning) and "sslzoo" in warning.filename:
            print(f"warning: {warning.message}", file=sys.stderr)
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    if result.where == "packaged":
        from sslzoo.hub.defaults import packaged_folder

        alias = f" (alias {args.name})" if args.name != result.name else ""
        copied = f"; copied to {args.out}" if args.out else ""
        print(
            f"{result.name}{alias} is packaged with sslzoo in {packaged_folder(result.name)}: "
            f"{len(result.files)} files, nothing to download{copied}"
        )
        print(result.folder)
        return 0
    status = "verified against the registry" if result.verified else "NOT verified (not pinned in the registry)"
    print(
        f"{result.repo_id}@{result.revision} (commit {result.commit}, {result.where}): {len(result.files)} files, "
        f"sha256 {status}"
    )
    print(result.folder)
    return 0


def _format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in metrics.items()) or "-"


def _list(args: argparse.Namespace) -> int:
    from sslzoo.hub.registry import list_entries

    entries = list_entries(include_planned=args.all, namespace=args.namespace)
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return 0
    if not entries:
        print("no zoo entries are published or embedded yet; 'sslzoo zoo list --all' shows the planned names")
        _print_aliases(entries)
        return 0
    header = ("name", "kind", "method", "backbone", "dataset", "task", "metrics", "licence", "where")
    rows = [
        (e.name, e.kind, e.method, e.backbone, e.dataset, e.task or "-", _format_metrics(e.metrics), e.licence, e.where)
        for e in entries
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    _print_aliases(entries)
    return 0


def _print_aliases(entries: list[ZooEntry]) -> None:
    """The served aliases and the entries they stand for (``sslzoo predict nuclei ...`` works with either)."""
    from sslzoo.hub.defaults import ALIAS_TARGETS

    where = {e.name: e.where for e in entries}
    width = max(len(alias) for alias in ALIAS_TARGETS)
    print("\naliases (usable wherever a model name is):")
    for alias, target in ALIAS_TARGETS.items():
        status = where.get(target, "not installed: neither embedded nor in the registry")
        print(f"  {alias:<{width}}  -> {target} ({status})")


def _card(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sslzoo.errors import ConfigError
    from sslzoo.hub.cards import card_for_folder, write_card
    from sslzoo.hub.publish import load_evaluation
    from sslzoo.hub.resolve import resolve_model

    evaluation = load_evaluation(args.evaluation)
    resolved = resolve_model(args.folder)
    if resolved.source == "folder":
        path = write_card(
            args.folder,
            out=args.out,
            repo_id=args.repo,
            evaluation=evaluation,
            evaluation_dataset=args.evaluation_dataset,
        )
        print(path)
        return 0
    if resolved.path is None:
        raise ConfigError(f"{args.folder!r} is a baseline initialisation: it has no folder and no model card")
    card = card_for_folder(
        resolved.path,
        name=resolved.name,
        repo_id=args.repo,
        evaluation=evaluation,
        evaluation_dataset=args.evaluation_dataset,
    )
    if args.out is None:
        print(str(card))
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    card.save(str(out))
    print(out)
    return 0


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _read_text(path: str | None) -> str | None:
    """The text of an optional Markdown file given on the command line (clear error when it is missing)."""
    from pathlib import Path

    from sslzoo.errors import NotFoundError

    if path is None:
        return None
    if not Path(path).is_file():
        raise NotFoundError(f"{path}: no such file; pass a Markdown file with --provenance")
    return Path(path).read_text()


def _package(args: argparse.Namespace) -> int:
    from sslzoo.hub.package import package
    from sslzoo.hub.publish import load_evaluation

    result = package(
        args.folder,
        args.name,
        args.out,
        dtype=args.dtype,
        evaluation=load_evaluation(args.evaluation),
        card_to=args.card_to,
        provenance=_read_text(args.provenance),
    )
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    print(f"packaged {result.name} ({result.kind}, {result.weights_dtype} weights) in {result.folder}")
    before = sum(f.source_bytes or 0 for f in result.files)
    after = sum(f.bytes for f in result.files)
    rows = [("file", "source", "packaged")]
    rows += [(f.name, _size(f.source_bytes), _size(f.bytes)) for f in result.files]
    rows.append(("total", _size(before), f"{_size(after)} ({after / max(before, 1):.0%})"))
    width = max(len(r[0]) for r in rows)
    for row in rows:
        print(f"  {row[0]:<{width}}  {row[1]:>9}  {row[2]:>9}")
    if result.card_copy:
        print(f"card copied to {result.card_copy}")
    return 0
