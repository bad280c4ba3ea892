"""Impossible ``--set`` values of the NAS experiments are refused before a run folder exists."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from metalab.cli import cli
from metalab.core.claims import load_runner, run_spec
from metalab.core.config import build_config
from metalab.core.errors import ConfigError
from metalab.core.specs import find_spec, resolve_params
from metalab.nas.data import load_digits_splits
from metalab.nas.search import DartsSearch, SearchConfig


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
    with pytest.raises(ConfigError) as raised:
        run_spec(find_spec(name), overrides=overrides, device="cpu", out=tmp_path)
    assert message in str(raised.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("darts-pt-vs-magnitude", {"tune_epochs": 0, "threads": 0}),  # no fine-tuning; torch's
        ("darts-skip-domination", {"pt_epochs": []}),  # [] = PT at the last epoch only
        ("darts-pt-fixed-alpha", {"table": ""}),  # "" = the space's shipped table
    ],
)
def test_sentinel_values_stay_valid(name, overrides):
    spec = find_spec(name)
    params_class = load_runner(spec).params_class  # type: ignore[attr-defined]
    build_config(params_class, resolve_params(spec, overrides=overrides))


def test_search_config_built_directly_skips_the_bounds():
    """Bounds belong to config files: library code (``nas search``) may still search 0 epochs."""
    config = SearchConfig(space="skip-conv3", channels=2, n_cells=1, epochs=0, batch_size=32)
    search = DartsSearch(
        config, data=load_digits_splits(), generator=torch.Generator().manual_seed(0)
    )
    assert search.epoch == 0 and search.config.epochs == 0


def test_cli_refuses_an_impossible_nested_set_with_one_error_line(tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli,
        ["repro", "run", "darts-pt-vs-magnitude", "--set", "search.epochs=0", "--device", "cpu"],
        env={"METALAB_RUNS": str(runs)},
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: params.search.epochs must be >= 1, got 0"], result.stderr
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())
