"""Small real samples shipped inside the package (``sslzoo/samples/<kind>/``).

Each is a dataset in the simple layout (``train/images``, ``train/masks``, ``labels.csv``) that
:func:`sslzoo.data.datasets.open_dataset` reads. Sources and licences: ``sslzoo/samples/ATTRIBUTION.md``
(the MoNuSeg crops are CC BY-NC-SA 4.0, the ISIC and DSB files CC0).
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

from sslzoo.errors import ConfigError

_files = ExitStack()
atexit.register(_files.close)


def samples_root() -> Path:
    """Folder holding the packaged samples, as a real path (extracted once when the package is zipped)."""
    traversable = resources.files("sslzoo") / "samples"
    if isinstance(traversable, Path):
        return traversable
    return _files.enter_context(resources.as_file(traversable))  # pragma: no cover - zipped installs only


def list_samples() -> list[str]:
    """Kinds with a packaged sample, sorted (e.g. ``["dsb2018", "isic2017", "monuseg"]``)."""
    root = samples_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def sample_dataset_path(kind: str) -> Path:
    """Path of the packaged sample dataset of ``kind``; raises ConfigError naming the available kinds."""
    available = list_samples()
    if kind not in available:
        raise ConfigError(f"no packaged sample {kind!r}; available samples: {', '.join(available)}")
    return samples_root() / kind
