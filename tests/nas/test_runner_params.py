"""Impossible ``--set`` values of the NAS experiments are refused before a run folder exists."""

from __future__ import annotations

import pytest
import torch

from metalab.core.specs import find_spec
from metalab.nas.data import load_digits_splits
from metalab.nas.search import DartsSearch, SearchConfig
from tests.support.runner_params import assert_cli_refuses, assert_refused_before_run, build_params


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("darts-pt-vs-magnitude", {"search.epochs": 0}, "params.search.epochs must be >= 1, got 0"),
        ("darts-pt-vs-magnitude", {"seeds": []}, "params.seeds must not be empty"),
        ("darts-pt-vs-magnitude", {"search.n_cells": 0}, "params.search.n_cells must be >= 1"),
        ("darts-pt-fixed-alpha", {"tune_lr": 0.0}, "params.tune_lr must be > 0, got 0.0"),
        ("darts-pt-fixed-alpha", {"search.alpha_lr": -0.1}, "params.search.alpha_lr must be > 0"),
        ("darts-pt-fixed-alpha", {"search.channels": 0}, "params.search.channels must be >= 1"),
        ("darts-skip-domination", {"early_epoch": 0}, "params.early_epoch must be >= 1, got 0"),
        ("darts-skip-domination", {"tune_epochs": -1}, "params.tune_epochs must be >= 0"),
        ("darts-skip-domination", {"threads": -1}, "params.threads must be >= 0, got -1"),
    ],
)
def test_impossible_params_are_refused_before_a_run_folder(tmp_path, name, overrides, message):
    assert_refused_before_run(find_spec(name), overrides, message, tmp_path)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("darts-pt-vs-magnitude", {"tune_epochs": 0, "threads": 0}),  # no fine-tuning; torch's
        ("darts-skip-domination", {"pt_epochs": []}),  # [] = PT at the last epoch only
        ("darts-pt-fixed-alpha", {"table": ""}),  # "" = the space's shipped table
    ],
)
def test_sentinel_values_stay_valid(name, overrides):
    build_params(find_spec(name), overrides)


def test_search_config_built_directly_skips_the_bounds():
    """Bounds belong to config files: library code (``nas search``) may still search 0 epochs."""
    config = SearchConfig(space="skip-conv3", channels=2, n_cells=1, epochs=0, batch_size=32)
    search = DartsSearch(
        config, data=load_digits_splits(), generator=torch.Generator().manual_seed(0)
    )
    assert search.epoch == 0 and search.config.epochs == 0


def test_cli_refuses_an_impossible_nested_set_with_one_error_line(tmp_path):
    args = ["repro", "run", "darts-pt-vs-magnitude", "--set", "search.epochs=0"]
    assert_cli_refuses(args, "Error: params.search.epochs must be >= 1, got 0", tmp_path)
