"""Impossible ``--set`` values of the NTK theory checks are refused before any run folder."""

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
        ("ntk-asgd-rate", {"t_max": 5}, r"params\.t_max must be >= 10, got 5"),
        ("ntk-asgd-rate", {"settings": []}, r"params\.settings must not be empty"),
        ("ntk-asgd-rate", {"seeds": 0}, r"params\.seeds must be >= 1, got 0"),
        ("ntk-asgd-rate", {"kernel_t_max": -1}, r"params\.kernel_t_max must be >= 0"),
        ("asgd-vs-last-iterate", {"fit_decades": 0}, r"params\.fit_decades must be > 0"),
        ("asgd-vs-last-iterate", {"per_decade": 0}, r"params\.per_decade must be >= 1, got 0"),
        ("asgd-vs-last-iterate", {"threads": 0}, r"params\.threads must be >= 1, got 0"),
        ("ntk-regime", {"widths": []}, r"params\.widths must not be empty"),
        ("ntk-regime", {"widths": [8, 0]}, r"params\.widths\[1\] must be >= 1, got 0"),
        ("ntk-regime", {"r": 1.5}, r"params\.r must be <= 1, got 1\.5"),
        ("ntk-regime", {"dim": 4}, r"params\.dim must be <= 3, got 4"),
        ("ntk-regime", {"decades": 0}, r"params\.decades must be > 0"),
        ("ntk-regime", {"tolerance": 0}, r"params\.tolerance must be > 0"),
        ("ntk-spectrum", {"points": 5}, r"params\.points must be >= 10, got 5"),
        ("ntk-spectrum", {"width": 0}, r"params\.width must be >= 1, got 0"),
        ("ntk-spectrum", {"dims": [1]}, r"params\.dims\[0\] must be >= 2, got 1"),
        ("ntk-spectrum", {"activations": []}, r"params\.activations must not be empty"),
        ("ntk-spectrum", {"sharpness": -20.0}, r"params\.sharpness must be > 0"),
        ("ntk-spectrum", {"blocks": 0}, r"params\.blocks must be >= 1, got 0"),
    ],
)
def test_impossible_value_is_refused_before_the_run_folder(name, overrides, message, tmp_path):
    spec = find_spec(name, "theory")
    with pytest.raises(ConfigError, match=message):
        run_spec(spec, smoke=True, overrides=overrides, device="cpu", out=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("ntk-asgd-rate", {"kernel_t_max": 0}),  # 0: the same horizon as t_max
        ("ntk-spectrum", {"radius": 1.0, "gamma": 0.0}),  # no bias term
    ],
)
def test_sentinels_stay_valid(name, overrides):
    spec = find_spec(name, "theory")
    params_class = getattr(load_runner(spec), "params_class", None)
    assert params_class is not None
    build_config(params_class, resolve_params(spec, smoke=True, overrides=overrides))


def test_cli_refuses_an_impossible_value_in_one_line(tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli,
        ["theory", "run", "ntk-regime", "--set", "widths=[]", "--device", "cpu"],
        env={"METALAB_RUNS": str(runs)},
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: params.widths must not be empty"], result.stderr
    assert "Traceback" not in result.output
    assert not runs.exists()
