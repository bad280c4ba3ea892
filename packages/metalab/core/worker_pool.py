"""The worker processes behind :mod:`metalab.core.parallel`: start, size, stop, errors.

Workers are spawned (forking a process that has started torch's thread pools can hang),
run with a fixed torch thread count and exit when their parent dies. Their errors are
made safe to send back (:func:`portable_error`); a worker that dies without a result
becomes :class:`WorkerDied`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import threading
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from metalab.core.errors import MetalabError

if TYPE_CHECKING:  # torch is imported when used: the CLI imports this module
    import torch

__all__ = [
    "WorkerDied",
    "default_workers",
    "enable_auto_workers",
    "portable_error",
    "spawn_pool",
    "stop_pool",
    "torch_threads",
    "worker_died",
]

_AUTO = {"enabled": False}


class WorkerDied(RuntimeError):
    """A worker process ended without a result (killed, out of memory, crashed)."""


def enable_auto_workers(enabled: bool = True) -> None:
    """Let ``workers=0`` use one process per core (the ``metalab`` command turns it on)."""
    _AUTO["enabled"] = enabled


def default_workers(threads: int, device: torch.device) -> int:
    """Processes for ``workers=0``: one per ``threads`` cores on a CPU, else one.

    One when auto workers are off (see the module docstring), on a GPU, and when
    ``threads`` is 0 (torch's own thread count already fills the cores).
    """
    if not _AUTO["enabled"] or device.type != "cpu" or threads < 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // threads)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` intra-op threads (``0``: leave torch's setting alone)."""
    import torch

    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_died(
    names: Sequence[str], *, what: str = "stage(s)", rerun: str = "--resume"
) -> WorkerDied:
    """The error for a broken pool: every running stage (or item) dies with the worker."""
    when, lost = (f"while {what} {list(names)} ran", "these are lost, ") if names else ("", "")
    return WorkerDied(
        f"a worker process ended without a result{' ' if when else ''}{when}: killed (the "
        "out-of-memory killer, for one), or it failed to start (a script that asks for "
        f"workers must guard its body with if __name__ == '__main__':); {lost}rerun with {rerun}"
    )


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kill the workers now: their stages would be thrown away, and they hold the cores."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def spawn_pool(workers: int, threads: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each."""
    import torch.multiprocessing

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=torch.multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(threads,),
    )


def _start_worker(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    """Exit when the parent dies (killed by SIGTERM, its workers would run on forever)."""
    process = multiprocessing.parent_process()
    if process is not None:
        process.join()
    os._exit(1)


def portable_error(exc: BaseException, label: str) -> Exception:
    """``exc`` if it survives the trip to the parent, else an error that does.

    An exception is rebuilt from its ``args``; one whose ``__init__`` takes other
    arguments would break the whole pool. A :class:`MetalabError` stays one (its message
    is what the user sees); anything else keeps its traceback in the message.
    """
    if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: a stage failure
        return RuntimeError(f"{label} stopped its worker: {type(exc).__name__} {exc}")
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        if isinstance(exc, MetalabError):
            return MetalabError(str(exc))
        trace = "".join(traceback.format_exception(exc))
        return RuntimeError(f"{label} failed in a worker process:\n{trace}")
