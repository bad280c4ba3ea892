"""Stages in worker processes leave the run folder a sequential run leaves."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.core.parallel import (
    StageJob,
    WorkerDied,
    default_workers,
    enable_auto_workers,
    run_stages,
)
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


def unknown(name: str, *, log: Callable[..., None]) -> None:
    raise UnknownNameError("operation", name, ["conv1", "conv3"])


def sleeps(seconds: float, pid_file: str = "", *, log: Callable[..., None]) -> float:
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


def dies(code: int, *, log: Callable[..., None]) -> None:
    time.sleep(5.0)  # the stage before it has long finished and been stored
    os._exit(code)


def exits(code: int, *, log: Callable[..., None]) -> None:
    sys.exit(code)


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


def test_a_stage_that_calls_sys_exit_fails_like_any_stage(tmp_path: Path) -> None:
    jobs = [*_jobs([0]), StageJob("exits", exits, (3,)), *_jobs([1])]
    with Run.create("exp", {}, root=tmp_path) as run:
        with pytest.raises(RuntimeError, match="stage exits stopped its worker: SystemExit 3"):
            run_stages(run, jobs, workers=2, threads=1)
        assert run.has_stage("seed0") and not run.has_stage("exits")


def test_stage_names_must_differ(tmp_path: Path) -> None:
    with Run.create("exp", {}, root=tmp_path) as run, pytest.raises(ValueError, match="repeat"):
        run_stages(run, _jobs([1, 1]), workers=1, threads=1)


def test_auto_workers_fill_the_cores_only_where_the_cli_turned_them_on() -> None:
    cpu = torch.device("cpu")
    assert default_workers(1, cpu) == 1  # a script might lack its __main__ guard
    enable_auto_workers()
    try:
        assert default_workers(1, cpu) == len(os.sched_getaffinity(0))
        assert default_workers(10**6, cpu) == 1
        assert default_workers(0, cpu) == 1  # torch's own threads already fill the cores
        assert default_workers(1, torch.device("cuda")) == 1
    finally:
        enable_auto_workers(False)


def test_an_error_whose_class_takes_other_arguments_keeps_its_type(tmp_path: Path) -> None:
    jobs = [*_jobs([0]), StageJob("bad", unknown, ("conv9",))]
    expected = "unknown operation 'conv9'; did you mean"
    with (
        Run.create("exp", {}, root=tmp_path) as run,
        pytest.raises(UnknownNameError, match=expected),
    ):
        run_stages(run, jobs, workers=2, threads=1)


def test_an_error_stops_the_later_stages_at_once(tmp_path: Path) -> None:
    """Stages after the failed one (in job order) are killed, not waited for."""
    jobs = [StageJob("bad", refuses, (1,)), StageJob("long", sleeps, (60.0,))]
    jobs += [StageJob(f"queued{i}", sleeps, (60.0,)) for i in range(2)]
    started = time.perf_counter()
    with Run.create("exp", {}, root=tmp_path) as run, pytest.raises(ConfigError):
        run_stages(run, jobs, workers=2, threads=1)
    deadline = time.perf_counter() + 10
    while multiprocessing.active_children() and time.perf_counter() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()
    assert time.perf_counter() - started < 30


def test_a_dead_worker_names_the_lost_stages_and_finished_ones_are_kept(tmp_path: Path) -> None:
    jobs = [*_jobs([0]), StageJob("dies", dies, (3,)), StageJob("long", sleeps, (60.0,))]
    with Run.create("exp", {}, root=tmp_path) as run:
        with pytest.raises(
            WorkerDied, match=r"without a result while stage\(s\) \['dies', 'long'\]"
        ):
            run_stages(run, jobs, workers=2, threads=1)
        assert run.has_stage("seed0") and not run.has_stage("dies")


_PARENT = """
import sys
from metalab.core.parallel import StageJob, run_stages
from metalab.core.runs import Run
from tests.core.test_parallel import sleeps

if __name__ == "__main__":
    with Run.create("exp", {}, root=sys.argv[1]) as run:
        jobs = [StageJob(n, sleeps, (120.0, f"{sys.argv[1]}/{n}.pid")) for n in "ab"]
        run_stages(run, jobs, workers=2, threads=1)
"""


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    repo = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])
    )
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=repo, env=env)
    pid_files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    deadline = time.monotonic() + 60
    while not all(p.is_file() and p.read_text() for p in pid_files):
        assert time.monotonic() < deadline and parent.poll() is None, "workers never started"
        time.sleep(0.1)
    workers = [int(p.read_text()) for p in pid_files]
    parent.send_signal(signal.SIGTERM)  # no Python clean-up runs in the parent
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split()[2] == "Z")  # a zombie is gone
