"""The rate studies' stage groups in worker processes give the one-process numbers."""

import math

from metalab.core.claims import run_spec
from metalab.core.specs import find_spec


def test_stage_groups_in_worker_processes_give_the_sequential_result(tmp_path):
    summaries = {}
    for workers in (1, 2):
        outcome = run_spec(
            find_spec("asgd-vs-last-iterate", "theory"),
            smoke=True,
            device="cpu",
            out=tmp_path / str(workers),
            overrides={"workers": workers},
        )
        assert outcome.error is None, outcome.error
        summaries[workers] = outcome.metrics
        stages = sorted(p.stem for p in (outcome.run_dir / "stages").iterdir())
        assert stages == ["d2-kernel", "d2-paired", "d3-kernel"], stages
    assert summaries[2].keys() == summaries[1].keys()
    for key, value in summaries[1].items():
        other = summaries[2][key]
        assert other == value or (math.isnan(value) and math.isnan(other)), key
