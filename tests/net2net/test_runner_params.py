"""Impossible ``--set`` values of the Net2Net runners are refused before any run folder."""

from __future__ import annotations

import pytest

from metalab.core.specs import find_spec
from tests.support.runner_params import assert_cli_refuses, assert_refused_before_run, build_params


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("net2net-wider", {"student_epochs": 0}, "params.student_epochs must be >= 1, got 0"),
        ("net2net-wider", {"lr": -1}, "params.lr must be > 0, got -1"),
        ("net2net-wider", {"teacher_widths": []}, "params.teacher_widths must not be empty"),
        ("net2net-wider", {"student_widths": [0]}, "params.student_widths[0] must be >= 1"),
        ("net2net-wider", {"momentum": 1.0}, "params.momentum must be < 1, got 1.0"),
        ("net2net-wider", {"seeds": 0}, "params.seeds must be >= 1, got 0"),
        ("net2net-deeper", {"insert_after": []}, "params.insert_after must not be empty"),
        ("net2net-deeper", {"kernel_size": 0}, "params.kernel_size must be >= 1, got 0"),
        ("net2net-deeper", {"dropout": 1.0}, "params.dropout must be < 1, got 1.0"),
        ("net2net-deeper", {"batch_size": 0}, "params.batch_size must be >= 1, got 0"),
        ("net2net-deeper", {"shift": -1}, "params.shift must be >= 0, got -1"),
        ("net2net-explore", {"stages": []}, "params.stages must not be empty"),
        ("net2net-explore", {"scratch_epochs": 0}, "params.scratch_epochs must be >= 1"),
        ("net2net-explore", {"start_widths": [16, 0]}, "params.start_widths[1] must be >= 1"),
        ("net2net-explore", {"noise": -0.1}, "params.noise must be >= 0, got -0.1"),
        ("net2net-explore", {"final_epochs": -1}, "params.final_epochs must be >= 0, got -1"),
    ],
)
def test_impossible_value_is_refused_before_the_run_folder(name, overrides, message, tmp_path):
    assert_refused_before_run(find_spec(name), overrides, message, tmp_path)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("net2net-wider", {"train_examples": 0, "final_epochs": 0, "final_lr": 0.0, "shift": 0}),
        ("net2net-deeper", {"teacher_epochs": 0, "noise": 0.0, "momentum": 0.0}),
        ("net2net-explore", {"initial_epochs": 0, "train_examples": 0}),
    ],
)
def test_sentinels_stay_valid(name, overrides):
    build_params(find_spec(name), overrides)


def test_cli_refuses_an_impossible_value_in_one_line(tmp_path):
    assert_cli_refuses(
        ["repro", "run", "net2net-wider", "--set", "lr=-1"],
        "Error: params.lr must be > 0, got -1.0",
        tmp_path,
    )
