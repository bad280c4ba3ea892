"""Each package's lazy re-export table, its static ``__all__`` and its modules agree."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "metalab.core",
    "metalab.kg",
    "metalab.lopt",
    "metalab.nas",
    "metalab.net2net",
    "metalab.ntk",
]


def _lazy(name: str):
    package = importlib.import_module(name)
    if not hasattr(package, "_EXPORTS"):
        pytest.skip(f"{name} imports its names eagerly")
    return package


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_lazy_exports(name: str) -> None:
    package = _lazy(name)
    declared = [n for names in package._EXPORTS.values() for n in names]
    assert len(declared) == len(set(declared)), "a name is exported from two modules"
    assert sorted(package.__all__) == sorted(declared)
    assert sorted(dir(package)) == sorted(declared)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_export_resolves_to_the_defining_module(name: str) -> None:
    package = _lazy(name)
    for module, names in package._EXPORTS.items():
        defining = importlib.import_module(f"{name}.{module}")
        for export in names:
            assert getattr(package, export) is getattr(defining, export)


def test_unknown_name_is_an_attribute_error() -> None:
    core = importlib.import_module("metalab.core")
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = core.no_such_thing
