"""A user's own triples folder: encodings, header lines, ambiguous files and empty splits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from metalab.cli.main import cli
from metalab.core.errors import ConfigError
from metalab.kg import (
    GraphFileError,
    evaluate_link_prediction,
    generate_queries,
    load_graph,
    read_triples_file,
)
from tests.kg.conftest import HAND_TRAIN, write_graph_folder


def _run(*args: str):
    return CliRunner().invoke(cli, ["kg", *args], catch_exceptions=False)


def _one_line_error(result, pattern: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    assert pattern in lines[0], lines[0]
    return lines[0]


def test_a_utf8_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    train = folder / "train.txt"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    graph = load_graph(folder)
    assert graph.triple_names(graph.train) == HAND_TRAIN
    assert not any(name.startswith("\ufeff") for name in graph.entities.names)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("\nhead\trelation\ttail\n", 2),
        ("Subject\tPredicate\tObject\n", 1),
        ("s\trel\to\n", 1),  # no name recurs in the hand graph (h r t would: see below)
        ("\ufeffHEAD\tREL\tTAIL\r\n", 1),  # a spreadsheet's export: BOM, CRLF, capitals
    ],
)
def test_a_header_line_is_refused_with_file_and_line(
    tmp_path: Path, content: str, line: int
) -> None:
    folder = write_graph_folder(tmp_path / "g")
    test = folder / "test.txt"
    test.write_text(content + test.read_text(), encoding="utf-8")
    with pytest.raises(GraphFileError, match=rf"test\.txt:{line}: looks like a header line") as e:
        load_graph(folder)
    assert "no header (columns: head, relation, tail), delete it" in str(e.value)


def test_header_words_are_names_after_the_first_triple_or_when_repeated(tmp_path: Path) -> None:
    file = tmp_path / "train.txt"
    file.write_text("a\tp\tb\nhead\trelation\ttail\n")
    assert read_triples_file(file)[1] == ("head", "relation", "tail")
    file.write_text("s\tp\ts\n")  # a self-loop is a triple: a header names three columns
    assert read_triples_file(file) == [("s", "p", "s")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"a\tp\tb\nc\tq\t\xe9t\xe9\n",  # Latin-1 "été"
            r"train\.txt:2: not UTF-8 \(byte 0xe9 at offset 10\); save the file as UTF-8$",
        ),
        ("a\tp\tb\n".encode("utf-16"), r"train\.txt: file is UTF-16; save it as UTF-8$"),
    ],
)
def test_a_file_not_in_utf8_says_to_save_it_as_utf8(
    tmp_path: Path, data: bytes, message: str
) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "train.txt").write_bytes(data)
    with pytest.raises(GraphFileError, match=message):
        load_graph(folder)


def test_both_txt_and_tsv_for_one_split_is_ambiguous(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "valid.tsv").write_text((folder / "valid.txt").read_text())
    with pytest.raises(GraphFileError, match=r"both valid\.txt and valid\.tsv exist; keep one"):
        load_graph(folder)


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda f: (f / "train.txt").write_text("head\trelation\ttail\na\tp\tb\n"), "train.txt:1:"),
        (lambda f: (f / "train.tsv").write_text("a\tp\tb\n"), "both train.txt and train.tsv"),
        (lambda f: (f / "test.txt").write_bytes(b"a\tp\t\xff\n"), "save the file as UTF-8"),
    ],
)
def test_bad_folders_are_one_line_cli_errors(tmp_path: Path, edit, pattern: str) -> None:
    folder = write_graph_folder(tmp_path / "g")
    edit(folder)
    args = ["--epochs", "1", "--dim", "4", "--out", str(tmp_path / "m"), "--device", "cpu"]
    _one_line_error(_run("train", "--dataset", str(folder), *args), pattern)
    assert not (tmp_path / "m").exists()  # refused before any training


def test_link_evaluation_of_an_empty_split_is_a_config_error(nations, tiny_predictor) -> None:
    empty = dataclasses.replace(nations, test=torch.empty(0, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"graph 'nations' \(pykeen:nations\) has no test tri"):
        evaluate_link_prediction(tiny_predictor, empty, split="test")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_train_skips_link_evaluation_without_test_triples(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "test.txt").write_text("")
    (folder / "valid.txt").write_text("\n")
    model = tmp_path / "m"
    result = _run("train", "--dataset", str(folder), "--epochs", "1", "--dim", "4",
                  "--threads", "1", "--out", str(model), "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("trained complex on g (12 entities, 3 relations)")  # g: valid only
    assert lines[1:] == ["no test triples: link evaluation skipped", f"saved to {model}"]
    assert {p.name for p in model.iterdir()} == {"weights.pt", "metadata.json"}
    for split in ("test", "valid"):
        _one_line_error(
            _run("evaluate-links", str(model), "--split", split, "--device", "cpu"),
            f"graph 'g' ({folder.resolve()}) has no {split} triples; nothing to evaluate",
        )
    (folder / "test.txt").write_text("a\tp\tc\n")  # evaluation works once the split has triples
    metrics = json.loads(_run("evaluate-links", str(model), "--json", "--device", "cpu").output)
    assert metrics["triples"] == 1


def test_a_relative_folder_is_recorded_by_its_absolute_path(tmp_path: Path, monkeypatch) -> None:
    folder = write_graph_folder(tmp_path / "mygraph")
    monkeypatch.chdir(folder)
    graph = load_graph(".")  # a saved model must find its graph from any working directory
    assert graph.name == "mygraph" and graph.source == str(folder.resolve())


def test_generating_queries_for_a_split_without_new_edges_is_refused_up_front(
    tmp_path: Path,
) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "valid.txt").write_text("")
    (folder / "test.txt").write_text("\n")
    out = tmp_path / "q"
    where = f"graph 'g' ({folder.resolve()})"
    _one_line_error(
        _run("queries", "generate", "--dataset", str(folder), "--out", str(out)),
        f"{where} has no valid or test triples; nothing to generate",
    )
    _one_line_error(
        _run("queries", "generate", "--dataset", str(folder), "--out", str(out), "--splits",
             "test"),
        f"{where} has no test triples; nothing to generate (test queries' hard answers come "
        "from test edges not in train or valid)",
    )  # fmt: skip
    assert not out.exists()  # nothing half-written for `kg evaluate` to trip over
    result = _run("queries", "generate", "--dataset", str(folder), "--out", str(out),
                  "--splits", "train", "--per-structure", "1", "--structures", "1p")  # fmt: skip
    assert result.exit_code == 0, result.output  # train queries need train edges only


def test_a_split_that_only_repeats_earlier_triples_has_no_hard_answers(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "test.txt").write_text("a\tp\tb\nd\tp\tg\n")  # one train, one valid triple
    graph = load_graph(folder)
    with pytest.raises(ConfigError, match=r"every test triple is also in train or valid; no"):
        generate_queries(graph, split="test", per_structure=1, generator=torch.Generator())
    queries, _ = generate_queries(
        graph, split="valid", per_structure=1, structures=["1p"], generator=torch.Generator()
    )
    assert len(queries) == 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_answer_and_link_evaluation_check_the_graph_against_the_model(tmp_path: Path) -> None:
    """Other relation names would mislabel known/predicted edges; a moved folder is named."""
    folder = write_graph_folder(tmp_path / "g")
    model = tmp_path / "m"
    result = _run("train", "--dataset", str(folder), "--epochs", "1", "--dim", "4",
                  "--threads", "1", "--out", str(model), "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    renamed = write_graph_folder(tmp_path / "renamed")
    for split in renamed.iterdir():
        split.write_text(split.read_text().replace("\tq\t", "\tq2\t"))
    answer = ["answer", "--model", str(model), "--explain", "--device", "cpu", "p(a, ?x)"]
    for args in (answer, ["evaluate-links", str(model), "--device", "cpu"]):
        _one_line_error(_run(*args, "--dataset", str(renamed)), "(other relations than model")
    moved = folder.rename(tmp_path / "moved")
    for args in (answer, ["evaluate-links", str(model), "--device", "cpu"]):
        _one_line_error(_run(*args), f"graph folder {folder.resolve()} that model")
        assert _run(*args, "--dataset", str(moved)).exit_code == 0
