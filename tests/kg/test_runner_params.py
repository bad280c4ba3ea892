"""Impossible ``--set`` values of the kg experiments are refused before a run folder exists."""

from __future__ import annotations

import pytest

from metalab.core.specs import find_spec
from tests.support.runner_params import assert_cli_refuses, assert_refused_before_run, build_params


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("cqd-exact-vs-beam", {"ks": [0, 4]}, "params.ks[0] must be >= 1, got 0"),
        ("cqd-exact-vs-beam", {"ks": []}, "params.ks must not be empty"),
        ("cqd-exact-vs-beam-kinships", {"epochs": 0}, "params.epochs must be >= 1, got 0"),
        ("cqd-exact-vs-beam", {"threads": -1}, "params.threads must be >= 0, got -1"),
        ("cqd-structures", {"k": 0}, "params.k must be >= 1, got 0"),
        ("cqd-structures", {"co_steps": -1}, "params.co_steps must be >= 1, got -1"),
        ("cqd-structures", {"co_regularizer": -0.1}, "params.co_regularizer must be >= 0"),
        ("cqd-structures-kinships", {"structures": []}, "params.structures must not be empty"),
        ("cqd-structures", {"per_structure": 0}, "params.per_structure must be >= 1, got 0"),
        ("cqd-explanations", {"examples": -1}, "params.examples must be >= 0, got -1"),
        ("cqd-explanations-kinships", {"dim": 0}, "params.dim must be >= 1, got 0"),
        ("kg-link-prediction", {"lr": 0.0}, "params.lr must be > 0, got 0.0"),
        ("kg-link-prediction", {"lr": float("nan")}, "params.lr must be a finite number"),
        ("kg-link-prediction", {"datasets": []}, "params.datasets must not be empty"),
        ("kg-link-prediction", {"batch_size": 0}, "params.batch_size must be >= 1, got 0"),
        ("kg-link-prediction", {"init_std": -1e-3}, "params.init_std must be > 0"),
        ("kg-link-prediction", {"regularizer_weight": -1.0}, "regularizer_weight must be >= 0"),
    ],
)
def test_impossible_params_are_refused_before_a_run_folder(tmp_path, name, overrides, message):
    assert_refused_before_run(find_spec(name), overrides, message, tmp_path)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("cqd-structures", {"threads": 0}),  # 0 = torch's default thread count
        ("cqd-explanations", {"examples": 0}),  # no examples.txt entries
        ("kg-link-prediction", {"threads": 0, "regularizer_weight": 0.0}),  # no N3 term
    ],
)
def test_sentinel_values_stay_valid(name, overrides):
    build_params(find_spec(name), overrides)


def test_cli_refuses_an_impossible_set_with_one_error_line(tmp_path):
    args = ["repro", "run", "cqd-structures", "--set", "k=0"]
    assert_cli_refuses(args, "Error: params.k must be >= 1, got 0", tmp_path)
