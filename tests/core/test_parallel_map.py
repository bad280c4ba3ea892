"""map_unordered: items in worker processes, yielded as they finish, workers stopped on exit."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.core.parallel import WorkerDied, map_unordered


def seeded_draw(seed: int, size: int) -> tuple[list[float], int]:
    """Module level: workers import it. Returns the draw and the worker's thread count."""
    draw = torch.randn(size, generator=torch.Generator().manual_seed(seed))
    return draw.tolist(), torch.get_num_threads()


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def refuses_seven(seed: int) -> int:
    if seed == 7:
        raise ConfigError(f"seed {seed} is not allowed")
    time.sleep(60.0)
    return seed


def dies_after_the_others(index: int, folder: str) -> int:
    """Items 0 and 2 leave a marker and return; item 1 waits for both markers, leaves a
    'dying' marker and kills its worker (a process dying without a result)."""
    marks = Path(folder)
    if index != 1:
        (marks / f"done{index}").touch()
        return index
    while not all((marks / f"done{i}").exists() for i in (0, 2)):
        time.sleep(0.05)
    time.sleep(1.0)  # the others' results are on their way to the parent
    (marks / "dying").touch()
    os._exit(3)


def fails_after_the_others(index: int, folder: str) -> int:
    """Items 0, 2 and 3 leave a marker and return; item 1 fails once they all have."""
    marks = Path(folder)
    if index != 1:
        (marks / f"done{index}").touch()
        return index
    while not all((marks / f"done{i}").exists() for i in (0, 2, 3)):
        time.sleep(0.05)
    time.sleep(1.0)  # the others' results are on their way to the parent
    (marks / "failing").touch()
    raise ConfigError("item one is refused")


def _busy_until(marker: Path) -> None:
    """The caller's work on a result: it ends after ``marker`` appears (and a second)."""
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)


def _no_children_within(seconds: float) -> bool:
    deadline = time.perf_counter() + seconds
    while multiprocessing.active_children() and time.perf_counter() < deadline:
        time.sleep(0.1)
    return not multiprocessing.active_children()


def test_workers_yield_every_item_once_with_the_result_it_has_here() -> None:
    items = [(seed, 5) for seed in (4, 1, 3)]
    here = dict(map_unordered(seeded_draw, items, workers=1, threads=1))
    there = dict(map_unordered(seeded_draw, items, workers=2, threads=1))
    assert sorted(there) == [0, 1, 2]
    assert {i: r[0] for i, r in there.items()} == {i: r[0] for i, r in here.items()}
    assert all(r[1] == 1 for r in there.values())  # the workers' thread count


def test_stop_starts_nothing_new_but_yields_what_is_running() -> None:
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2  # two items start, then the deadline passes

    got = list(map_unordered(nap, [(0.2,)] * 6, workers=2, threads=1, stop=stop))
    assert sorted(i for i, _ in got) == [0, 1]
    assert list(map_unordered(nap, [(0.0,)] * 3, workers=1, threads=1, stop=lambda: True)) == []


def test_leaving_early_kills_the_running_workers() -> None:
    started = time.perf_counter()
    results = map_unordered(nap, [(0.0,), (60.0,), (60.0,)], workers=2, threads=1)
    assert next(results) == (0, 0.0)
    results.close()
    assert _no_children_within(10.0)
    assert time.perf_counter() - started < 30


def test_an_error_in_a_worker_reaches_the_caller_and_stops_the_rest() -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="seed 7 is not allowed"):
        list(map_unordered(refuses_seven, [(8,), (7,), (9,)], workers=2, threads=1))
    assert _no_children_within(10.0)
    assert time.perf_counter() - started < 30


def test_a_dead_worker_loses_only_its_item_and_the_finished_ones_are_yielded(
    tmp_path: Path,
) -> None:
    """0 and 2 finish, then 1's worker dies while the caller works on the first result: the
    other finished item is still yielded, only 1 is named lost, 3 (never started) is not."""
    items = [(i, str(tmp_path)) for i in range(4)]
    got = []

    def consume() -> None:
        results = map_unordered(dies_after_the_others, items, workers=3, threads=1, labels="abcd")
        for index, _ in results:
            got.append(index)
            if len(got) == 1:  # the caller is busy until the worker has died
                _busy_until(tmp_path / "dying")

    with pytest.raises(WorkerDied, match=r"while item\(s\) \['b'\] ran"):
        consume()
    assert sorted(got) == [0, 2]
    assert _no_children_within(10.0)


def test_items_that_finish_with_a_failing_one_are_yielded_before_its_error(
    tmp_path: Path,
) -> None:
    """While the caller works on the first result, the two other good items finish and then
    item 1 fails: both are yielded before its error is raised."""
    items = [(i, str(tmp_path)) for i in range(4)]
    got = []

    def consume() -> None:
        for index, _ in map_unordered(fails_after_the_others, items, workers=4, threads=1):
            got.append(index)
            if len(got) == 1:
                _busy_until(tmp_path / "failing")

    with pytest.raises(ConfigError, match="item one is refused"):
        consume()
    assert sorted(got) == [0, 2, 3]
