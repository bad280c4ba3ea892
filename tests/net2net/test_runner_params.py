"""Impossible ``--set`` values of the Net2Net runners are refused before any run folder."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from metalab.cli import cli
from metalab.core.claims import load_runner, run_spec
from metalab.core.config import build_config
from metalab.core.errors import ConfigError
from metalab.core.specs import find_spec, resolve_params


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("net2net-wider", {"student_epochs": 0}, r"params\.student_epochs must be >= 1, got 0"),
        ("net2net-wider", {"lr": -1}, r"params\.lr must be > 0, got -1"),
        ("net2net-wider", {"teacher_widths": []}, r"params\.teacher_widths must not be empty"),
        ("net2net-wider", {"student_widths": [0]}, r"params\.student_widths\[0\] must be >= 1"),
        ("net2net-wider", {"momentum": 1.0}, r"params\.momentum must be < 1, got 1\.0"),
        ("net2net-wider", {"seeds": 0}, r"params\.seeds must be >= 1, got 0"),
        ("net2net-deeper", {"insert_after": []}, r"params\.insert_after must not be empty"),
        ("net2net-deeper", {"kernel_size": 0}, r"params\.kernel_size must be >= 1, got 0"),
        ("net2net-deeper", {"dropout": 1.0}, r"params\.dropout must be < 1, got 1\.0"),
        ("net2net-deeper", {"batch_size": 0}, r"params\.batch_size must be >= 1, got 0"),
        ("net2net-deeper", {"shift": -1}, r"params\.shift must be >= 0, got -1"),
        ("net2net-explore", {"stages": []}, r"params\.stages must not be empty"),
        ("net2net-explore", {"scratch_epochs": 0}, r"params\.scratch_epochs must be >= 1"),
        ("net2net-explore", {"start_widths": [16, 0]}, r"params\.start_widths\[1\] must be >= 1"),
        ("net2net-explore", {"noise": -0.1}, r"params\.noise must be >= 0, got -0\.1"),
        ("net2net-explore", {"final_epochs": -1}, r"params\.final_epochs must be >= 0, got -1"),
    ],
)
def test_impossible_value_is_refused_before_the_run_folder(name, overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run_spec(find_spec(name), smoke=True, overrides=overrides, device="cpu", out=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("net2net-wider", {"train_examples": 0, "final_epochs": 0, "final_lr": 0.0, "shift": 0}),
        ("net2net-deeper", {"teacher_epochs": 0, "noise": 0.0, "momentum": 0.0}),
        ("net2net-explore", {"initial_epochs": 0, "train_examples": 0}),
    ],
)
def test_sentinels_stay_valid(name, overrides):
    """0 means "all" / "no final phase" / "no augmentation" / "untrained teacher": allowed."""
    spec = find_spec(name)
    params_class = getattr(load_runner(spec), "params_class", None)
    assert params_class is not None
    build_config(params_class, resolve_params(spec, smoke=True, overrides=overrides))


def test_cli_refuses_an_impossible_value_in_one_line(tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli,
        ["repro", "run", "net2net-wider", "--set", "lr=-1", "--device", "cpu"],
        env={"METALAB_RUNS": str(runs)},
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "Error: params.lr must be > 0, got -1.0"
    assert "Traceback" not in result.output
    assert not runs.exists()
