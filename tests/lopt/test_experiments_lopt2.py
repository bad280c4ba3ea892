"""Tests of the issue-#4 experiment runners (held-out scoring, effective step size, wiring)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from metalab.core import Run, RunConfig
from metalab.core.errors import ConfigError, MetalabError
from metalab.lopt.baselines import AdamArch, SGDMArch
from metalab.lopt.evaluation import BaselineResult, EvaluationReport, TaskResult, train_task
from metalab.lopt.experiments_batch_size import _slope, effective_learning_rate
from metalab.lopt.experiments_lopt2 import (
    HeldoutParams,
    _outer_weights_file,
    heldout_scores,
    hierarchical_vs_mlp,
    score_theta,
)
from metalab.lopt.experiments_lopt_general import (
    _baseline_metrics,
    _task_result,
    resolve_weights,
)
from metalab.lopt.task_zoo import MLPTask, QuadraticTask
from metalab.lopt.weights import load_weights


def _quadratic() -> QuadraticTask:
    return QuadraticTask(dim=8, condition=10.0, noise=0.1, seed=3)


def test_score_theta_matches_train_task_with_one_seed() -> None:
    """With one seed, score_theta draws init and minibatches exactly as train_task does."""
    task, arch = _quadratic(), AdamArch()
    theta = AdamArch.theta(lr=0.05)
    meta, test = score_theta(arch, theta, task, steps=25, seeds=1, generator=_gen(7))
    curves = train_task(task, arch, theta, 25, generator=_gen(7))
    assert meta.shape == test.shape == (1,)
    assert float(meta[0]) == pytest.approx(float(curves.train[0].mean()), rel=1e-5)
    assert float(test[0]) == pytest.approx(float(curves.test[0, -1]), rel=1e-5)


def test_score_theta_clips_diverging_losses() -> None:
    task = _quadratic()
    meta, test = score_theta(
        SGDMArch(),
        SGDMArch.theta(lr=1e3),
        task,
        steps=30,
        seeds=3,
        generator=_gen(0),
        loss_clip=5.0,
    )
    assert torch.all(meta <= 5.0) and torch.all(test == 5.0)


def test_heldout_scores_are_reproducible_and_rank_optimizers(tmp_path: Path) -> None:
    config = RunConfig(name="t", params={}, seed=1, device="cpu")
    tasks = [_quadratic(), QuadraticTask(dim=4, condition=100.0, noise=0.0, seed=1)]
    p = HeldoutParams(steps=40, seeds=2)
    good = heldout_scores(config, AdamArch(), AdamArch.theta(lr=0.05), tasks, p)
    again = heldout_scores(config, AdamArch(), AdamArch.theta(lr=0.05), tasks, p)
    tiny = heldout_scores(config, AdamArch(), AdamArch.theta(lr=1e-6), tasks, p)
    assert good == again
    assert set(good["tasks"]) == {t.name for t in tasks}
    assert good["meta_loss"] < tiny["meta_loss"]
    assert good["log_test_loss"] < tiny["log_test_loss"]


def test_effective_learning_rate_of_adam_is_its_learning_rate() -> None:
    """Adam's update norm over its own direction is exactly its lr (the definition's anchor)."""
    task = MLPTask("iris", width=8, batch_size=16)
    rate, final = effective_learning_rate(
        task, AdamArch(), AdamArch.theta(lr=0.02), 20, generator=_gen(3)
    )
    assert rate == pytest.approx(0.02, rel=1e-3)
    curves = train_task(task, AdamArch(), AdamArch.theta(lr=0.02), 20, generator=_gen(3))
    assert final == pytest.approx(float(curves.test[0, -1]), rel=1e-5)  # same init and data


def test_effective_learning_rate_of_one_sgd_step() -> None:
    """One SGD step: rate = lr·‖g‖ / ‖g / (|g| + ε)‖ (Adam's first step is sign-like)."""
    task = _quadratic()
    generator = _gen(4)
    params = task.init_params(1, generator=generator)
    _, grads = task.loss_and_grad(
        params, {k: v[0] for k, v in task.sample_batches(1, 1, generator=generator).items()}
    )
    expected = 0.03 * grads.norm() / (grads / (grads.abs() + 1e-8)).norm()
    rate, _ = effective_learning_rate(
        task, SGDMArch(), SGDMArch.theta(lr=0.03), 1, generator=_gen(4)
    )
    assert rate == pytest.approx(float(expected), rel=1e-5)


def test_slope_recovers_a_power_law() -> None:
    xs = [4.0, 16.0, 64.0, 256.0]
    assert _slope(xs, [3.0 * x**0.5 for x in xs]) == pytest.approx(0.5)
    assert _slope(xs, [2.0] * 4) == pytest.approx(0.0, abs=1e-12)


def test_resolve_weights() -> None:
    arch, theta, described = resolve_weights("init:mlp", generator=_gen(0))
    assert arch.name == "mlp" and theta.shape == (arch.theta_dim,)
    assert "untrained" in described
    with pytest.raises(ConfigError):
        resolve_weights("/nonexistent/weights.pt", generator=_gen(0))
    with pytest.raises(MetalabError):
        resolve_weights("init:no-such-arch", generator=_gen(0))


def test_task_result_round_trips_through_json_form() -> None:
    data = {
        "task": "q",
        "steps": 4,
        "eval_steps": [0, 4],
        "learned_curve": [1.0, None],
        "learned_train": [1.0, 0.5, 0.4, 0.3],
        "learned_final": None,
        "baselines": {
            "adam": {
                "lr": 0.1,
                "final": 0.2,
                "curve": [1.0, 0.2],
                "speedup": 0.0,
                "censored": False,
            }
        },
    }
    result = _task_result(data)
    assert math.isnan(result.learned_final)
    assert result.baselines["adam"].final == 0.2


def test_outer_weights_file_saves_an_untrained_optimizer(tmp_path: Path) -> None:
    config = RunConfig(name="t", params={}, seed=0, device="cpu")
    with Run.create("t", {}, root=tmp_path) as run:
        path = _outer_weights_file(config, run, "init:mlp")
        assert load_weights(path).arch == "mlp"
        assert _outer_weights_file(config, run, "x.pt") == "x.pt"


def test_hierarchical_vs_mlp_uses_equal_compute_and_resumes(tmp_path: Path) -> None:
    params = {
        "score_init": False,
        "meta": {
            "tasks": "quadratic",
            "steps": 3,
            "pairs": 2,
            "truncation": 2,
            "min_horizon": 3,
            "max_horizon": 5,
            "checkpoint_every": 1,
        },
        "heldout": {"steps": 4, "seeds": 2},
    }
    config = RunConfig(name="lopt-hierarchical-vs-mlp", params=params, seed=0, device="cpu")
    with Run.create("h", config.to_dict(), root=tmp_path) as run:
        metrics = hierarchical_vs_mlp(config, run)
        again = hierarchical_vs_mlp(config, run)  # every stage memoized: identical numbers
        assert (run.dir / "meta-training" / "mlp" / "weights.pt").is_file()
    assert metrics == again
    assert metrics["mlp.inner_steps"] == metrics["hierarchical.inner_steps"] > 0
    assert metrics["hierarchical.theta_dim"] > metrics["mlp.theta_dim"]
    assert metrics["hier_minus_mlp_log_test_loss"] == pytest.approx(
        metrics["hierarchical.heldout_log_test_loss"] - metrics["mlp.heldout_log_test_loss"]
    )
    assert 0.0 <= metrics["hier_win_fraction"] <= 1.0


def _result(name: str, learned: float, adam: float, speedup: float) -> TaskResult:
    result = TaskResult(name, 10, [0, 10], [2.0, learned], [1.0] * 10, learned)
    result.baselines["adam"] = BaselineResult(0.01, adam, [2.0, adam], speedup, False)
    return result


def test_baseline_metrics_fraction_and_worst_case() -> None:
    tasks = [
        _result("a", 0.5, 1.0, 2.0),  # learned better
        _result("b", 1.0, 1.0, 1.0),  # tie counts as matching
        _result("c", 3.0, 1.0, 0.25),
        _result("d", 2.0, 1.0, 0.5),
    ]
    m = _baseline_metrics(EvaluationReport(10, 2.0, tasks), ["adam"])
    assert m["fraction_matching_adam"] == 0.5
    assert m["fraction_loss_le_adam"] == 0.5
    assert m["worst_speedup_adam"] == 0.25
    assert m["worst_loss_ratio_adam"] == 3.0
    assert m["median_speedup_adam"] == 0.75  # the mean of the two middle values
    assert m["c.learned_final"] == 3.0 and m["c.speedup_adam"] == 0.25


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
