"""Bad input anywhere in the CLI: one ``Error:`` line, exit 2, nothing written (new-user probes)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from metalab.cli import cli
from metalab.cli.main import _out_of_memory


def _run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ntk", "spectrum", "--width", "1.5"], "'1.5' is not a valid integer"),
        (["nas", "search", "--alpha-lr", "nan"], "'nan' is not a finite number"),
        (["net2net", "grow", "x.pt", "--noise", "inf", "--out", "y.pt"], "not a finite number"),
        (["kg", "answer"], "Missing argument 'QUERY'"),
        (["nosuchgroup"], "No such command 'nosuchgroup'"),
        (["lopt", "estimate", "--theta", "nan,1"], "--theta must be finite numbers"),
        (["lopt", "estimate", "-K", "200"], "longer than an episode of toy-regression (100 steps)"),
        (["lopt", "estimate", "--show", "-1"], "--show must be >= 0"),
        (["lopt", "meta-train", "--print-every", "0"], "'--print-every': 0 is not in the range"),
        (["nas", "bench", "show", "nb201-4op", "--top", "-1"], "--top must be >= 0, got -1"),
        (["nas", "bench", "build", "--workers", "-1"], "--workers must be >= 0"),
        (["lopt", "meta-train", "--steps", "-2"], "--steps must be >= 1, got -2"),
        (["lopt", "evaluate", "default", "--horizon-factor", "0"], "--horizon-factor must be >= 1"),
        (["kg", "answer", "--model", "m", "--top", "0", "r(a, ?x)"], "--top must be >= 1, got 0"),
        (
            ["kg", "answer", "--model", "no/such/model", "r(a, ?x)"],
            "'no/such/model' does not exist",
        ),
    ],
)
def test_usage_and_value_errors_are_one_line(args, message):
    line = _one_error_line(_run(*args))
    assert message in line, line


@pytest.mark.parametrize("group", [[], ["repro"], ["nas", "bench"]])
def test_a_group_without_a_subcommand_prints_its_help_not_an_error(group):
    result = _run(*group)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ") and "Commands:" in result.stdout
    assert "Error" not in result.output


@pytest.mark.parametrize("flag", ["--per-structure", "--max-answers", "--max-attempts"])
def test_an_impossible_query_count_names_its_flag_and_writes_nothing(tmp_path, flag):
    out = tmp_path / "queries"
    args = ["kg", "queries", "generate", "--dataset", "nations", "--out", str(out)]
    line = _one_error_line(_run(*args, flag, "0"))
    assert line == f"Error: {flag} must be >= 1, got 0"
    assert not out.exists()


def test_usage_errors_name_the_help_command():
    line = _one_error_line(_run("ntk", "spectrum", "--points", "x"))
    assert line.endswith(" ntk spectrum --help')"), line  # CliRunner names the root 'cli'


def test_an_existing_file_as_runs_folder_is_refused_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    line = _one_error_line(_run("lopt", "meta-train", "--steps", "1", "--out", str(afile)))
    assert "'--out'" in line and "is a file" in line
    line = _one_error_line(
        _run("lopt", "meta-train", "--steps", "1", env={"METALAB_RUNS": str(afile)})
    )
    assert line == f"Error: $METALAB_RUNS {str(afile)!r} is a file, not a folder"
    line = _one_error_line(_run("kg", "train", "--dataset", "nations", "--out", str(afile)))
    assert "is a file" in line
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--max-minutes", "0"], "--max-minutes must be > 0"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_impossible_bench_builds_write_nothing(tmp_path, args, message):
    out = tmp_path / "table.json"
    line = _one_error_line(
        _run("nas", "bench", "build", "--space", "skip-conv3", "--out", str(out), *args)
    )
    assert message in line
    assert not out.exists()


def test_malformed_table_entries_are_named(tmp_path):
    from metalab.nas.table import TABLE_FORMAT

    table = {"format": TABLE_FORMAT, "space": "skip-conv3", "results": {"cellA": "abc"}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))
    line = _one_error_line(_run("nas", "bench", "show", str(path)))
    assert "results['cellA'] is not an entry" in line
    line = _one_error_line(_run("nas", "bench", "merge", str(tmp_path / "m.json"), str(path)))
    assert "results['cellA'] is not an entry" in line
    assert not (tmp_path / "m.json").exists()


def test_a_folder_given_as_table_is_named_as_a_folder(tmp_path, monkeypatch):
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    for given in ("adir", str(tmp_path / "adir")):
        line = _one_error_line(_run("nas", "bench", "show", given))
        assert line == f"Error: {given!r} is a folder; give a table's JSON file or a space name"


def test_ntk_spectrum_default_top_fits_few_points():
    result = _run("ntk", "spectrum", "--points", "12", "--width", "32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "i=10..12" in result.output or result.output.count("\n") >= 12


def test_help_keeps_the_start_block_unwrapped():
    result = _run("--help")
    assert "\n  Start with:\n    metalab repro list" in result.output, result.output


def test_out_of_memory_is_recognized_but_other_runtime_errors_are_not():
    assert _out_of_memory(MemoryError())
    assert _out_of_memory(RuntimeError("DefaultCPUAllocator: you tried to allocate 3276800 bytes"))
    assert _out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not _out_of_memory(RuntimeError("shape mismatch"))
