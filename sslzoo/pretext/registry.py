"""The method registry: a method registers itself when its module is imported.

``METHOD_MODULES`` lists every known method module in Table II order; they are
imported lazily (``importlib``) by :func:`load_methods`, and a module that does not
exist (yet) is skipped, so :func:`get_method` and ``sslzoo methods`` see whatever
is installed.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, TypeVar

from sslzoo.errors import ConfigError

if TYPE_CHECKING:
    from sslzoo.pretext.base import PretextConfig, PretextMethod

#: Method modules under ``sslzoo.pretext``, in the order of the paper's Table II.
METHOD_MODULES: tuple[str, ...] = ("autoencoder", "simclr", "byol", "moco", "barlowtwins", "densecl", "detco")
#: Initialisations that are not trained: exported straight from ``baseline_encoder``.
BASELINES: tuple[str, ...] = ("random", "imagenet")

METHODS: dict[str, type[PretextMethod]] = {}
#: Method modules that exist but failed to import (name -> error); reported by :func:`get_method`.
BROKEN: dict[str, Exception] = {}

M = TypeVar("M", bound="type[PretextMethod]")


def register_method(cls: M) -> M:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    name = getattr(cls, "name", "")
    if not name:
        raise TypeError(f"{cls.__name__} must set the class attribute 'name' to register")
    METHODS[name] = cls
    return cls


def load_methods() -> dict[str, type[PretextMethod]]:
    """Import every method module that exists; returns the registry."""
    for module in METHOD_MODULES:
        full = f"{__package__}.{module}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name == full:  # not written (yet)
                continue
            _broken(module, exc)
        except ImportError as exc:  # a module under construction must not hide the others
            _broken(module, exc)
    return METHODS


def _broken(module: str, exc: Exception) -> None:
    if module not in BROKEN:
        warnings.warn(f"pretext method module {module!r} failed to import: {exc}", RuntimeWarning, stacklevel=3)
    BROKEN[module] = exc


def method_names() -> list[str]:
    """Registered method names, Table II order first."""
    methods = load_methods()
    ordered = [m for m in METHOD_MODULES if m in methods]
    return ordered + sorted(set(methods) - set(ordered))


def get_method(name: str) -> type[PretextMethod]:
    """The method class registered as ``name``; :class:`ConfigError` when unknown."""
    methods = load_methods()
    if name not in methods and name in BROKEN:
        raise ConfigError(f"pretext method {name!r} is installed but failed to import: {BROKEN[name]}") from BROKEN[
            name
        ]
    if name not in methods:
        hint = " (baselines are not trained: use pretrain(method=...) or --init)" if name in BASELINES else ""
        raise ConfigError(f"unknown pretext method {name!r}{hint}; choose one of {', '.join(method_names())}")
    return methods[name]


def build_method(config: PretextConfig) -> PretextMethod:
    """Instantiate the method named by ``config.method``."""
    return get_method(config.method)(config)
