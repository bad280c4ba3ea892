"""The lopt runners refuse impossible parameters before they make a run folder."""

from __future__ import annotations

import math

import pytest

from metalab.core.config import build_config
from metalab.core.specs import find_spec
from metalab.lopt.experiments_batch_size import BatchSizeParams
from metalab.lopt.experiments_lopt_general import BaselinesParams
from tests.support.runner_params import assert_cli_refuses, assert_refused_before_run

# (spec, kind, overrides, words the error must contain)
BAD = [
    ("pes-influence-balancing", "experiments", {"outer_steps": 0}, "params.outer_steps must be >="),
    ("pes-influence-balancing", "experiments", {"lr": -1.0}, "params.lr must be > 0"),
    ("pes-influence-balancing", "experiments", {"log_every": 0}, "params.log_every must be >="),
    ("pes-toy-regression", "experiments", {"beta1": 1.0}, "params.beta1 must be < 1"),
    ("pes-toy-regression", "experiments", {"grid": 0}, "params.grid must be >= 1"),
    ("pes-toy-regression", "experiments", {"methods": []}, "params.methods must not be empty"),
    ("pes-toy-regression", "experiments", {"best_from": 1.5}, "params.best_from must be <= 1"),
    ("pes-lopt-mlp", "experiments", {"sigma": math.nan}, "params.sigma must be a finite"),
    ("pes-lopt-mlp", "experiments", {"pairs": 0}, "params.pairs must be >= 1"),
    ("pes-lr-schedule", "experiments", {"sizes": [784, 0, 10]}, "params.sizes[1] must be >= 1"),
    ("pes-lr-schedule", "experiments", {"objectives": []}, "params.objectives must not be empty"),
    ("pes-many-hyperparams", "experiments", {"outer_steps": 0}, "params.outer_steps must be >="),
    ("pes-many-hyperparams", "experiments", {"outer_lr": math.inf}, "params.outer_lr must be a"),
    ("pes-unbiased", "theory", {"repeats": 1}, "params.repeats must be >= 2"),
    ("pes-unbiased", "theory", {"sigma": 0.0}, "params.sigma must be > 0"),
    ("lopt-batch-size-adaptation", "experiments", {"batch_sizes": []}, "params.batch_sizes must"),
    ("lopt-batch-size-adaptation", "experiments", {"steps": 0}, "params.steps must be >= 1"),
    ("lopt-batch-size-adaptation", "experiments", {"adam_grid": [-1e-3]}, "params.adam_grid[0]"),
    ("lopt-hierarchical-vs-mlp", "experiments", {"meta.steps": 0}, "params.meta.steps must be"),
    ("lopt-hierarchical-vs-mlp", "experiments", {"heldout.seeds": 0}, "params.heldout.seeds"),
    ("lopt-hierarchical-vs-mlp", "experiments", {"archs": []}, "params.archs must not be empty"),
    ("lopt-self-training", "experiments", {"adam_lrs": []}, "params.adam_lrs must not be empty"),
    ("lopt-self-training", "experiments", {"meta.sigma": -0.01}, "params.meta.sigma must be > 0"),
    ("lopt-vs-tuned-baselines", "experiments", {"horizon_factor": 0.5}, "params.horizon_factor"),
    ("lopt-vs-tuned-baselines", "experiments", {"eval_every": -1}, "params.eval_every must be"),
    ("lopt-vs-tuned-baselines", "experiments", {"baselines": []}, "params.baselines must not be"),
]


@pytest.mark.parametrize(
    ("name", "kind", "overrides", "message"),
    BAD,
    ids=[f"{name}-{next(iter(overrides))}" for name, _, overrides, _ in BAD],
)
def test_impossible_value_is_refused_before_the_run_folder(
    tmp_path, name, kind, overrides, message
):
    assert_refused_before_run(find_spec(name, kind), overrides, message, tmp_path)


def test_sentinels_stay_valid():
    """Empty grids mean "the default grid", ``eval_every = 0`` "about 20 evaluations"."""
    baselines = build_config(BaselinesParams, {"adam_grid": [], "sgdm_grid": [], "eval_every": 0})
    assert baselines.adam_grid == [] and baselines.eval_every == 0
    batch = build_config(BatchSizeParams, {"adam_grid": [], "depth": 0})
    assert batch.adam_grid == [] and batch.depth == 0


def test_cli_refuses_an_impossible_value_in_one_line(tmp_path):
    args = ["repro", "run", "pes-many-hyperparams", "--set", "outer_steps=0"]
    assert_cli_refuses(args, "Error: params.outer_steps must be >= 1, got 0", tmp_path)
