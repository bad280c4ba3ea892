"""The many-hyperparameters system and runner (Vicol et al. 2021, Sec. 5.4)."""

import math
from pathlib import Path

import pytest
import torch

from metalab.core.claims import run_spec
from metalab.core.errors import ConfigError
from metalab.core.specs import load_spec
from metalab.lopt.hyperparams import ManyHyperparamsSystem, random_box

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "experiments/pes/pes-many-hyperparams.toml"


def test_first_step_is_scaled_init_then_sgd_momentum_with_per_tensor_hyperparameters():
    system = ManyHyperparamsSystem(horizon=5, sizes=(64, 4, 10))
    assert system.theta_dim == 3 * 4 + 2 == 14
    gen = torch.Generator().manual_seed(0)
    state = system.init_state(2, generator=gen)
    theta = torch.randn(2, system.theta_dim, generator=gen) * 0.3 - 1.0
    data = {"index": torch.randint(100, (2, 64), generator=gen)}
    t = torch.tensor([0, 1])
    new, loss = system.step(state, theta, t, data)
    x, y = system.task.x[data["index"]], system.task.y[data["index"]]
    for i in range(2):
        s = system.tensors
        lr = torch.exp(theta[i, :s])[system.task.segments.index]
        mom = torch.sigmoid(theta[i, s : 2 * s])[system.task.segments.index]
        wd = torch.exp(theta[i, 2 * s : 3 * s])[system.task.segments.index]
        scale = torch.exp(theta[i, 3 * s :])[system.layer_index] if t[i] == 0 else 1.0
        params = state["params"][i] * scale
        ref_loss, grad = system.task.loss_and_grad(params[None], x[i : i + 1], y[i : i + 1])
        velocity = mom * state["velocity"][i] + grad[0] + wd * params
        assert torch.allclose(loss[i], ref_loss[0])
        assert torch.allclose(new["velocity"][i], velocity, atol=1e-6)
        assert torch.allclose(new["params"][i], params - lr * velocity, atol=1e-6)


def test_random_box_stays_inside_the_search_box():
    box = random_box(6, 3, 500, generator=torch.Generator().manual_seed(0))
    assert box.shape == (500, 21)
    assert box[:, :6].exp().min() >= 1e-3 - 1e-9 and box[:, :6].exp().max() <= 1.0
    assert box[:, 6:12].abs().max() <= 3.0
    assert box[:, 12:18].exp().min() >= 1e-6 * (1 - 1e-6) and box[:, 12:18].max() <= math.log(0.1)
    assert box[:, 18:].exp().min() >= 0.3 - 1e-6 and box[:, 18:].exp().max() <= 3.0 + 1e-6


def test_repeats_report_means_standard_errors_and_pes_win_fraction(tmp_path):
    spec = load_spec(SPEC, kind="experiments")
    outcome = run_spec(
        spec, quick=True, smoke=True, overrides={"repeats": 2}, device="cpu", out=tmp_path
    )
    assert outcome.error is None, outcome.error
    metrics = outcome.metrics
    for label in ("pes_k10", "tes_k10", "random_search"):
        assert math.isfinite(metrics[f"{label}.meta_loss"])
        assert metrics[f"{label}.meta_loss_se"] >= 0
    assert metrics["pes_best_fraction"] in (0.0, 0.5, 1.0)
    best_other = min(metrics["tes_k10.meta_loss"], metrics["random_search.meta_loss"])
    assert metrics["pes_minus_best_other"] == pytest.approx(
        metrics["pes_k10.meta_loss"] - best_other, abs=1e-6
    )


def test_zero_repeats_is_a_config_error(tmp_path):
    spec = load_spec(SPEC, kind="experiments")
    with pytest.raises(ConfigError, match=r"params\.repeats must be >= 1, got 0"):
        run_spec(spec, quick=True, smoke=True, overrides={"repeats": 0}, device="cpu", out=tmp_path)
    assert not any(tmp_path.iterdir())
