import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from metalab.cli import cli
from tests.support.specs import write_toy


@pytest.fixture
def invoke():
    runner = CliRunner()

    def call(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return call


def _one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "args", [["--help"], ["repro", "--help"], ["theory", "--help"], ["info"], ["--version"]]
)
def test_help_and_info_answer(invoke, args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()


def test_info_reports_versions_device_and_runs(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("METALAB_RUNS", str(tmp_path / "r"))
    out = invoke("info").stdout
    assert "torch 2." in out and "device" in out and "threads" in out and str(tmp_path / "r") in out


def test_list_show_run(invoke, toy_experiments):
    listed = invoke("repro", "list")
    assert "toy-gd" in listed.stdout and "Toy et al. 2026" in listed.stdout
    shown = invoke("repro", "show", "toy-gd").stdout
    assert "steps = 20 | 30" in shown and "x_final ≈ 3 ± 0.01" in shown
    ran = invoke("repro", "run", "toy-gd", "--device", "cpu")
    assert ran.exit_code == 0, ran.output
    assert "PASSED" in ran.stdout and "x_final" in ran.stdout


def test_failed_check_exits_1_and_names_the_metric(invoke, toy_experiments):
    result = invoke("repro", "run", "toy-gd", "--set", "steps=1")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "FAIL" in result.stdout


def test_set_seed_out_quick_reach_the_config(invoke, toy_experiments, tmp_path):
    result = invoke(
        "repro",
        "run",
        "toy-gd",
        "--quick",
        "--set",
        "lr=0.3",
        "--seed",
        "5",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "o" / "toy-gd").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["params"]["steps"] == 30 and config["params"]["lr"] == 0.3 and config["seed"] == 5
    assert config["quick"] is True


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["repro", "run", "toy-dg"], "did you mean toy-gd"),
        (["repro", "show", "nothing-like-it"], "unknown experiment 'nothing-like-it'"),
        (["repro", "run", "toy-gd", "--set", "stepz=3"], "unknown parameter 'stepz'"),
        (["repro", "run", "toy-gd", "--set", "steps=fast"], "parameter 'steps' is int"),
        (["repro", "run", "toy-gd", "--set", "steps"], "must look like key=value"),
        (["repro", "run", "toy-gd", "--device", "cuda:3"], "cuda"),
        (["repro", "run", "toy-gd", "--device", "tpu"], "invalid device 'tpu'"),
        (["info", "--device", "gpu"], "invalid device 'gpu'"),
        (["theory", "run", "anything"], "unknown theory check 'anything'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(invoke, toy_experiments, args, fragment):
    result = invoke(*args)
    assert result.exit_code == 2
    assert fragment in _one_error_line(result)


def test_runner_input_error_is_exit_2(invoke, toy_experiments):
    write_toy(toy_experiments, "typed", runner="bad_params")
    spec_path = toy_experiments / "typed.toml"
    spec_path.write_text(spec_path.read_text().replace('method = "gd"', 'method = "gd"\nextra = 1'))
    result = invoke("repro", "run", "typed")
    assert result.exit_code == 2
    assert "unknown key params.extra" in _one_error_line(result)


def test_malformed_experiment_file_is_one_line(invoke, toy_experiments):
    (toy_experiments / "broken.toml").write_text('name = "broken"\n')
    result = invoke("repro", "list")
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "broken.toml" in line and "missing field 'paper'" in line


def test_all_prints_claims_table_and_exit_code(invoke, toy_experiments):
    strict = write_toy(toy_experiments, "toy-strict")
    strict.write_text(strict.read_text().replace("value = 3.0", "value = 3.5"))
    result = invoke("repro", "all", "--quick")
    assert result.exit_code == 1  # toy-strict expects the wrong optimum
    table = result.stdout
    for column in ("experiment", "claim", "metric", "paper", "measured", "result"):
        assert column in table
    assert "toy-gd" in table and "toy-strict" in table
    assert "1 of 2 experiments reproduced their claims." in table


def test_all_with_no_experiments_says_so(invoke, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("METALAB_THEORY", str(tmp_path / "empty"))
    result = invoke("theory", "all")
    assert result.exit_code == 0 and "no theory checks found" in result.stdout


def test_a_missing_spec_folder_is_an_error(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("METALAB_THEORY", str(tmp_path / "none"))
    result = invoke("theory", "list")
    assert result.exit_code == 2
    assert f"$METALAB_THEORY names {str(tmp_path / 'none')!r}, which is missing" in result.stderr


def test_theory_show_prints_derivation(invoke, tmp_path, monkeypatch):
    write_toy(tmp_path, "rate")
    (tmp_path / "rate.md").write_text("# Why the slope is -1\n")
    monkeypatch.setenv("METALAB_THEORY", str(tmp_path))
    monkeypatch.setenv("METALAB_RUNS", str(tmp_path / "runs"))
    assert "Why the slope is -1" in invoke("theory", "show", "rate").stdout
    assert invoke("theory", "run", "rate").exit_code == 0


def test_resume_via_cli(invoke, toy_experiments, tmp_path):
    first = invoke("repro", "run", "toy-gd", "--set", "steps=3")
    (run_dir,) = (tmp_path / "runs" / "toy-gd").iterdir()
    resumed = invoke("repro", "run", "toy-gd", "--resume", str(run_dir))
    assert first.exit_code == 1 and resumed.exit_code == 1  # same stored config, same verdict
    assert str(run_dir) in resumed.stdout


def test_cli_start_up_does_not_import_torch():
    code = "import sys, metalab.cli.main; assert 'torch' not in sys.modules, 'torch at start-up'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_is_installed():
    bindir = __import__("pathlib").Path(sys.executable).parent
    result = subprocess.run(
        [bindir / "metalab", "--help"], capture_output=True, text=True, check=True
    )
    assert "repro" in result.stdout and "theory" in result.stdout
