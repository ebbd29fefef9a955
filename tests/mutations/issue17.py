"""Apply each mutation named in issue 17 as a throwaway patch and list the tests that now fail.

Usage (from the repository root, with the project's venv)::

    PYTHONPATH=$PWD python tests/mutations/issue17.py            # all mutations
    PYTHONPATH=$PWD python tests/mutations/issue17.py moco-own-view simclr-one-view

Each mutation is a literal source replacement; the file is restored afterwards (also on Ctrl-C).
A mutation whose source text is no longer found is reported as ``stale`` (the code moved: update
the patch). The output is the markdown table kept in docs/mutation.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "finetune-minus-loss",
        "fine-tuning trains on -loss",
        "sslzoo/downstream/finetune.py",
        '        loss = self.loss(self(images), targets)\n        self.log("train/loss"',
        '        loss = -self.loss(self(images), targets)\n        self.log("train/loss"',
        ("tests/test_downstream_learning.py",),
    ),
    Mutation(
        "finetune-no-best-restore",
        "the best epoch's weights are never restored",
        "sslzoo/downstream/finetune.py",
        "        module.model.load_state_dict(run.best.state)",
        "        pass",
        ("tests/test_downstream_learning.py",),
    ),
    Mutation(
        "watershed-tuning-first",
        "watershed tuning keeps the first setting, not the best",
        "sslzoo/downstream/watershed.py",
        "        if mean > best_score:",
        "        if best is None:",
        ("tests/test_downstream_learning.py",),
    ),
    Mutation(
        "densecl-identity-match",
        "DenseCL correspondence replaced by the identity",
        "sslzoo/pretext/dense_losses.py",
        "    return similarity.argmax(dim=2)",
        "    return torch.arange(similarity.shape[1]).expand(similarity.shape[0], -1)",
        ("tests/test_pretext_dense_grid.py", "tests/test_pretext_pairing.py"),
    ),
    Mutation(
        "densecl-argmax-wrong-dim",
        "DenseCL argmax over the query locations (dim 1)",
        "sslzoo/pretext/dense_losses.py",
        "    return similarity.argmax(dim=2)",
        "    return similarity.argmax(dim=1)",
        ("tests/test_pretext_dense_grid.py", "tests/test_pretext_pairing.py"),
    ),
    Mutation(
        "densecl-swapped-weights",
        "DenseCL global/dense weights swapped",
        "sslzoo/pretext/densecl.py",
        "        loss = (1.0 - weight) * global_loss + weight * dense_loss",
        "        loss = weight * global_loss + (1.0 - weight) * dense_loss",
        ("tests/test_pretext_dense_grid.py", "tests/test_pretext_pairing.py"),
    ),
    Mutation(
        "moco-own-view",
        "MoCo takes keys from the query's own view",
        "sslzoo/pretext/moco.py",
        "        key = self.keys(view2)",
        "        key = self.keys(view1)",
        ("tests/test_pretext_pairing.py",),
    ),
    Mutation(
        "byol-same-view",
        "BYOL pairs same-view predictions and targets",
        "sslzoo/pretext/byol.py",
        "        loss = byol_loss(p1, t2) + byol_loss(p2, t1)",
        "        loss = byol_loss(p1, t1) + byol_loss(p2, t2)",
        ("tests/test_pretext_pairing.py",),
    ),
    Mutation(
        "byol-one-order",
        "BYOL loss not symmetrised (view 1 → view 2 only, doubled)",
        "sslzoo/pretext/byol.py",
        "        loss = byol_loss(p1, t2) + byol_loss(p2, t1)",
        "        loss = 2 * byol_loss(p1, t2)",
        ("tests/test_pretext_pairing.py",),
    ),
    Mutation(
        "simclr-one-view",
        "SimCLR embeds one view twice",
        "sslzoo/pretext/simclr.py",
        "        z2 = self.projector(self.embed(view2))",
        "        z2 = self.projector(self.embed(view1))",
        ("tests/test_pretext_pairing.py",),
    ),
    Mutation(
        "barlow-one-view",
        "Barlow Twins correlates view 1 with itself",
        "sslzoo/pretext/barlowtwins.py",
        "        z2 = self.projector(self.embed(view2))",
        "        z2 = self.projector(self.embed(view1))",
        ("tests/test_pretext_pairing.py",),
    ),
    Mutation(
        "detco-own-view",
        "DetCo keys from the query's own view",
        "sslzoo/pretext/detco.py",
        "                view2, self.key_encoder, self.key_global_heads, self.key_local_heads",
        "                view1, self.key_encoder, self.key_global_heads, self.key_local_heads",
        ("tests/test_pretext_pairing.py",),
    ),
    Mutation(
        "watershed-no-seeds",
        "watershed ignores the seeds (markers from the local minima)",
        "sslzoo/models/postprocess.py",
        "watershed(-smooth, seeds, mask=foreground)",
        "watershed(-smooth, mask=foreground)",
        ("tests/test_watershed_branches.py",),
    ),
    Mutation(
        "watershed-ignores-h",
        "watershed ignores h (threshold seeds always)",
        "sslzoo/models/postprocess.py",
        "    if params.h is not None:",
        "    if False:",
        ("tests/test_watershed_branches.py",),
    ),
    Mutation(
        "hmaxima-no-background-path",
        "h-maxima seeds never look for a higher peak through the background",
        "sslzoo/models/postprocess.py",
        "        if level >= threshold:  # its component of smooth > peak - h lies inside the foreground",
        "        if True:",
        ("tests/test_postprocess_hmaxima.py",),
    ),
    Mutation(
        "hmaxima-pass-ignored",
        "h-maxima seeds: a maximum is removed by any higher region, whatever the pass between them",
        "sslzoo/models/postprocess.py",
        "            reach = np.float32(min(top_shifted[other], value))",
        "            reach = np.float32(top_shifted[other])",
        ("tests/test_postprocess_hmaxima.py", "tests/test_watershed_branches.py"),
    ),
    Mutation(
        "cka-a-with-itself",
        "compare-encoders compares A with itself",
        "sslzoo/cli/representation.py",
        "    encoder_b, config_b = load_encoder(args.encoder_b, args.backbone)",
        "    encoder_b, config_b = load_encoder(args.encoder_a, args.backbone)",
        ("tests/test_representation_commands.py",),
    ),
    Mutation(
        "cli-group-missing",
        "one command group (representation) is not registered",
        "sslzoo/cli/__init__.py",
        '    "sslzoo.cli.representation",\n',
        "",
        ("tests/test_representation_commands.py",),
    ),
)


def run(mutation: Mutation) -> tuple[str, list[str]]:
    path = ROOT / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        return "stale", []
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *mutation.tests],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        path.write_text(original)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.MULTILINE)
    errors = re.findall(r"^ERROR (\S+)", proc.stdout, flags=re.MULTILINE)
    return ("killed" if failed or errors else "SURVIVED"), failed + errors


def main(names: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    print("| mutation | file | result | tests that now fail |")
    print("|---|---|---|---|")
    survived = 0
    for mutation in chosen:
        status, failed = run(mutation)
        survived += status != "killed"
        shown = "<br>".join(f"`{f.split('::', 1)[-1]}`" for f in failed) or "—"
        print(f"| {mutation.name}: {mutation.description} | `{mutation.path}` | {status} | {shown} |", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
