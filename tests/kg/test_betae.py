"""The restricted unpickler and BetaE/Query2Box folders."""

from __future__ import annotations

import os
import pickle
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from metalab.core.errors import MetalabError
from metalab.kg import (
    UnsafePickleError,
    generate_queries,
    load_query_set,
    query_set_stats,
    safe_load_pickle,
    to_betae,
)
from metalab.kg.betae import RestrictedUnpickler


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_builtin_containers_load_with_every_protocol(tmp_path: Path, protocol: int) -> None:
    data = {
        ("e", ("r",)): {(3, (1,)), (4, (2,))},
        "x": [1.5, frozenset({2}), True, None, "s"],
        "d": defaultdict(set, {1: {2}}),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert safe_load_pickle(path) == data


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_execute_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "test-queries.pkl"
    path.write_bytes(pickle.dumps({("e", ("r",)): _RunsCode(marker)}))
    # plain pickle would run the command (checked on a copy, to prove the file is hostile)
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(
        UnsafePickleError,
        match=r"test-queries\.pkl: refusing to load global posix\.system"
        r"|refusing to load global os\.system",
    ):
        safe_load_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [b"not a pickle", b"\x80\x04\x95", b""])
def test_corrupt_pickles_are_one_line_errors(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="corrupt or unsupported") as info:
        safe_load_pickle(path)
    assert "\n" not in str(info.value)


def test_bytes_and_other_callables_are_not_resolvable() -> None:
    import io

    for module, name in [
        ("builtins", "bytes"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("copyreg", "_reconstructor"),
        ("numpy", "ndarray"),
    ]:
        with pytest.raises(UnsafePickleError):
            RestrictedUnpickler(io.BytesIO(b"")).find_class(module, name)


def write_betae_folder(folder: Path, graph, queries, *, with_graph: bool = True) -> Path:
    """Write ``queries`` in the KGReasoning layout (what BetaE's generator pickles)."""
    folder.mkdir(parents=True, exist_ok=True)
    structures, easy, hard = defaultdict(set), defaultdict(set), defaultdict(set)
    for q in queries:
        key = to_betae(q.query)
        structures[to_betae(__import__("metalab.kg").kg.STRUCTURES[q.structure])].add(key)
        easy[key], hard[key] = set(q.easy), set(q.hard)
    for name, obj in (
        ("test-queries", structures),
        ("test-easy-answers", easy),
        ("test-hard-answers", hard),
        ("id2ent", dict(enumerate(graph.entities.names))),
        ("id2rel", dict(enumerate(graph.query_relations.names))),
    ):
        (folder / f"{name}.pkl").write_bytes(pickle.dumps(obj, protocol=4))
    (folder / "stats.txt").write_text(
        f"numentity: {graph.num_entities}\nnumrelations: {2 * graph.num_relations}"
    )
    if with_graph:
        for split in ("train", "valid", "test"):
            rows = graph.split(split)
            rows = torch.stack([rows[:, 0], 2 * rows[:, 1], rows[:, 2]], 1)  # forward ids only
            (folder / f"{split}.txt").write_text(
                "".join("\t".join(map(str, r)) + "\n" for r in rows.tolist())
            )
    return folder


def test_betae_folder_reads_back_our_queries_and_missing_links(hand_graph, tmp_path: Path) -> None:
    queries, _ = generate_queries(
        hand_graph, per_structure=5, generator=torch.Generator().manual_seed(0), max_attempts=400
    )
    folder = write_betae_folder(tmp_path / "betae", hand_graph, queries)
    loaded = load_query_set(folder)
    assert loaded.entities.names == hand_graph.entities.names
    assert sorted(loaded.splits["test"], key=repr) == sorted(queries, key=repr)
    ours = query_set_stats(
        type(loaded)(hand_graph.entities, hand_graph.query_relations, {"test": queries})
    )
    assert query_set_stats(loaded) == ours
    no_graph = load_query_set(
        write_betae_folder(tmp_path / "b2", hand_graph, queries, with_graph=False)
    )
    share = query_set_stats(no_graph)["test"]["all"]["single_link_share"]
    assert share != share  # NaN: unknown without the graph files


def test_hostile_betae_folder_is_refused(hand_graph, tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "test-queries.pkl").write_bytes(pickle.dumps(_RunsCode(tmp_path / "x")))
    with pytest.raises(MetalabError, match="refusing to load global"):
        load_query_set(folder)
    assert not (tmp_path / "x").exists()
