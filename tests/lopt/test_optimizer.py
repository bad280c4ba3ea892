"""``LearnedOptimizer`` as a real ``torch.optim.Optimizer`` on models it never saw.

The "training works" tests use a θ written by hand for the per-parameter MLP optimizer
(Metz et al. 2019) whose update is ``0.001 · c · g / RMS_tensor(g)`` — per-tensor
normalized gradient descent, a descent direction — so the loss must go down; the
hierarchical optimizer gets the same θ embedded with zero context, plus a random context.
"""

from __future__ import annotations

import copy
import io
import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer, load_digits
from torch import nn

from metalab.core.errors import ConfigError
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.mlp_lopt import MLPLOptShapes
from metalab.lopt.optimizer import LearnedOptimizer
from metalab.lopt.weights import DEFAULT_WEIGHTS_PATH, save_weights


def gradient_descent_theta(c: float = 10.0) -> torch.Tensor:
    """MLP-optimizer weights with ``d = c · g/RMS(g)``, ``m = 0``: normalized gradient descent."""
    shapes = MLPLOptShapes()
    theta = torch.zeros(1, shapes.size)
    w = shapes.unflatten(theta)
    w["w1"][0, 1, 0], w["w1"][0, 1, 1] = 1.0, -1.0  # feature 1 = normalized gradient
    w["w2"][0, 0, 0] = w["w2"][0, 1, 1] = 1.0
    w["w3"][0, 0, 0], w["w3"][0, 1, 0] = c, -c  # d = c·relu(g) − c·relu(−g)
    return theta[0]


def _cancer(dtype=torch.float32):
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=dtype), torch.tensor(y)


def _mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(30, 16), nn.Tanh(), nn.Linear(16, 2)).to(dtype)


def _train(model, opt, x, y, steps, *, val=None):
    losses = []
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(float(opt.step(closure, val_loss=val).detach()))
    return losses


@pytest.mark.parametrize("arch", ["mlp", "hierarchical"])
def test_trains_an_unseen_mlp_on_breast_cancer(arch):
    x, y = _cancer()
    theta = gradient_descent_theta()
    if arch == "hierarchical":
        theta = HierarchicalArch().theta_from_mlp(theta)
    model = _mlp()
    losses = _train(model, LearnedOptimizer(model.parameters(), theta, arch), x, y, 60)
    assert losses[-1] < 0.25 * losses[0]
    assert all(b < a for a, b in itertools.pairwise(losses[:11]))


def test_hierarchical_with_random_context_trains_a_conv_net_on_digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:256] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y[:256])
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10)
    )
    arch = HierarchicalArch(context_scale=0.1)
    theta = arch.init_theta(generator=torch.Generator().manual_seed(0))
    theta[: MLPLOptShapes().size] = gradient_descent_theta(5.0)
    losses = _train(model, LearnedOptimizer(model.parameters(), theta, arch), x, y, 40, val=2.0)
    assert losses[-1] < 0.5 * losses[0]


def test_float64_params_train_and_keep_dtype():
    x, y = _cancer(torch.float64)
    model = _mlp(torch.float64)
    opt = LearnedOptimizer(model.parameters(), gradient_descent_theta(), "mlp")
    losses = _train(model, opt, x, y, 30)
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.dtype == torch.float64 for p in model.parameters())


def _hier_opt(params):
    arch = HierarchicalArch(context_scale=1.0)
    return LearnedOptimizer(
        params, arch.init_theta(generator=torch.Generator().manual_seed(3)), arch
    )


def test_state_dict_round_trip_gives_bit_identical_steps():
    x, y = _cancer()
    model = _mlp()
    opt = _hier_opt(model.parameters())
    _train(model, opt, x, y, 3, val=0.4)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    clone = copy.deepcopy(model)
    clone_opt = _hier_opt(clone.parameters())
    clone_opt.load_state_dict(torch.load(buffer, weights_only=True))
    a = _train(model, opt, x, y, 3)
    b = _train(clone, clone_opt, x, y, 3)
    assert a == b
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)
    assert clone_opt.param_groups[0]["val_loss"] == 0.4
    assert float(clone_opt.state[next(clone.parameters())]["step"]) == 6


def test_validation_loss_is_fed_to_the_hierarchical_optimizer():
    x, y = _cancer()
    finals = []
    for val in (0.1, 10.0):
        model = _mlp()
        opt = _hier_opt(model.parameters())
        opt.observe_validation_loss(torch.tensor(val))
        _train(model, opt, x, y, 2)
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert not torch.allclose(finals[0], finals[1])


def test_params_without_grad_are_skipped_and_groups_work():
    x, y = _cancer()
    model = _mlp()
    frozen = nn.Parameter(torch.ones(3))  # never gets a gradient
    first, second = model[0].parameters(), model[2].parameters()
    opt = LearnedOptimizer(
        [{"params": [*first, frozen]}, {"params": list(second)}],
        gradient_descent_theta(),
        "mlp",
    )
    before = [p.detach().clone() for p in model.parameters()]
    losses = _train(model, opt, x, y, 5)
    assert losses[-1] < losses[0]
    assert torch.equal(frozen, torch.ones(3)) and frozen not in opt.state
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    model[2].weight.requires_grad_(False)
    model[2].weight.grad = None
    frozen_now = model[2].weight.detach().clone()
    _train(model, opt, x, y, 2)
    assert torch.equal(model[2].weight, frozen_now)
    assert len(opt.state_dict()["param_groups"]) == 2


def test_step_without_closure_and_loss():
    x, y = _cancer()
    model = _mlp()
    opt = _hier_opt(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        assert opt.step() is None
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_weights_from_a_file(tmp_path: Path):
    path = save_weights(tmp_path / "w.pt", gradient_descent_theta(), arch="mlp")
    x, y = _cancer()
    model = _mlp()
    losses = _train(model, LearnedOptimizer(model.parameters(), weights=path), x, y, 20)
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ConfigError, match="for arch 'mlp', not 'hierarchical'"):
        LearnedOptimizer(model.parameters(), weights=path, arch="hierarchical")


def test_bad_weights_are_clear_errors(tmp_path: Path):
    params = _mlp().parameters()
    with pytest.raises(ConfigError, match="does not exist"):
        LearnedOptimizer(params, weights=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="needs arch="):
        LearnedOptimizer(params, weights=torch.zeros(1762))
    with pytest.raises(ConfigError, match="needs 1762"):
        LearnedOptimizer(params, weights=torch.zeros(10), arch="mlp")


@pytest.mark.skipif(DEFAULT_WEIGHTS_PATH.is_file(), reason="the default weights exist")
def test_missing_default_says_how_to_produce_it():
    with pytest.raises(ConfigError, match="meta-train"):
        LearnedOptimizer(_mlp().parameters())


@pytest.mark.skipif(not DEFAULT_WEIGHTS_PATH.is_file(), reason="no default weights yet")
def test_default_weights_train_an_unseen_model():
    x, y = _cancer()
    model = _mlp()
    losses = _train(model, LearnedOptimizer(model.parameters()), x, y, 100, val=None)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, y = _cancer()
    cpu_model = _mlp()
    gpu_model = copy.deepcopy(cpu_model).to("cuda")
    cpu_losses = _train(cpu_model, _hier_opt(cpu_model.parameters()), x, y, 5, val=0.3)
    gpu_opt = _hier_opt(gpu_model.parameters())
    gpu_losses = _train(gpu_model, gpu_opt, x.to("cuda"), y.to("cuda"), 5, val=0.3)
    assert all(p.is_cuda for p in gpu_model.parameters())
    assert all(v.is_cuda for s in gpu_opt.state.values() for k, v in s.items() if k != "step")
    torch.testing.assert_close(
        torch.tensor(gpu_losses), torch.tensor(cpu_losses), rtol=1e-4, atol=1e-5
    )
    for p, q in zip(cpu_model.parameters(), gpu_model.parameters(), strict=True):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-4, atol=1e-5)
