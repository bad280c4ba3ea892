"""An experiment's independent stages (one seed, one method) on several CPU cores at once.

Small models train fastest on one thread each, so a 2-core machine finishes two seeds in
the time of one when each runs in its own process. Workers only compute: the results and
the metric lines they logged come back to the parent, which stores them stage by stage in
the jobs' order. The run folder is therefore the one a sequential run writes (same stage
files, same metric lines in the same order, wall times aside) and resumes the same way;
a stage finished before an interruption is read back, not recomputed.

Worker processes are spawned (forking a process that has started torch's thread pools can
hang), so a job's function must be importable (module level) and its arguments picklable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.multiprocessing

from metalab.core.runs import Run, metric_record

__all__ = ["StageJob", "default_workers", "run_stages"]

Log = Callable[..., None]


@dataclass(frozen=True)
class StageJob:
    """``fn(*args, log=log, **kwargs)`` stored as stage ``name`` of a run.

    ``fn`` must be a module-level function (workers import it by name) and it reports
    metric lines by calling ``log(step, **metrics)`` as it would call :meth:`Run.log`.
    """

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def default_workers(threads: int, device: torch.device) -> int:
    """One worker per ``threads`` CPU cores on a CPU device, one process on a GPU."""
    if device.type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(threads, 1))


def run_stages(run: Run, jobs: Sequence[StageJob], *, workers: int, threads: int) -> list[Any]:
    """Every job's result (its JSON form, as :meth:`Run.stage` returns it), in job order.

    Args:
        run: the run whose ``stages/`` hold the results.
        jobs: the stages; names must be distinct.
        workers: processes to use; ``1`` runs the jobs here, one after another.
        threads: torch CPU threads in each worker (``0`` leaves torch's default).
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    pending = [job for job in jobs if not run.has_stage(job.name)]
    if workers <= 1 or len(pending) <= 1:
        return [run.stage(job.name, _here(job, run.log)) for job in jobs]
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(pending)),
        mp_context=torch.multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(threads,),
    )
    try:
        futures = {job.name: pool.submit(_in_worker, job) for job in pending}
        results = [run.stage(job.name, _collect(futures.get(job.name), run)) for job in jobs]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def _here(job: StageJob, log: Log) -> Callable[[], Any]:
    return lambda: job.fn(*job.args, log=log, **job.kwargs)


def _collect(future: Future | None, run: Run) -> Callable[[], Any]:
    """The stage's compute: wait for the worker, then write its metric lines here."""

    def compute() -> Any:
        if future is None:  # finished before a resume: Run.stage reads it back
            raise AssertionError("a stored stage was asked to compute")
        result, records = future.result()
        run.write_records(records)
        return result

    return compute


def _start_worker(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def _in_worker(job: StageJob) -> tuple[Any, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []

    def log(step: int | None = None, **metrics: Any) -> None:
        records.append(metric_record(step, **metrics))

    return job.fn(*job.args, log=log, **job.kwargs), records
