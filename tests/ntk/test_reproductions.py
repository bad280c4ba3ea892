"""The --quick theory checks of metalab.ntk (minutes each): run with ``-m slow``."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalab.core.claims import run_spec
from metalab.core.specs import find_spec


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["ntk-spectrum", "ntk-regime", "asgd-vs-last-iterate", "ntk-asgd-rate"]
)
def test_quick_theory_check_passes(name: str, tmp_path: Path) -> None:
    outcome = run_spec(find_spec(name, "theory"), quick=True, device="cpu", out=tmp_path)
    assert outcome.error is None, outcome.error
    failed = [(c.check.metric, c.measured) for c in outcome.checks if not c.passed]
    assert not failed, failed
