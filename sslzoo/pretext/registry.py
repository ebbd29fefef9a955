"""The method registry: a method registers itself when its module is imported.

Every pretext method of :data:`sslzoo.vocabulary.METHODS` lives in the module ``sslzoo.pretext.<method>``.
:func:`load_methods` imports them all lazily (``importlib``); a module that fails to import raises its
error, and one that imports but registers no class of its name is an error too, so the registry always
holds exactly the vocabulary's methods.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from sslzoo.errors import ConfigError
from sslzoo.vocabulary import BASELINES, METHODS

if TYPE_CHECKING:
    from sslzoo.pretext.base import PretextConfig, PretextMethod

__all__ = ["BASELINES", "REGISTRY", "build_method", "get_method", "load_methods", "method_names", "register_method"]

#: Registered method classes by name (filled by :func:`register_method`).
REGISTRY: dict[str, type[PretextMethod]] = {}

M = TypeVar("M", bound="type[PretextMethod]")


def register_method(cls: M) -> M:
    """Class decorator: make ``cls`` available under ``cls.name``, which must be one of :data:`METHODS`."""
    name = getattr(cls, "name", "")
    if not name:
        raise TypeError(f"{cls.__name__} must set the class attribute 'name' to register")
    if name not in METHODS:
        raise TypeError(
            f"{cls.__name__} registers method {name!r}, which sslzoo.vocabulary.Method does not list; "
            "add the name there (the one place that lists the methods)"
        )
    REGISTRY[name] = cls
    return cls


def load_methods() -> dict[str, type[PretextMethod]]:
    """Import the module of every method in :data:`METHODS`; returns the registry.

    An import error of a method module propagates; a module that registers no class of its own name
    raises :class:`RuntimeError`.
    """
    for name in METHODS:
        importlib.import_module(f"{__package__}.{name}")
    missing = [name for name in METHODS if name not in REGISTRY]
    if missing:
        raise RuntimeError(
            f"pretext module(s) {', '.join(missing)} registered no method of that name; decorate the method "
            "class with @register_method and set its 'name'"
        )
    return REGISTRY


def method_names() -> list[str]:
    """Registered method names, in Table II order (= :data:`METHODS`)."""
    methods = load_methods()
    return [name for name in METHODS if name in methods]


def get_method(name: str) -> type[PretextMethod]:
    """The method class registered as ``name``; :class:`ConfigError` when unknown."""
    methods = load_methods()
    if name not in methods:
        hint = " (baselines are not trained: use pretrain(method=...) or --init)" if name in BASELINES else ""
        raise ConfigError(f"unknown pretext method {name!r}{hint}; choose one of {', '.join(METHODS)}")
    return methods[name]


def build_method(config: PretextConfig) -> PretextMethod:
    """Instantiate the method named by ``config.method``."""
    return get_method(config.method)(config)
