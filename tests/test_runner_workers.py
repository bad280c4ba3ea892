"""Runners whose stages run in worker processes give the one-process result (smoke scale)."""

import math

import pytest

from metalab.core.claims import run_spec
from metalab.core.specs import find_spec


@pytest.mark.parametrize(
    ("name", "kind", "stage_prefixes"),
    [
        ("lopt-vs-tuned-baselines", "experiments", ("task-quadratic",)),
        ("pes-many-hyperparams", "experiments", ("start", "pes_k", "tes_k", "random-search")),
        ("asgd-vs-last-iterate", "theory", ("d2-kernel", "d2-paired", "d3-kernel")),
    ],
)
def test_stages_in_worker_processes_give_the_sequential_result(
    tmp_path, name, kind, stage_prefixes
):
    summaries = {}
    for workers in (1, 2):
        outcome = run_spec(
            find_spec(name, kind),
            smoke=True,
            device="cpu",
            out=tmp_path / str(workers),
            overrides={"workers": workers},
        )
        assert outcome.error is None, outcome.error
        summaries[workers] = outcome.metrics
        stages = sorted(p.name for p in (outcome.run_dir / "stages").iterdir())
        assert len(stages) >= 2 and all(s.startswith(stage_prefixes) for s in stages), stages
    assert summaries[2].keys() == summaries[1].keys()
    for key, value in summaries[1].items():
        other = summaries[2][key]
        assert other == value or (math.isnan(value) and math.isnan(other)), key
