from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from metalab.core.errors import MetalabError, UnknownNameError
from metalab.kg import (
    GraphFileError,
    Vocabulary,
    inverse_relation,
    load_graph,
    read_triples_file,
    with_reciprocals,
)
from tests.kg.conftest import HAND_TEST, HAND_TRAIN, HAND_VALID, write_graph_folder

NAMES = st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=30)


@given(NAMES)
def test_vocabulary_round_trips_through_json_and_ids(names: list[str]) -> None:
    vocab = Vocabulary(tuple(names))
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab
    assert [again.name(i) for i in vocab.ids(names)] == names


def test_vocabulary_rejects_duplicates_and_suggests_close_names() -> None:
    with pytest.raises(MetalabError, match="duplicate"):
        Vocabulary(("x", "x"))
    vocab = Vocabulary(("alpha", "beta"), "entity")
    with pytest.raises(UnknownNameError, match="did you mean alpha"):
        vocab.id("alpah")


def test_bundled_datasets_load_offline_with_their_sizes() -> None:
    sizes = {
        "nations": (14, 55, 1592, 199, 201),
        "umls": (135, 46, 5216, 652, 661),
        "kinships": (104, 25, 8544, 1068, 1074),
    }
    for name, (ents, rels, train, valid, test) in sizes.items():
        graph = load_graph(name.upper() if name == "umls" else name)
        assert (graph.num_entities, graph.num_relations) == (ents, rels)
        assert (len(graph.train), len(graph.valid), len(graph.test)) == (train, valid, test)
        # the vocabularies give back the triples' names and ids
        named = graph.triple_names(graph.train[:5])
        ids = [
            (graph.entities.id(h), graph.relations.id(r), graph.entities.id(t)) for h, r, t in named
        ]
        assert torch.equal(torch.tensor(ids), graph.train[:5])


def test_tsv_folder_loads_with_sorted_vocabularies(hand_folder: Path) -> None:
    graph = load_graph(hand_folder)
    assert graph.entities.names == tuple("abcdefghijklm")
    assert graph.relations.names == ("p", "q", "r")
    assert graph.triple_names(graph.train) == HAND_TRAIN
    assert graph.triple_names(graph.valid) == HAND_VALID
    assert graph.triple_names(graph.test) == HAND_TEST
    assert graph.query_relations.names == ("p", "p^-1", "q", "q^-1", "r", "r^-1")
    # nested graphs: G_valid = train + valid, G_test = everything
    assert len(graph.graph("valid", reciprocal=False)) == len(HAND_TRAIN) + len(HAND_VALID)
    assert len(graph.graph("test")) == 2 * (len(HAND_TRAIN) + len(HAND_VALID) + len(HAND_TEST))


def test_tsv_suffix_is_accepted(tmp_path: Path) -> None:
    graph = load_graph(write_graph_folder(tmp_path / "g", suffix=".tsv"))
    assert graph.num_entities == 13


def test_reciprocals_interleave_forward_and_inverse_ids() -> None:
    triples = torch.tensor([[0, 0, 1], [2, 3, 4]])
    out = with_reciprocals(triples)
    assert out.tolist() == [[0, 0, 1], [2, 6, 4], [1, 1, 0], [4, 7, 2]]
    assert inverse_relation(6) == 7 and inverse_relation(7) == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a\tp\tb\nc\tq\n", r"train\.txt:2: expected 3 tab-separated fields .* found 2"),
        ("a\tp\tb\n\na\tp\tb\tx\n", r"train\.txt:3: expected 3 tab-separated fields .* found 4"),
        ("a\t\tb\n", r"train\.txt:1: empty relation name"),
        ("a p b\n", r"train\.txt:1: expected 3 tab-separated fields"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    folder = write_graph_folder(tmp_path / "bad")
    (folder / "train.txt").write_text(content)
    with pytest.raises(GraphFileError, match=message) as info:
        load_graph(folder)
    assert "\n" not in str(info.value)


def test_missing_split_file_and_unknown_dataset(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "valid.txt").unlink()
    with pytest.raises(GraphFileError, match=r"no valid\.txt or valid\.tsv found"):
        load_graph(folder)
    tsv = write_graph_folder(tmp_path / "tsv", suffix=".tsv")
    (tsv / "valid.tsv").unlink()  # the other files are .tsv: name both accepted names
    with pytest.raises(GraphFileError, match=r"no valid\.txt or valid\.tsv found"):
        load_graph(tsv)
    (tsv / "valid.tsv").mkdir()
    with pytest.raises(GraphFileError, match=r"valid\.tsv: is a directory"):
        load_graph(tsv)
    with pytest.raises(GraphFileError, match=r"is a directory, not a triples file"):
        read_triples_file(tsv / "valid.tsv")
    with pytest.raises(UnknownNameError, match="did you mean umls"):
        load_graph("umsl")
    with pytest.raises(GraphFileError, match="not found"):
        read_triples_file(tmp_path / "nope.txt")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x9f\x00")
    with pytest.raises(GraphFileError, match=r"binary\.txt:1: not UTF-8 .*save the file as UTF-8"):
        read_triples_file(tmp_path / "binary.txt")
    with pytest.raises(GraphFileError, match="is a directory"):
        read_triples_file(tmp_path)


def test_a_relation_named_like_an_inverse_is_refused_at_load(hand_folder: Path) -> None:
    train = hand_folder / "train.txt"
    head, _, tail = train.read_text().splitlines()[0].split("\t")
    train.write_text(train.read_text() + f"{head}\tlikes^-1\t{tail}\n")
    with pytest.raises(MetalabError, match=r"relation 'likes\^-1' ends with '\^-1'"):
        load_graph(hand_folder)
