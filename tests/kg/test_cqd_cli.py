"""``metalab kg answer`` through click's CliRunner: answers, explanations, JSON, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from metalab.cli.main import cli
from metalab.kg import save_link_predictor


@pytest.fixture(scope="module")
def model_folder(tiny_predictor, tmp_path_factory) -> Path:
    return save_link_predictor(tiny_predictor, tmp_path_factory.mktemp("cqd") / "nations")


def _run(*args: str):
    return CliRunner().invoke(cli, ["kg", *args], catch_exceptions=False)


def test_answer_with_explanations(model_folder: Path) -> None:
    query = "treaties(usa, ?y) & embassy(?y, ?x)"
    result = _run("answer", "--model", str(model_folder), "--explain", "--top", "3",
                  "--device", "cpu", query)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "structure 2p; solver beam (k=16" in lines[1]
    assert [line.split()[0] for line in lines if line[:4].strip().endswith(".")] == [
        "1.",
        "2.",
        "3.",
    ]
    assert "?y = " in result.output and "treaties(usa, " in result.output
    assert ("known" in result.output) or ("predicted" in result.output)


@pytest.mark.parametrize("solver", ["beam", "exact"])
def test_answer_json_matches_library(model_folder: Path, tiny_predictor, solver: str) -> None:
    from metalab.kg import SolverConfig, answer_query

    query = "?x : treaties(usa, ?x) & !embassy(china, ?x)"
    result = _run("answer", "--model", str(model_folder), "--solver", solver, "--k", "4",
                  "--top", "5", "--json", "--explain", query)  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["structure"] == "2in" and data["solver"] == solver
    assert [row["rank"] for row in data["answers"]] == [1, 2, 3, 4, 5]
    want = answer_query(tiny_predictor, query, SolverConfig(solver, k=4), top=5)
    names = [tiny_predictor.entities.name(a) for a in want.answers]
    assert [row["entity"] for row in data["answers"]] == names
    for row in data["answers"]:
        ex = row["explanation"]
        assert ex["answer"] == row["entity"] and ex["score"] == pytest.approx(
            row["score"], abs=1e-5
        )
        assert {a["edge"] for a in ex["atoms"]} <= {"known", "predicted"}
        assert [a["negated"] for a in ex["atoms"]] == [False, True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["treaties(usa, ?y) & embasy(?y, ?x)"], "column 21: unknown relation 'embasy'; did you"),
        (["treaties(usa, ?x"], "expected ')'"),
        (["--tnorm", "godl", "treaties(usa, ?x)"], "unknown t-norm 'godl'"),
        (["--top", "0", "treaties(usa, ?x)"], "top must be"),
        (["--solver", "co", "--explain", "treaties(usa, ?x)"], "gives no explanations"),
        (["--solver", "exact", "treaties(usa, ?x) & embassy(?y, ?x)"], "not anchored"),
        (["--dataset", "umls", "treaties(usa, ?x)"], "do not match graph 'umls' (other entities"),
        (["treaties(usa, china)"], "column 1: query has no variable"),
        (["treaties(usa, ?x) & embassy(?x, ?y) & treaties(?y, ?x)"], "not a tree: its atoms form"),
    ],
)
def test_answer_errors_are_one_line(model_folder: Path, args: list[str], message: str) -> None:
    result = _run("answer", "--model", str(model_folder), *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in lines[0]


def test_evaluate_prints_per_structure_table(model_folder: Path, nations, tmp_path: Path) -> None:
    from metalab.kg import SolverConfig, evaluate_queries, load_link_predictor, load_query_set
    from metalab.kg.workflows import generate_query_set

    folder = tmp_path / "q"
    generate_query_set(
        nations, folder, splits=["test"], per_structure=4, structures=["1p", "2p", "2in"], seed=0
    )
    result = _run("evaluate", "--model", str(model_folder), "--queries", str(folder),
                  "--solver", "beam,exact", "--k", "2", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[2:] == ["1p", "2p", "2in", "avg"]
    assert [r.split()[:2] for r in rows[:5:4]] == [["beam", "mrr"], ["exact", "mrr"]]
    table = evaluate_queries(
        load_link_predictor(model_folder), load_query_set(folder), SolverConfig("exact")
    )
    cells = [float(x) for x in rows[4].split()[2:5]]
    assert cells == pytest.approx([table[s]["mrr"] for s in ("1p", "2p", "2in")], abs=1e-3)
    bad = _run("evaluate", "--model", str(model_folder), "--queries", str(folder), "--split", "x")
    assert bad.exit_code == 2 and "no split 'x'" in bad.output
    base = ["evaluate", "--model", str(model_folder), "--queries", str(folder)]
    bad = _run(*base, "--structures", "2p,9z")
    assert (
        bad.exit_code == 2 and "structure(s) 9z not in split 'test' (has 1p, 2in, 2p)" in bad.output
    )
    bad = _run(*base, "--solver", " ,")
    assert bad.exit_code == 2 and "names no solver" in bad.output


def test_answer_with_co(model_folder: Path) -> None:
    result = _run("answer", "--model", str(model_folder), "--solver", "co", "--top", "2", "--json",
                  "treaties(usa, ?y) & embassy(?y, ?x)")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["solver"] == "co" and len(data["answers"]) == 2
    assert data["answers"][0]["score"] >= data["answers"][1]["score"]


def test_a_negated_group_is_explained_as_one_unit(model_folder: Path) -> None:
    """``!(A & B)`` is worth 1 − t(A, B): shown and exported as one group, so the score rebuilds."""
    query = "!(treaties(usa, ?y) & embassy(?y, ?x)) & intergovorgs(china, ?x)"
    base = ["answer", "--model", str(model_folder), "--explain", "--top", "3", "--device", "cpu"]
    data = json.loads(_run(*base, "--json", query).output)
    for row in data["answers"]:
        group, positive = row["explanation"]["atoms"]
        assert group["negated"] is True and [a["negated"] for a in group["atoms"]] == [False] * 2
        inner = group["atoms"][0]["truth"] * group["atoms"][1]["truth"]  # product t-norm
        assert group["value"] == pytest.approx(inner, abs=1e-6)
        assert (1 - group["value"]) * positive["truth"] == pytest.approx(row["score"], abs=1e-5)
    text = _run(*base, query).output
    assert "NOT (" in text and "= 1 − " in text and "NOT treaties" not in text
