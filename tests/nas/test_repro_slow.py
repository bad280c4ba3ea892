"""The --quick reproductions of the NAS experiments (minutes each): `pytest -m slow`."""

import pytest

from metalab.core.claims import run_spec
from metalab.core.specs import find_spec

_NOT_REPRODUCED = (
    "measured, CPU-dependent: magnitude drop 0.0013 < 0.01 on one CPU; on an AMD EPYC the "
    "drop passes (0.0118) but the skip share falls (-0.006)"
)
_TIE = "measured, CPU-dependent: a tie (-0.0002) on one CPU, +0.0090 on an AMD EPYC; full passes"
NAMES = [
    pytest.param("darts-pt-vs-magnitude", marks=pytest.mark.xfail(reason=_TIE)),
    pytest.param("darts-skip-domination", marks=pytest.mark.xfail(reason=_NOT_REPRODUCED)),
    "darts-pt-fixed-alpha",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_quick_reproduction(name, tmp_path):
    outcome = run_spec(find_spec(name), quick=True, device="cpu", out=tmp_path)
    assert outcome.error is None, outcome.error
    failed = [(r.check.metric, r.measured) for r in outcome.checks if not r.passed]
    assert not failed, f"{name}: checks failed (measured): {failed}"
