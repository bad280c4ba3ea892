"""The Adam-backbone learned optimizer: exactly Adam at init, a real schedule, a real MLP part."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from torch import nn

from metalab.core.errors import ConfigError
from metalab.lopt.arch_adam_mlp import SCHEDULE_DIM, AdamMLPArch
from metalab.lopt.arch_registry import make_arch
from metalab.lopt.mlp_lopt import TIMESCALES, Segments, time_features
from metalab.lopt.optimizer import LearnedOptimizer
from metalab.lopt.weights import load_weights, save_weights
from tests.support.optim_problems import run_arch, run_torch

_PROBLEM = {"size": 7, "rows": 5}


def _run(arch, theta_rows, steps):
    return run_arch(arch, theta_rows, steps, shapes=[(3,), (4,)], **_PROBLEM)


def _torch_adam(lr, steps):
    return run_torch(lambda p: torch.optim.Adam(p, lr=lr), steps, **_PROBLEM)


@pytest.mark.parametrize("lr", [1e-3, 0.05])
def test_zero_mlp_output_is_exactly_torch_adam(lr):
    arch = AdamMLPArch(lr=lr, init_scale=0.0)
    theta = arch.init_theta(generator=torch.Generator().manual_seed(1)).double()
    ours = _run(arch, theta.unsqueeze(0), 30)[0]
    stored_lr = math.exp(float(theta[0]))  # float32 log lr: 1e-8 relative off ``lr``
    torch.testing.assert_close(ours, _torch_adam(stored_lr, 30), rtol=1e-9, atol=1e-11)


def test_schedule_weights_scale_the_step_by_their_own_time_features():
    arch = AdamMLPArch(lr=0.01, init_scale=0.0)
    flat = arch.init_theta(generator=torch.Generator().manual_seed(0)).double()
    scheduled = flat.clone()
    ten, thousand = TIMESCALES.index(10.0), TIMESCALES.index(1e3)
    scheduled[1 + ten], scheduled[1 + thousand] = -2.0, 0.5
    theta = torch.stack([flat, scheduled])
    segments = Segments.from_shapes([(3,), (4,)], torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    params = torch.randn(1, 7, generator=gen, dtype=torch.float64).repeat(2, 1)
    grads = torch.randn(1, 7, generator=gen, dtype=torch.float64).repeat(2, 1)
    for t in (0, 5, 30, 400):
        state = arch.init_state(params, segments)
        t_rows = torch.full((2,), t)
        new, _ = arch.step(theta, params, grads, state, t_rows, segments)
        features = time_features(torch.tensor([t]))[0].double()
        factor = math.exp(-2.0 * float(features[ten]) + 0.5 * float(features[thousand]))
        torch.testing.assert_close(
            new[1] - params[1], factor * (new[0] - params[0]), rtol=1e-12, atol=0.0
        )


def test_mlp_part_changes_the_update_and_particles_are_independent():
    arch = AdamMLPArch(lr=0.01, init_scale=1.0)
    gen = torch.Generator().manual_seed(0)
    rows = torch.stack([arch.init_theta(generator=gen) for _ in range(3)]).double()
    together = _run(arch, rows, 5)
    alone = torch.cat([_run(arch, rows[i : i + 1], 5) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-14)
    adam = _torch_adam(0.01, 5)
    assert float((together[0] - adam).abs().max()) > 1e-6  # the random MLP adds its own step


def test_registry_options_and_errors():
    arch = make_arch("adam-mlp", hidden=8, lr=0.003)
    assert isinstance(arch, AdamMLPArch)
    assert arch.theta_dim == SCHEDULE_DIM + arch.shapes.size
    theta = arch.init_theta(generator=torch.Generator().manual_seed(0))
    assert theta[0] == pytest.approx(math.log(0.003))
    bad_options = [
        {"lr": 0.0},
        {"lr": float("nan")},
        {"lr": True},
        {"init_scale": -1.0},
        {"init_scale": float("inf")},
        {"init_scale": True},
        {"hidden": 0},
    ]
    for bad in bad_options:
        with pytest.raises(ConfigError):
            make_arch("adam-mlp", **bad)


def test_trains_an_unseen_model_from_a_weights_file_and_round_trips(tmp_path):
    x, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor(y)
    arch = AdamMLPArch(lr=0.01)
    theta = arch.init_theta(generator=torch.Generator().manual_seed(0))
    path = save_weights(tmp_path / "w.pt", theta, arch="adam-mlp", options={"lr": 0.01})
    assert load_weights(path).arch == "adam-mlp"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = LearnedOptimizer(model.parameters(), weights=path)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]
    twin = nn.Sequential(nn.Linear(30, 16), nn.Tanh(), nn.Linear(16, 2))
    twin.load_state_dict(model.state_dict())
    resumed = LearnedOptimizer(twin.parameters(), weights=path)
    resumed.load_state_dict(opt.state_dict())
    for o, m in ((opt, model), (resumed, twin)):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_learned_optimizer_at_theta0_is_torch_adam_with_a_late_parameter():
    """Per-tensor step counts: a parameter first stepped late gets Adam's own bias correction."""
    arch = AdamMLPArch(lr=0.01, init_scale=0.0)
    theta = arch.init_theta(generator=torch.Generator().manual_seed(0))
    lr = math.exp(float(theta[0]))
    gen = torch.Generator().manual_seed(0)
    x, target = torch.randn(64, 5, generator=gen), torch.randn(64, 1, generator=gen)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1)))
    ours = LearnedOptimizer(models[0].parameters(), weights=theta, arch=arch)
    ref = torch.optim.Adam(models[1].parameters(), lr=lr)
    for step in range(30):
        for model, opt in zip(models, (ours, ref), strict=True):
            opt.zero_grad()
            F.mse_loss(model(x), target).backward()
            if step < 10:  # the last layer's bias gets its first gradient at step 10
                model[2].bias.grad = None
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backprop_through_a_step_stays_finite_when_a_gradient_entry_is_zero():
    """√v has an infinite derivative at v = 0; TBPTT through steps must not turn it into NaN."""
    arch = AdamMLPArch(lr=0.01, init_scale=0.1)
    theta = arch.init_theta(generator=torch.Generator().manual_seed(0)).unsqueeze(0)
    theta.requires_grad_(True)
    segments = Segments.from_shapes([(3,)], torch.device("cpu"))
    params = torch.tensor([[0.5, -0.2, 0.1]])
    grads = torch.tensor([[0.3, 0.0, -0.1]], requires_grad=True)  # one entry exactly zero
    new, _ = arch.step(
        theta, params, grads, arch.init_state(params, segments), torch.zeros(1), segments
    )
    d_theta, d_grads = torch.autograd.grad(new.sum(), (theta, grads))
    assert bool(torch.isfinite(d_theta).all()) and bool(torch.isfinite(d_grads).all())
