import math

import pytest
import torch

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt.baselines import (
    BASELINE_ARCHS,
    AdamArch,
    SGDMArch,
    baseline_names,
    make_baseline,
    with_learning_rates,
)
from tests.support.optim_problems import run_arch, run_torch


@pytest.mark.parametrize("hp", [(1e-2, 0.9, 0.999, 1e-8), (0.1, 0.5, 0.9, 1e-3)])
def test_adam_matches_torch_optim_step_for_step(hp):
    lr, b1, b2, eps = hp
    theta = AdamArch.theta(lr, b1, b2, eps, dtype=torch.float64).unsqueeze(0)
    ours = run_arch(AdamArch(), theta, 25)[0]
    ref = run_torch(lambda p: torch.optim.Adam(p, lr=lr, betas=(b1, b2), eps=eps), 25)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("hp", [(1e-2, 0.9), (0.05, 0.3)])
def test_sgdm_matches_torch_optim_step_for_step(hp):
    lr, mu = hp
    theta = SGDMArch.theta(lr, mu, dtype=torch.float64).unsqueeze(0)
    ours = run_arch(SGDMArch(), theta, 25)[0]
    ref = run_torch(lambda p: torch.optim.SGD(p, lr=lr, momentum=mu), 25)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cls", BASELINE_ARCHS)
def test_learning_rate_grid_is_a_population_equal_to_separate_runs(cls):
    arch = cls()
    lrs = [1e-3, 1e-2, 3e-2]
    theta = with_learning_rates(arch.init_theta(generator=torch.Generator()), lrs)
    assert theta.shape == (3, arch.theta_dim)
    torch.testing.assert_close(theta[:, 0].exp(), torch.tensor(lrs))
    batched = run_arch(arch, theta, 10)
    looped = torch.cat([run_arch(arch, theta[i : i + 1], 10) for i in range(3)])
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(batched[0], batched[2])


def test_defaults_names_and_errors():
    assert baseline_names() == ["adam", "sgdm"]
    adam = make_baseline("adam")
    theta = adam.init_theta(generator=torch.Generator())
    assert math.isclose(theta[0].exp().item(), 1e-3, rel_tol=1e-6)
    assert math.isclose(torch.sigmoid(theta[2]).item(), 0.999, rel_tol=1e-6)
    assert make_baseline("sgdm").theta_dim == 2
    with pytest.raises(UnknownNameError, match="adam"):
        make_baseline("adamw")
    with pytest.raises(ConfigError):
        AdamArch.theta(beta1=1.0)
    with pytest.raises(ConfigError):
        with_learning_rates(theta, [1e-3, 0.0])


def test_baselines_are_registered_in_the_arch_registry():
    from metalab.lopt.arch_registry import arch_names, make_arch

    assert {"adam", "sgdm"} <= set(arch_names())
    assert isinstance(make_arch("adam"), AdamArch)


def test_adam_arch_in_learned_optimizer_is_torch_adam_with_a_late_head():
    """Per-tensor step counts: a head that joins the loss at step 10 gets Adam's own bias
    correction (with one counter per group its weights were 0.0138 off torch's Adam)."""
    import torch.nn.functional as F
    from torch import nn

    from metalab.lopt.optimizer import LearnedOptimizer

    theta = AdamArch.theta(1e-2, 0.9, 0.999, 1e-8)
    lr, eps = math.exp(float(theta[0])), math.exp(float(theta[3]))
    betas = (float(torch.sigmoid(theta[1])), float(torch.sigmoid(theta[2])))
    gen = torch.Generator().manual_seed(0)
    x, target = torch.randn(64, 5, generator=gen), torch.randn(64, 1, generator=gen)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.ModuleList([nn.Linear(5, 8), nn.Linear(8, 1), nn.Linear(8, 1)]))
    ours = LearnedOptimizer(models[0].parameters(), weights=theta, arch="adam")
    ref = torch.optim.Adam(models[1].parameters(), lr=lr, betas=betas, eps=eps)
    for step in range(20):
        for model, opt in zip(models, (ours, ref), strict=True):
            opt.zero_grad()
            hidden = torch.tanh(model[0](x))
            out = model[1](hidden) + (model[2](hidden) if step >= 10 else 0.0)
            F.mse_loss(out, target).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adam_arch_matches_torch_adam_on_several_tensors():
    theta = AdamArch.theta(1e-2, dtype=torch.float64).unsqueeze(0)
    ours = run_arch(AdamArch(), theta, 25, shapes=[(2,), (4,)])[0]
    ref = run_torch(lambda p: torch.optim.Adam(p, lr=1e-2), 25)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-10)
