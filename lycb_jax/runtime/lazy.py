"""Lazy package attributes (PEP 562): a package lists ``name -> module`` and imports each module on first
use, so that importing the package (and ``lycb-jax --help``) does not start JAX."""

from __future__ import annotations

import importlib


def attributes(package: str, names: dict[str, str]):
    """(__getattr__, __dir__) for ``package`` whose attribute ``name`` lives in module ``names[name]``."""

    def __getattr__(name):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(importlib.import_module(package))) | set(names))

    return __getattr__, __dir__
