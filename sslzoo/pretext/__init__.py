"""sslzoo.pretext: self-supervised pretext methods on a shared LightningModule base.

Public API (imported lazily, so ``import sslzoo.pretext`` stays light)::

    from sslzoo.pretext import PretextConfig, PretextMethod, pretrain, get_method, method_names, register_method
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PretextConfig": "sslzoo.pretext.base",
    "PretextMethod": "sslzoo.pretext.base",
    "pretrain": "sslzoo.pretext.train",
    "get_method": "sslzoo.pretext.registry",
    "build_method": "sslzoo.pretext.registry",
    "method_names": "sslzoo.pretext.registry",
    "register_method": "sslzoo.pretext.registry",
    "REGISTRY": "sslzoo.pretext.registry",
    "BASELINES": "sslzoo.pretext.registry",
    "method_table": "sslzoo.pretext.table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sslzoo.pretext' has no attribute {name!r}")
