"""Impossible ``--set`` values of the NTK theory checks are refused before any run folder."""

from __future__ import annotations

import pytest

from metalab.core.specs import find_spec
from tests.support.runner_params import assert_cli_refuses, assert_refused_before_run, build_params


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("ntk-asgd-rate", {"t_max": 5}, "params.t_max must be >= 10, got 5"),
        ("ntk-asgd-rate", {"settings": []}, "params.settings must not be empty"),
        ("ntk-asgd-rate", {"seeds": 0}, "params.seeds must be >= 1, got 0"),
        ("ntk-asgd-rate", {"kernel_t_max": -1}, "params.kernel_t_max must be >= 0"),
        ("asgd-vs-last-iterate", {"fit_decades": 0}, "params.fit_decades must be > 0"),
        ("asgd-vs-last-iterate", {"per_decade": 0}, "params.per_decade must be >= 1, got 0"),
        ("asgd-vs-last-iterate", {"threads": 0}, "params.threads must be >= 1, got 0"),
        ("ntk-regime", {"widths": []}, "params.widths must not be empty"),
        ("ntk-regime", {"widths": [8, 0]}, "params.widths[1] must be >= 1, got 0"),
        ("ntk-regime", {"r": 1.5}, "params.r must be <= 1, got 1.5"),
        ("ntk-regime", {"dim": 4}, "params.dim must be <= 3, got 4"),
        ("ntk-regime", {"decades": 0}, "params.decades must be > 0"),
        ("ntk-regime", {"tolerance": 0}, "params.tolerance must be > 0"),
        ("ntk-spectrum", {"points": 5}, "params.points must be >= 10, got 5"),
        ("ntk-spectrum", {"width": 0}, "params.width must be >= 1, got 0"),
        ("ntk-spectrum", {"dims": [1]}, "params.dims[0] must be >= 2, got 1"),
        ("ntk-spectrum", {"activations": []}, "params.activations must not be empty"),
        ("ntk-spectrum", {"sharpness": -20.0}, "params.sharpness must be > 0"),
        ("ntk-spectrum", {"blocks": 0}, "params.blocks must be >= 1, got 0"),
    ],
)
def test_impossible_value_is_refused_before_the_run_folder(name, overrides, message, tmp_path):
    assert_refused_before_run(find_spec(name, "theory"), overrides, message, tmp_path)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("ntk-asgd-rate", {"kernel_t_max": 0}),  # 0: the same horizon as t_max
        ("ntk-spectrum", {"radius": 1.0, "gamma": 0.0}),  # no bias term
    ],
)
def test_sentinels_stay_valid(name, overrides):
    build_params(find_spec(name, "theory"), overrides)


def test_cli_refuses_an_impossible_value_in_one_line(tmp_path):
    assert_cli_refuses(
        ["theory", "run", "ntk-regime", "--set", "widths=[]"],
        "Error: params.widths must not be empty",
        tmp_path,
    )
