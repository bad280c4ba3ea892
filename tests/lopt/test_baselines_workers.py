"""lopt-vs-tuned-baselines evaluates its tasks in worker processes with the same result."""

from metalab.core.claims import run_spec
from metalab.core.specs import find_spec


def test_tasks_evaluated_in_worker_processes_give_the_sequential_result(tmp_path):
    summaries = {}
    for workers in (1, 2):
        outcome = run_spec(
            find_spec("lopt-vs-tuned-baselines"),
            smoke=True,
            device="cpu",
            out=tmp_path / str(workers),
            overrides={"workers": workers},
        )
        assert outcome.error is None, outcome.error
        summaries[workers] = outcome.metrics
        stages = sorted(p.name for p in (outcome.run_dir / "stages").iterdir())
        assert len(stages) >= 2 and all(s.startswith("task-quadratic") for s in stages)
    assert summaries[2] == summaries[1]
