"""Laws of the t-norms, t-conorms and negation of CQD (hypothesis properties)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metalab.core.errors import UnknownNameError
from metalab.kg.tnorms import make_tnorm, negation, tnorm_names

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
NAMES = tnorm_names()


def t(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(a=unit, b=unit, c=unit)
def test_tnorm_laws(name: str, a: float, b: float, c: float) -> None:
    n = make_tnorm(name)
    assert float(n.tnorm(t(a), t(b))) == pytest.approx(float(n.tnorm(t(b), t(a))), abs=1e-12)
    left = n.tnorm(n.tnorm(t(a), t(b)), t(c))
    right = n.tnorm(t(a), n.tnorm(t(b), t(c)))
    assert float(left) == pytest.approx(float(right), abs=1e-12)
    assert float(n.tnorm(t(a), t(1.0))) == pytest.approx(a, abs=1e-12)  # identity 1
    assert float(n.tnorm(t(a), t(0.0))) == 0.0  # annihilator 0
    lo, hi = min(b, c), max(b, c)  # monotone
    assert float(n.tnorm(t(a), t(lo))) <= float(n.tnorm(t(a), t(hi))) + 1e-12
    assert 0.0 <= float(n.tnorm(t(a), t(b))) <= min(a, b) + 1e-12  # below Gödel


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(a=unit, b=unit, c=unit)
def test_tconorm_laws_and_de_morgan(name: str, a: float, b: float, c: float) -> None:
    n = make_tnorm(name)
    s = n.tconorm
    assert float(s(t(a), t(b))) == pytest.approx(float(s(t(b), t(a))), abs=1e-12)
    assert float(s(s(t(a), t(b)), t(c))) == pytest.approx(float(s(t(a), s(t(b), t(c)))), abs=1e-12)
    assert float(s(t(a), t(0.0))) == pytest.approx(a, abs=1e-12)  # identity 0
    assert float(s(t(a), t(1.0))) == pytest.approx(1.0, abs=1e-12)
    assert max(a, b) - 1e-12 <= float(s(t(a), t(b))) <= 1.0 + 1e-12  # above max
    dual = negation(n.tnorm(negation(t(a)), negation(t(b))))
    assert float(s(t(a), t(b))) == pytest.approx(float(dual), abs=1e-12)


def test_known_values_and_names() -> None:
    a, b = torch.tensor([0.3, 0.9]), torch.tensor([0.6, 0.5])
    assert torch.allclose(make_tnorm("godel").tnorm(a, b), torch.tensor([0.3, 0.5]))
    assert torch.allclose(make_tnorm("product").tnorm(a, b), torch.tensor([0.18, 0.45]))
    assert torch.allclose(make_tnorm("lukasiewicz").tnorm(a, b), torch.tensor([0.0, 0.4]))
    assert torch.allclose(make_tnorm("product").tconorm(a, b), torch.tensor([0.72, 0.95]))
    assert torch.allclose(negation(a), torch.tensor([0.7, 0.1]))
    assert type(make_tnorm("min")).__name__ == "Godel"
    with pytest.raises(UnknownNameError, match="did you mean godel"):
        make_tnorm("godl")
