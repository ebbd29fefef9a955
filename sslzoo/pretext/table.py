"""Table II of the paper: per method its hyper-parameters ψ, extra parameters Δθ, batch assumption, notes.

Δθ is counted from the modules each method builds for the chosen backbone (on
PyTorch's ``meta`` device, so no memory is allocated): every parameter in
``extra_modules()``, trainable or not (momentum copies count), buffers (queues) not.
"""

from __future__ import annotations

from pydantic import BaseModel

from sslzoo.pretext.registry import BASELINES, get_method, method_names

#: Δθ in millions for ResNet-50 as printed in the paper's Table II.
PAPER_DELTA_THETA_M: dict[str, float] = {
    "autoencoder": 11.0,
    "simclr": 2.2,
    "byol": 46.6,
    "moco": 32.4,
    "barlowtwins": 12.6,
    "densecl": 41.4,
    "detco": 946.5,
}
#: ψ of the paper's Table II: the number of method hyper-parameters it counts (1/1/1/2/3/2 for SimCLR, BYOL,
#: Barlow Twins, MoCo, DenseCL, DetCo; the autoencoder has none). Which parameters they are is our reading
#: (``paper_psi`` of each method class): SimCLR τ; BYOL τ_base; Barlow Twins λ; MoCo m, K; DenseCL m, K, λ;
#: DetCo m, K.
PAPER_PSI: dict[str, int] = {
    "autoencoder": 0,
    "simclr": 1,
    "byol": 1,
    "barlowtwins": 1,
    "moco": 2,
    "densecl": 3,
    "detco": 2,
}


class MethodRow(BaseModel):
    """One row of Table II."""

    method: str
    psi_count: int | None = None
    paper_psi: str = "-"
    psi: str
    delta_theta_m: float
    paper_delta_theta_m: float | None = None
    batch: str
    notes: str


def method_row(name: str, backbone: str = "resnet50") -> MethodRow:
    """Build ``name`` for ``backbone`` on the meta device and describe it."""
    import torch

    from sslzoo.pretext.base import PretextConfig

    cls = get_method(name)
    with torch.device("meta"):
        module = cls(PretextConfig(method=name, backbone=backbone, samples_per_epoch=None))
    psi = ", ".join(f"{key}={module.params[key]}" for key in cls.psi)
    return MethodRow(
        method=name,
        psi_count=len(cls.paper_psi),
        paper_psi=", ".join(cls.paper_psi) or "-",
        psi=psi,
        delta_theta_m=round(module.extra_parameter_count() / 1e6, 2),
        paper_delta_theta_m=PAPER_DELTA_THETA_M.get(name) if backbone == "resnet50" else None,
        batch=cls.batch_note,
        notes=cls.notes,
    )


def method_table(backbone: str = "resnet50", include_baselines: bool = True) -> list[MethodRow]:
    """Rows for every registered method (Table II order), then the untrained baselines."""
    import logging

    quiet = logging.getLogger("sslzoo.pretext")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "queue not clamped" warnings mean nothing here
    try:
        rows = [method_row(name, backbone) for name in method_names()]
    finally:
        quiet.setLevel(level)
    if include_baselines:
        notes = {
            "random": "torchvision ResNet init (Kaiming-normal convs)",
            "imagenet": "supervised ImageNet weights (smp)",
        }
        rows += [
            MethodRow(method=b, psi="-", delta_theta_m=0.0, batch="-", notes=f"baseline, not trained: {notes[b]}")
            for b in BASELINES
        ]
    return rows


COLUMNS = (
    ("method", "method"),
    ("psi_count", "ψ"),
    ("paper_psi", "ψ counted (paper)"),
    ("psi", "hyper-parameters (defaults)"),
    ("delta_theta_m", "Δθ [M]"),
    ("paper_delta_theta_m", "paper Δθ R50 [M]"),
    ("batch", "batch assumption"),
    ("notes", "notes"),
)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_table(rows: list[MethodRow], markdown: bool = False) -> str:
    """Plain aligned text, or a Markdown table with ``markdown=True``."""
    header = [title for _, title in COLUMNS]
    body = [[_cell(getattr(row, key)) for key, _ in COLUMNS] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*cells) for cells in body]
    return "\n".join(line.rstrip() for line in lines)
