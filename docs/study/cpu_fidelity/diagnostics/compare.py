# ruff: noqa: E501, E731
# Diagnostics of docs/study/cpu_fidelity; run from the repository root with PYTHONPATH=$PWD (reads runs/cpu_fidelity).
"""Comparison tables of docs/study/cpu_monuseg (pre-fidelity) vs docs/study/cpu_fidelity, as Markdown."""

import math

import numpy as np

from sslzoo.study.history import read_pretrain_history, rqc_rows
from sslzoo.study.results import read_runs
from sslzoo.study.tables import mean_std

OLD, NEW = "docs/study/cpu_monuseg", "docs/study/cpu_fidelity"
old, new = read_runs(OLD), read_runs(NEW)


def cell(rows, method, frozen, rate, key):
    vals = [
        r[key]
        for r in rows
        if r["method"] == method
        and r["frozen"] == frozen
        and math.isclose(r["rate"], rate)
        and r.get(key) is not None
        and math.isfinite(r[key])
    ]
    if not vals:
        return "–"
    m, s = mean_std(vals)
    return f"{m:.3f} ± {s:.3f}" if len(vals) > 1 else f"{m:.3f} (n=1)"


print("| method | encoder | AJI+ 100 % before | AJI+ 100 % now | Dice 100 % before | Dice 100 % now |")
print("|---|---|---|---|---|---|")
for method in ("random", "simclr", "densecl"):
    for frozen in (False, True):
        print(
            f"| {method} | {'frozen' if frozen else 'fine-tuned'} | {cell(old, method, frozen, 1.0, 'aji_plus')} | "
            f"{cell(new, method, frozen, 1.0, 'aji_plus')} | {cell(old, method, frozen, 1.0, 'dice')} | "
            f"{cell(new, method, frozen, 1.0, 'dice')} |"
        )
print()
print(
    "| method | encoder | AJI+ lowest rate before (1 %) | AJI+ lowest rate now (2 %) | AJI+ 8 % before | AJI+ 16 % now |"
)
print("|---|---|---|---|---|---|")
for method in ("random", "simclr", "densecl"):
    for frozen in (False, True):
        print(
            f"| {method} | {'frozen' if frozen else 'fine-tuned'} | {cell(old, method, frozen, 0.01, 'aji_plus')} | "
            f"{cell(new, method, frozen, 0.02, 'aji_plus')} | {cell(old, method, frozen, 0.08, 'aji_plus')} | "
            f"{cell(new, method, frozen, 0.16, 'aji_plus')} |"
        )
print()
ro = {r["method"]: r for r in rqc_rows(read_pretrain_history(OLD))}
rn = {r["method"]: r for r in rqc_rows(read_pretrain_history(NEW))}
print("| method | RQC before | converged before | pretraining s before | RQC now | converged now | pretraining s now |")
print("|---|---|---|---|---|---|---|")
for m in ("simclr", "densecl"):
    a, b = ro.get(m), rn.get(m)
    f = lambda r: (
        "–" if r is None else f"{r['rqc']:.2f} | {'yes' if r['converged'] else 'no'} | {r['total_time_s']:.0f}"
    )
    print(f"| {m} | {f(a)} | {f(b)} |")
print()
for name, rows in (("before", old), ("now", new)):
    t = [r["run_seconds"] for r in rows if math.isfinite(r.get("run_seconds", math.nan))]
    tr = [r["train_seconds"] for r in rows if math.isfinite(r.get("train_seconds", math.nan))]
    print(
        f"- {name}: {len(t)} runs, median run {np.median(t):.0f} s (train {np.median(tr):.0f} s), sum {sum(t) / 60:.1f} min"
    )
