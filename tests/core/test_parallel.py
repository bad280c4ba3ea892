"""Stages in worker processes leave the run folder a sequential run leaves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.core.parallel import StageJob, default_workers, run_stages
from metalab.core.runs import Run


def noisy_sum(seed: int, *, steps: int, log: Callable[..., None]) -> dict:
    """A seeded computation that logs a line per step (module level: workers import it)."""
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(3)
    for step in range(steps):
        total += torch.randn(3, generator=generator)
        log(step, seed=seed, norm=total.norm())
    return {"seed": seed, "total": total, "threads": torch.get_num_threads()}


def refuses(seed: int, *, log: Callable[..., None]) -> None:
    raise ConfigError(f"seed {seed} is not allowed")


def _jobs(seeds: list[int]) -> list[StageJob]:
    return [StageJob(f"seed{s}", noisy_sum, (s,), {"steps": 4}) for s in seeds]


def _lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time"} for line in lines]


def _stored(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["result"] for p in (run_dir / "stages").glob("*")}


def test_workers_write_what_a_sequential_run_writes(tmp_path: Path) -> None:
    runs = {}
    for workers in (1, 2):
        with Run.create("exp", {"workers": workers}, root=tmp_path / str(workers)) as run:
            results = run_stages(run, _jobs([3, 1, 2]), workers=workers, threads=1)
            runs[workers] = run.dir
        assert [r["seed"] for r in results] == [3, 1, 2]
    assert all(r["threads"] == 1 for r in results)  # the workers' thread count
    assert _lines(runs[2]) == _lines(runs[1])
    assert [line["seed"] for line in _lines(runs[2])] == [3] * 4 + [1] * 4 + [2] * 4
    totals = {w: {k: v["total"] for k, v in _stored(d).items()} for w, d in runs.items()}
    assert totals[2] == totals[1] and len(totals[1]) == 3


def test_a_resumed_run_reuses_finished_stages(tmp_path: Path) -> None:
    with Run.create("exp", {}, root=tmp_path) as run:
        first = run_stages(run, _jobs([0]), workers=1, threads=1)
        run_dir = run.dir
    # stage seed0 now "fails" if recomputed: its stored result must be read instead
    jobs = [StageJob("seed0", refuses, (0,)), *_jobs([1, 2])]
    with Run.open(run_dir) as run:
        results = run_stages(run, jobs, workers=2, threads=1)
    assert results[0] == first[0]
    assert [r["seed"] for r in results] == [0, 1, 2]
    assert [line["seed"] for line in _lines(run_dir)] == [0] * 4 + [1] * 4 + [2] * 4


def test_a_worker_error_reaches_the_caller_after_earlier_stages_are_stored(
    tmp_path: Path,
) -> None:
    jobs = [*_jobs([0]), StageJob("seed5", refuses, (5,)), *_jobs([1])]
    with Run.create("exp", {}, root=tmp_path) as run:
        with pytest.raises(ConfigError, match="seed 5 is not allowed"):
            run_stages(run, jobs, workers=2, threads=1)
        assert run.has_stage("seed0") and not run.has_stage("seed5")


def test_stage_names_must_differ(tmp_path: Path) -> None:
    with Run.create("exp", {}, root=tmp_path) as run, pytest.raises(ValueError, match="repeat"):
        run_stages(run, _jobs([1, 1]), workers=1, threads=1)


def test_default_workers_fill_the_cpu_cores_and_use_one_process_on_a_gpu() -> None:
    cpu = torch.device("cpu")
    assert default_workers(1, cpu) >= 1
    assert default_workers(10**6, cpu) == 1
    assert default_workers(1, torch.device("cuda")) == 1
