"""The lazy re-export table of ``metalab.core`` and its static ``__all__`` agree."""

from __future__ import annotations

import importlib

import metalab.core as core


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert sorted(core.__all__) == sorted(core._WHERE)


def test_every_export_resolves_to_the_defining_module() -> None:
    for name, module in core._WHERE.items():
        assert getattr(core, name) is getattr(
            importlib.import_module(f"metalab.core.{module}"), name
        )
