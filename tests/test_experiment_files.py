"""Every shipped experiment and theory file runs end to end at smoke scale.

For each spec: it parses, its ``[smoke]`` parameters build the runner's config, the runner
finishes, and it reports every metric its checks name. Whether the claim holds at smoke
scale is not asserted (that is what ``metalab repro run --quick`` and the slow tests do).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from metalab.core.claims import load_runner, run_spec
from metalab.core.config import build_config
from metalab.core.specs import Spec, discover_specs, resolve_params

REPO = Path(__file__).resolve().parents[1]


def _checkout_specs() -> list[Spec]:
    specs: list[Spec] = []
    for kind in ("experiments", "theory"):
        specs.extend(s for s in discover_specs(kind).values() if REPO in s.path.resolve().parents)
    return sorted(specs, key=lambda s: s.name)


SPECS = _checkout_specs()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_spec_runs_at_smoke_scale_and_reports_every_checked_metric(
    spec: Spec, tmp_path: Path
) -> None:
    assert spec.smoke, f"{spec.path} needs a [smoke] section so this test stays fast"
    outcome = run_spec(spec, smoke=True, device="cpu", out=tmp_path)
    assert outcome.error is None, outcome.error
    missing = [c.metric for c in spec.checks if c.metric not in outcome.metrics]
    assert not missing, f"{spec.name} did not report {missing}"
    assert (outcome.run_dir / "summary.json").is_file()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_runner_declares_its_params_and_every_scale_satisfies_them(spec: Spec) -> None:
    """``run_spec`` can refuse an impossible ``--set`` before it makes a run folder."""
    params_class = getattr(load_runner(spec), "params_class", None)
    assert params_class is not None, f"{spec.runner} needs @runner_params(...)"
    for scale in ({}, {"quick": True}, {"smoke": True}):
        build_config(params_class, resolve_params(spec, **scale))


def test_every_experiment_folder_is_covered() -> None:
    """The discovery above sees every TOML file in the checkout (none silently skipped)."""
    tomls = {
        p.resolve() for kind in ("experiments", "theory") for p in (REPO / kind).rglob("*.toml")
    }
    assert tomls == {s.path.resolve() for s in SPECS}
