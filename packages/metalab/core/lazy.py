"""Lazy re-exports for package ``__init__`` files.

A subpackage's ``__init__`` lists which of its modules defines each public name; the module
is imported when the name is first used. This keeps ``metalab <group> --help`` and
``import metalab.<package>`` from importing torch or pykeen before they are needed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package`` re-exporting ``exports``.

    Args:
        package: the package's ``__name__`` (it must be importing itself right now).
        exports: ``{submodule: [names it defines]}``.

    Usage, in ``package/__init__.py``::

        __getattr__, __dir__ = lazy_exports(__name__, {"graphs": ["load_graph"]})
    """
    where = {name: module for module, names in exports.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
