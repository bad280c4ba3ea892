"""lopt runners whose stages run in worker processes give the one-process result."""

import pytest

from metalab.core.claims import run_spec
from metalab.core.specs import find_spec


@pytest.mark.parametrize(
    ("name", "stage_prefixes"),
    [
        ("lopt-vs-tuned-baselines", ("task-quadratic",)),
        ("pes-many-hyperparams", ("start", "pes_k", "tes_k", "random-search")),
    ],
)
def test_stages_in_worker_processes_give_the_sequential_result(tmp_path, name, stage_prefixes):
    summaries = {}
    for workers in (1, 2):
        outcome = run_spec(
            find_spec(name),
            smoke=True,
            device="cpu",
            out=tmp_path / str(workers),
            overrides={"workers": workers},
        )
        assert outcome.error is None, outcome.error
        summaries[workers] = outcome.metrics
        stages = sorted(p.name for p in (outcome.run_dir / "stages").iterdir())
        assert len(stages) >= 2 and all(s.startswith(stage_prefixes) for s in stages), stages
    assert summaries[2] == summaries[1]
