"""``metalab kg`` commands through click's CliRunner: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from metalab.cli.main import cli
from tests.kg.test_betae import _RunsCode


def _run(*args: str):
    return CliRunner().invoke(cli, ["kg", *args], catch_exceptions=False)


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert pattern in lines[0], lines[0]


def test_generate_and_stats_on_a_tsv_graph(hand_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "queries"
    result = _run(
        "queries",
        "generate",
        "--dataset",
        str(hand_folder),
        "--per-structure",
        "3",
        "--out",
        str(out),
        "--seed",
        "1",
        "--max-attempts",
        "200",
    )
    assert result.exit_code == 0, result.output
    assert "[valid]" in result.output and "[test]" in result.output and "1p" in result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "metalab.kg.queries/1" and meta["seed"] == 1
    assert sum(meta["counts"]["test"].values()) == len(
        (out / "test.jsonl").read_text().splitlines()
    )
    line = json.loads((out / "test.jsonl").read_text().splitlines()[0])
    assert set(line) == {"structure", "query", "easy", "hard", "hard_missing_links"}
    assert (out / "README.md").read_text().startswith("# metalab complex-query set")
    stats = _run("queries", "stats", str(out), "--json")
    table = json.loads(stats.output)
    assert table["test"]["1p"]["queries"] == meta["counts"]["test"]["1p"]
    again = _run(
        "queries",
        "generate",
        "--dataset",
        str(hand_folder),
        "--per-structure",
        "3",
        "--out",
        str(tmp_path / "q2"),
        "--seed",
        "1",
        "--max-attempts",
        "200",
    )
    assert again.exit_code == 0
    assert (tmp_path / "q2" / "test.jsonl").read_text() == (out / "test.jsonl").read_text()


def test_bad_inputs_are_one_line_errors(hand_folder: Path, tmp_path: Path) -> None:
    _one_line_error(
        _run("queries", "generate", "--dataset", "umsl", "--out", str(tmp_path / "x")),
        "did you mean umls",
    )
    (hand_folder / "valid.txt").write_text("a\tp\n")
    _one_line_error(
        _run("queries", "generate", "--dataset", str(hand_folder), "--out", str(tmp_path / "x")),
        "valid.txt:1: expected 3 tab-separated fields",
    )
    _one_line_error(_run("queries", "stats", str(tmp_path)), "neither a metalab query set")
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "test-queries.pkl").write_bytes(pickle.dumps(_RunsCode(tmp_path / "pwned")))
    _one_line_error(_run("queries", "stats", str(hostile)), "refusing to load global")
    assert not (tmp_path / "pwned").exists()
    _one_line_error(_run("evaluate-links", str(tmp_path)), "not a saved link predictor")
    _one_line_error(
        _run("train", "--dataset", "nations", "--model", "complx", "--epochs", "1"),
        "did you mean complex",
    )
    _one_line_error(_run("train", "--dataset", "nations", "--device", "cuda:7"), "cuda")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--splits", ""], "no split to generate; name at least one of train, valid, test"),
        (["--splits", " , "], "no split to generate"),
        (["--structures", ""], "no query structure to generate"),
        (["--max-attempts", "0"], "--max-attempts must be >= 1, got 0"),
    ],
)
def test_generate_with_nothing_to_do_is_refused(
    hand_folder: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "q"
    _one_line_error(
        _run("queries", "generate", "--dataset", str(hand_folder), "--out", str(out), *args),
        message,
    )
    assert not out.exists()


def test_broken_query_line_names_file_and_line(hand_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    _run(
        "queries",
        "generate",
        "--dataset",
        str(hand_folder),
        "--per-structure",
        "2",
        "--out",
        str(out),
        "--max-attempts",
        "100",
    )
    lines = (out / "test.jsonl").read_text().splitlines()
    lines[1] = json.dumps(
        {"structure": "1p", "query": ["p", "nope", ["e", "a"]], "easy": [], "hard": []}
    )
    (out / "test.jsonl").write_text("\n".join(lines) + "\n")
    _one_line_error(_run("queries", "stats", str(out)), "test.jsonl:2: unknown relation 'nope'")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_train_then_evaluate_links(tmp_path: Path) -> None:
    model = tmp_path / "model"
    result = _run(
        "train",
        "--dataset",
        "nations",
        "--epochs",
        "2",
        "--dim",
        "8",
        "--threads",
        "1",
        "--out",
        str(model),
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "trained complex on nations" in result.output and "test: MRR" in result.output
    assert {p.name for p in model.iterdir()} == {"weights.pt", "metadata.json"}
    evaluated = _run("evaluate-links", str(model), "--json", "--device", "cpu")
    metrics = json.loads(evaluated.output)
    mrr_line = next(line for line in result.output.splitlines() if line.startswith("test: MRR"))
    assert f"MRR {metrics['mrr']:.4f}" in mrr_line
    assert 0 < metrics["mrr"] <= 1 and metrics["triples"] == 201


def test_regenerating_into_a_query_set_folder_keeps_but_ignores_earlier_splits(
    hand_folder: Path, tmp_path: Path
) -> None:
    """A second `generate --out SAME` keeps the first run's valid.jsonl but never reads it."""
    out = tmp_path / "q"
    args = ["queries", "generate", "--dataset", str(hand_folder), "--per-structure", "2",
            "--max-attempts", "100", "--out", str(out)]  # fmt: skip
    assert _run(*args, "--splits", "valid,test").exit_code == 0
    assert (out / "valid.jsonl").is_file()
    earlier_valid = (out / "valid.jsonl").read_text()
    assert _run(*args, "--splits", "test").exit_code == 0
    assert (out / "valid.jsonl").read_text() == earlier_valid  # not deleted
    assert set(json.loads(_run("queries", "stats", str(out), "--json").output)) == {"test"}
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine\n")
    _one_line_error(_run(*args[:-1], str(other)), "folder is not empty and holds no metalab")
    assert (other / "keep.txt").read_text() == "mine\n"
