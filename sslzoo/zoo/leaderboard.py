"""The zoo leaderboard: one row per finished entry, as Markdown (``LEADERBOARD.md``) and a PNG.

Columns: method, dataset, backbone, pretraining time and steps, final pretext loss, NQC (with its leave-one-out
chance level), frozen-probe score ± std over seeds, and the gain over random init with the one-tailed t-test p
(:func:`sslzoo.zoo.probe.gain_over_reference`). Rows are grouped by dataset, the reference first, then by probe
score. Written from whatever has finished, so a partial build has a leaderboard too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from sslzoo.zoo.records import EntryRecord, finished_entries, format_seconds, gain_of, reference_of

LEADERBOARD_MD = "LEADERBOARD.md"
LEADERBOARD_PNG = "leaderboard.png"
HEADER = (
    "method",
    "dataset",
    "backbone",
    "pretraining",
    "steps",
    "final pretext loss",
    "NQC (chance)",
    "probe",
    "gain over random (p)",
)


def ordered(records: Sequence[EntryRecord]) -> list[EntryRecord]:
    """By dataset, the reference first, then by probe score (best first)."""
    return sorted(records, key=lambda r: (r.kind, not r.reference, -r.probe.mean, r.method))


def leaderboard_rows(records: Sequence[EntryRecord]) -> list[list[str]]:
    """The table's rows (strings), in :func:`ordered` order."""
    rows = []
    for record in ordered(records):
        pretrain = record.pretrain
        gain = gain_of(record, reference_of(records, record))
        if record.reference:
            gain_text = "reference"
        elif gain is None:
            gain_text = "no reference yet"
        else:
            gain_text = f"{gain[0]:+.3f} ({'n/a' if math.isnan(gain[1]) else f'{gain[1]:.3f}'})"
        rows.append(
            [
                record.method,
                record.kind,
                record.backbone,
                format_seconds(pretrain.seconds) if pretrain else "-",
                str(pretrain.steps) if pretrain else "-",
                f"{pretrain.final_loss:.4f}" if pretrain and pretrain.final_loss is not None else "-",
                f"{record.nqc.nqc:.3f} ({record.nqc.chance:.3f})",
                f"{record.probe.metric} {record.probe.mean:.3f} ± {record.probe.std:.3f}",
                gain_text,
            ]
        )
    return rows


def leaderboard_markdown(records: Sequence[EntryRecord], title: str = "Zoo leaderboard") -> str:
    """The Markdown page: the table, then how each column was measured, per dataset."""
    lines = [f"# {title}", ""]
    if not records:
        return "\n".join([*lines, "No entry has finished yet.", ""])
    lines += [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
        *("| " + " | ".join(row) + " |" for row in leaderboard_rows(records)),
        "",
        "How each column was measured:",
        "",
    ]
    for kind in sorted({r.kind for r in records}):
        sample = next(r for r in ordered(records) if r.kind == kind)
        probe, nqc = sample.probe, sample.nqc
        lines.append(
            f"- **{kind}**: NQC on {nqc.n_images} {nqc.images} images by {nqc.label} (chance = leave-one-out "
            f"expectation); probe = {probe.metric} on {probe.n_eval_images} held-out images ({probe.eval_rule}), "
            f"decoder trained {probe.steps} steps on {probe.n_train_tiles} labelled tiles with the encoder frozen, "
            f"mean ± std over seeds {list(probe.scores)}; gain = mean minus random init's, p from a one-tailed "
            "two-sample t-test (H0: method <= random)."
        )
    total = sum(r.seconds for r in records)
    lines += [
        "",
        f"{len(records)} entries, {format_seconds(total)} of build wall time in all "
        f"(per entry: {', '.join(f'{r.name} {format_seconds(r.seconds)}' for r in ordered(records))}).",
        "",
        f"Machine: {records[0].machine}.",
        "",
    ]
    return "\n".join(lines)


def plot_leaderboard(records: Sequence[EntryRecord], path: Path) -> Path:
    """One column per dataset: probe score ± std per method (random init dashed), and NQC with its chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r.kind for r in records}) or ["(none)"]
    fig, axes = plt.subplots(2, len(kinds), figsize=(5.5 * len(kinds), 7.5), squeeze=False)
    try:
        for col, kind in enumerate(kinds):
            rows = [r for r in ordered(records) if r.kind == kind]
            top, bottom = axes[0][col], axes[1][col]
            names = [r.method for r in rows]
            colours = ["tab:grey" if r.reference else "tab:blue" for r in rows]
            positions = list(range(len(rows)))
            top.barh(positions, [r.probe.mean for r in rows], xerr=[r.probe.std for r in rows], color=colours)
            reference = next((r for r in rows if r.reference), None)
            if reference is not None:
                top.axvline(reference.probe.mean, color="black", linestyle="--", linewidth=1, label="random init")
                top.legend(loc="lower right", fontsize=8)
            metric = rows[0].probe.metric if rows else "score"
            top.set_title(f"{kind}: frozen probe ({metric}, mean ± std over seeds)", fontsize=10)
            bottom.barh(positions, [r.nqc.nqc for r in rows], color=colours)
            if rows:
                bottom.axvline(rows[0].nqc.chance, color="tab:red", linestyle=":", linewidth=1.5, label="chance")
                bottom.legend(loc="lower right", fontsize=8)
            bottom.set_title(f"{kind}: NQC ({rows[0].nqc.label if rows else ''})", fontsize=10)
            for ax in (top, bottom):
                ax.set_yticks(positions, names)
                ax.invert_yaxis()
                ax.set_xlim(0, 1)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.png")
        fig.savefig(tmp, dpi=90)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path


def write_leaderboard(zoo_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Write ``LEADERBOARD.md`` + ``leaderboard.png`` of the finished entries of ``zoo_dir`` into ``out``
    (default: ``zoo_dir`` itself); returns the Markdown path."""
    records = finished_entries(zoo_dir)
    target = Path(out) if out is not None else Path(zoo_dir)
    target.mkdir(parents=True, exist_ok=True)
    config_name = records[0].config if records else Path(zoo_dir).name
    text = leaderboard_markdown(records, title or f"Zoo leaderboard ({config_name})")
    png = plot_leaderboard(records, target / LEADERBOARD_PNG)
    md = target / LEADERBOARD_MD
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(text.rstrip("\n") + f"\n\n![leaderboard]({png.name})\n")
    os.replace(tmp, md)
    return md
