"""An experiment's independent stages (one seed, one method) on several CPU cores at once.

Small models train fastest on one thread each, so a 2-core machine finishes two seeds in
the time of one when each runs in its own process. Workers only compute: the results and
the metric lines they logged come back to the parent, which stores them stage by stage in
the jobs' order. The run folder is therefore the one a sequential run writes (same stage
files, same metric lines in the same order, wall times aside) and resumes the same way;
a stage finished before an interruption is read back, not recomputed.

Worker processes are spawned (forking a process that has started torch's thread pools can
hang), so a job's function must be importable (module level) and its arguments picklable,
and a script that asks for workers must guard its body with ``if __name__ ==
"__main__":`` (a spawned worker imports the script). That is why ``workers=0`` ("one per
core") means one process unless the ``metalab`` command, which is guarded, turned
:func:`enable_auto_workers` on. An error, Ctrl-C or the parent's death stops every worker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metalab.core.worker_pool import (
    WorkerDied,
    default_workers,
    enable_auto_workers,
    portable_error,
    spawn_pool,
    stop_pool,
    torch_threads,
    worker_died,
)

if TYPE_CHECKING:  # the run folder is imported when used: the CLI imports this module
    from metalab.core.runs import Run

__all__ = [
    "StageJob",
    "WorkerDied",
    "default_workers",
    "enable_auto_workers",
    "map_unordered",
    "run_stages",
    "torch_threads",
]


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


def run_stages(run: Run, jobs: Sequence[StageJob], *, workers: int, threads: int) -> list[Any]:
    """Every job's result (its JSON form, as :meth:`Run.stage` returns it), in job order.

    Args:
        run: the run whose ``stages/`` hold the results.
        jobs: the stages; names must be distinct.
        workers: processes to use; ``1`` runs the jobs here, one after another (with the
            caller's thread count).
        threads: torch CPU threads in each worker process (``0`` leaves torch's default).

    Raises:
        Whatever a job raised, once the stages before it in job order are stored (as a
        sequential run would have), or WorkerDied naming the stages that were running
        when a worker process died (those are lost, earlier ones included).
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    pending = deque(job for job in jobs if not run.has_stage(job.name))
    if workers <= 1 or len(pending) <= 1:
        return [run.stage(job.name, _here(job, run.log)) for job in jobs]
    results: list[Any] = []
    pool = spawn_pool(min(workers, len(pending)), threads)
    try:
        _drive(pool, run, jobs, pending, workers, results)
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()
    return results


def map_unordered(
    fn: Callable[..., Any],
    items: Iterable[tuple[Any, ...]],
    *,
    workers: int,
    threads: int,
    stop: Callable[[], bool] = lambda: False,
    labels: Sequence[str] | None = None,
) -> Generator[tuple[int, Any], None, None]:
    """``(index, fn(*item))`` for each item as it finishes, ``workers`` processes at a time.

    For work whose results the caller stores itself (e.g. a table saved every few
    seconds): nothing is kept here, so whatever the caller stored survives an error.
    ``stop()`` is asked before each item starts; when it says True no further item starts
    and the running ones are still yielded. ``workers <= 1`` runs the items here, in order
    (a single item too, with ``threads`` threads). ``labels`` name the items in errors.
    Closing the generator (leaving the loop early), an error or Ctrl-C kills the workers.

    Raises:
        Whatever ``fn`` raised, once the items that finished with it are yielded (the
        items still running are lost), or WorkerDied.
    """
    todo = deque(enumerate(items))
    names = list(labels) if labels is not None else [f"item {i}" for i in range(len(todo))]
    if workers <= 1 or len(todo) <= 1:
        with torch_threads(threads if workers > 1 else 0):
            while todo and not stop():
                index, item = todo.popleft()
                yield index, fn(*item)
        return
    pool = spawn_pool(min(workers, len(todo)), threads)
    running: dict[Future, int] = {}
    broken = False  # a submit found the pool broken: start nothing more
    try:
        while True:
            broken = broken or _refill(pool, fn, todo, running, workers, stop, names)
            if not running:
                if broken:  # a worker died between items: nothing was lost, nothing can start
                    raise _item_died([], None)
                break
            yield from _collect(running, names)
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()


def _refill(
    pool: ProcessPoolExecutor,
    fn: Callable[..., Any],
    todo: deque[tuple[int, tuple[Any, ...]]],
    running: dict[Future, int],
    workers: int,
    stop: Callable[[], bool],
    names: list[str],
) -> bool:
    """Start items until ``workers`` run; True when the pool turned out to be broken.

    An item that cannot start goes back to ``todo``: it never ran, so it is not lost.
    """
    while todo and len(running) < workers and not stop():
        index, item = todo.popleft()
        try:
            running[pool.submit(_call_in_worker, fn, item, names[index])] = index
        except BrokenProcessPool:  # a worker died while the caller used a result
            todo.appendleft((index, item))
            return True
    return False


def _collect(
    running: dict[Future, int], names: list[str]
) -> Generator[tuple[int, Any], None, None]:
    """Yield the next finished items (index order); then raise what failed among them.

    A dead worker breaks the pool: every item still running fails with it (those are
    lost), while the items that finished before are yielded all the same.
    """
    done, _ = wait(running, return_when=FIRST_COMPLETED)
    error: BaseException | None = None
    lost: list[int] = []
    cause: BaseException | None = None
    for future in sorted(done, key=lambda f: running[f]):
        index = running.pop(future)
        try:
            result = future.result()
        except BrokenProcessPool as exc:
            lost.append(index)
            cause = exc
            continue
        except Exception as exc:
            error = error or exc
            continue
        yield index, result
    if lost:
        raise _item_died([names[i] for i in lost], cause)
    if error is not None:
        raise error


def _item_died(lost: list[str], cause: BaseException | None) -> WorkerDied:
    error = worker_died(lost, what="item(s)", rerun="the same command")
    error.__cause__ = cause
    return error


def _call_in_worker(fn: Callable[..., Any], item: tuple[Any, ...], label: str) -> Any:
    try:
        return fn(*item)
    except BaseException as exc:  # SystemExit, too: it would end the worker, not the item
        raise portable_error(exc, label) from None


def _drive(
    pool: ProcessPoolExecutor,
    run: Run,
    jobs: Sequence[StageJob],
    pending: deque[StageJob],
    workers: int,
    results: list[Any],
) -> None:
    """Keep ``workers`` stages running; store finished ones in job order.

    After a stage raises, nothing new starts; the stages before it that are running
    finish and are stored (a sequential run would have stored them), then its error is
    raised (the caller kills the stages after it).
    """
    order = {job.name: i for i, job in enumerate(jobs)}
    finished: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    running: dict[Future, StageJob] = {}
    failed: tuple[int, Exception] | None = None
    while True:
        while failed is None and pending and len(running) < workers:
            job = pending.popleft()  # submitted one by one: nothing waits queued in the pool
            try:
                running[pool.submit(_in_worker, job)] = job
            except BrokenProcessPool as exc:  # a worker died while we stored a stage
                raise _stages_died([job, *running.values()], order) from exc
        limit = len(jobs) if failed is None else failed[0]
        waiting = [future for future, job in running.items() if order[job.name] < limit]
        if not waiting:
            break
        done, _ = wait(waiting, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: order[running[f].name]):
            job = running.pop(future)
            try:
                finished[job.name] = _outcome(future, job, running, order)
            except WorkerDied:  # the pool is broken: no other stage can finish
                _store_ready(run, jobs, finished, results)
                raise
            except Exception as exc:
                if failed is None or order[job.name] < failed[0]:
                    failed = (order[job.name], exc)
        _store_ready(run, jobs, finished, results)
    if failed is not None:
        raise failed[1]


def _outcome(
    future: Future, job: StageJob, running: dict[Future, StageJob], order: dict[str, int]
) -> tuple[Any, list[dict[str, Any]]]:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise _stages_died([job, *running.values()], order) from exc


def _stages_died(lost: list[StageJob], order: dict[str, int]) -> WorkerDied:
    """The error for a broken pool, naming the running stages in job order."""
    return worker_died([job.name for job in sorted(lost, key=lambda j: order[j.name])])


def _store_ready(
    run: Run, jobs: Sequence[StageJob], finished: dict[str, Any], results: list[Any]
) -> None:
    """Store the finished stages that follow the stored ones in job order."""
    for job in jobs[len(results) :]:
        if job.name in finished:
            result, records = finished.pop(job.name)
            results.append(run.stage(job.name, _replay(run, result, records)))
        elif run.has_stage(job.name):  # finished before a resume: read back
            results.append(run.stage(job.name, _never))
        else:
            return


def _here(job: StageJob, log: Callable[..., None]) -> Callable[[], Any]:
    return lambda: job.fn(*job.args, log=log, **job.kwargs)


def _replay(run: Run, result: Any, records: list[dict[str, Any]]) -> Callable[[], Any]:
    def compute() -> Any:
        run.write_records(records)
        return result

    return compute


def _never() -> Any:
    raise AssertionError("a stored stage was asked to compute")


def _in_worker(job: StageJob) -> tuple[Any, list[dict[str, Any]]]:
    from metalab.core.runs import metric_record

    records: list[dict[str, Any]] = []

    def log(step: int | None = None, **metrics: Any) -> None:
        records.append(metric_record(step, **metrics))

    try:
        return job.fn(*job.args, log=log, **job.kwargs), records
    except BaseException as exc:  # SystemExit, too: it would end the worker, not the stage
        raise portable_error(exc, f"stage {job.name}") from None
