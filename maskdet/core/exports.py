"""Public names of a sub-package, loaded on first use.

A sub-package's ``__init__`` lists its public names; importing one module of it (``import
maskdet.core.errors``) then loads only what that module needs, and ``masktheface_patch`` can use
:mod:`maskdet.synthesis.appearance` while the synthesis driver itself imports the patch.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """``__getattr__`` and ``__all__`` for ``package``: ``names`` maps each public name to the
    module of the package that defines it."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(names)
