"""``LearnedOptimizer`` as a real ``torch.optim.Optimizer`` on models it never saw.

The "training works" tests use a θ written by hand for the per-parameter MLP optimizer
(Metz et al. 2019) whose update is ``0.001 · c · g / RMS_tensor(g)`` — per-tensor
normalized gradient descent, a descent direction — so the loss must go down; the
hierarchical optimizer gets the same θ embedded with zero context, plus a random context.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from metalab.core.errors import ConfigError
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.mlp_lopt import MLPLOptShapes
from metalab.lopt.optimizer import LearnedOptimizer
from metalab.lopt.weights import DEFAULT_WEIGHTS_PATH, save_weights
from tests.lopt.optim_helpers import (
    cancer,
    gradient_descent_theta,
    hier_opt,
    mlp,
    mlp_opt,
    one_step,
    round_trip,
    train,
)


@pytest.mark.parametrize("arch", ["mlp", "hierarchical"])
def test_trains_an_unseen_mlp_on_breast_cancer(arch):
    x, y = cancer()
    theta = gradient_descent_theta()
    if arch == "hierarchical":
        theta = HierarchicalArch().theta_from_mlp(theta)
    model = mlp()
    losses = train(model, LearnedOptimizer(model.parameters(), theta, arch), x, y, 60)
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
    losses = train(model, LearnedOptimizer(model.parameters(), theta, arch), x, y, 40, val=2.0)
    assert losses[-1] < 0.5 * losses[0]


def test_float64_params_train_and_keep_dtype():
    x, y = cancer(torch.float64)
    model = mlp(torch.float64)
    opt = LearnedOptimizer(model.parameters(), gradient_descent_theta(), "mlp")
    losses = train(model, opt, x, y, 30)
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_validation_loss_is_fed_to_the_hierarchical_optimizer():
    x, y = cancer()
    finals = []
    for val in (0.1, 10.0):
        model = mlp()
        opt = hier_opt(model.parameters())
        opt.observe_validation_loss(torch.tensor(val))
        train(model, opt, x, y, 2)
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert not torch.allclose(finals[0], finals[1])


def test_params_without_grad_are_skipped_and_groups_work():
    x, y = cancer()
    model = mlp()
    frozen = nn.Parameter(torch.ones(3))  # never gets a gradient
    first, second = model[0].parameters(), model[2].parameters()
    opt = LearnedOptimizer(
        [{"params": [*first, frozen]}, {"params": list(second)}],
        gradient_descent_theta(),
        "mlp",
    )
    before = [p.detach().clone() for p in model.parameters()]
    losses = train(model, opt, x, y, 5)
    assert losses[-1] < losses[0]
    assert torch.equal(frozen, torch.ones(3)) and frozen not in opt.state
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    model[2].weight.requires_grad_(False)
    model[2].weight.grad = None
    frozen_now = model[2].weight.detach().clone()
    train(model, opt, x, y, 2)
    assert torch.equal(model[2].weight, frozen_now)
    assert len(opt.state_dict()["param_groups"]) == 2


def test_step_without_closure_and_loss():
    """Fine for an arch that ignores the loss; refused for one that conditions on it."""
    x, y = cancer()
    model = mlp()
    opt = mlp_opt(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        assert opt.step() is None
    assert all(torch.isfinite(p).all() for p in model.parameters())
    opt = hier_opt(model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match="conditions on the training loss") as err:
        opt.step()
    assert "step(loss=...)" in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf])
@pytest.mark.parametrize("make", [hier_opt, mlp_opt], ids=["hierarchical", "mlp"])
def test_non_finite_float_loss_is_refused(make, bad):
    """As ``val_loss`` is: checking a Python number costs nothing."""
    x, y = cancer()
    model = mlp()
    opt = make(model.parameters())
    one_step(model, opt, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match="training loss must be a finite number") as err:
        opt.step(loss=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="training loss must be a finite number"):
        opt.step(lambda: bad)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_non_finite_tensor_loss_does_not_poison_the_hierarchical_optimizer():
    """Used to make every parameter NaN within 3 steps; masked in the arch (no sync)."""
    x, y = cancer()
    model = mlp()
    opt = hier_opt(model.parameters())
    one_step(model, opt, x, y)
    for bad in (float("nan"), float("inf"), float("nan")):
        one_step(model, opt, x, y, loss=torch.tensor(bad))
        assert all(torch.isfinite(p).all() for p in model.parameters())
    losses = [float(one_step(model, opt, x, y).detach()) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_weights_from_a_file(tmp_path: Path):
    path = save_weights(tmp_path / "w.pt", gradient_descent_theta(), arch="mlp")
    x, y = cancer()
    model = mlp()
    losses = train(model, LearnedOptimizer(model.parameters(), weights=path), x, y, 20)
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ConfigError, match="for arch 'mlp', not 'hierarchical'"):
        LearnedOptimizer(model.parameters(), weights=path, arch="hierarchical")


def test_bad_weights_are_clear_errors(tmp_path: Path):
    params = mlp().parameters()
    with pytest.raises(ConfigError, match="does not exist"):
        LearnedOptimizer(params, weights=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="needs arch="):
        LearnedOptimizer(params, weights=torch.zeros(1762))
    with pytest.raises(ConfigError, match="needs 1762"):
        LearnedOptimizer(params, weights=torch.zeros(10), arch="mlp")


@pytest.mark.skipif(DEFAULT_WEIGHTS_PATH.is_file(), reason="the default weights exist")
def test_missing_default_says_how_to_produce_it():
    with pytest.raises(ConfigError, match="meta-train"):
        LearnedOptimizer(mlp().parameters())


@pytest.mark.skipif(not DEFAULT_WEIGHTS_PATH.is_file(), reason="no default weights yet")
def test_default_weights_train_an_unseen_model():
    x, y = cancer()
    model = mlp()
    losses = train(model, LearnedOptimizer(model.parameters()), x, y, 100, val=None)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, y = cancer()
    cpu_model = mlp()
    gpu_model = copy.deepcopy(cpu_model).to("cuda")
    cpu_losses = train(cpu_model, hier_opt(cpu_model.parameters()), x, y, 5, val=0.3)
    gpu_opt = hier_opt(gpu_model.parameters())
    gpu_losses = train(gpu_model, gpu_opt, x.to("cuda"), y.to("cuda"), 5, val=0.3)
    assert all(p.is_cuda for p in gpu_model.parameters())
    assert all(v.is_cuda for s in gpu_opt.state.values() for k, v in s.items() if k != "step")
    torch.testing.assert_close(
        torch.tensor(gpu_losses), torch.tensor(cpu_losses), rtol=1e-4, atol=1e-5
    )
    for p, q in zip(cpu_model.parameters(), gpu_model.parameters(), strict=True):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-4, atol=1e-5)


def test_a_loss_that_is_not_one_number_is_refused():
    x, y = cancer()
    model = mlp()
    opt = hier_opt(model.parameters())
    opt.zero_grad()
    per_example = F.cross_entropy(model(x), y, reduction="none")
    per_example.mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match=r"loss must be one number.*569"):
        opt.step(loss=per_example)
    with pytest.raises(ConfigError, match="loss must be one number"):
        opt.step(lambda: per_example.detach())
    with pytest.raises(ConfigError, match="validation loss must be one number"):
        opt.observe_validation_loss(torch.ones(2))
    with pytest.raises(ConfigError, match="loss must be one number"):
        opt.step(loss=torch.ones(0))
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    opt.step(loss=per_example.mean().reshape(1, 1))  # one number in any shape is fine


def test_arch_and_weights_mismatches_are_named(tmp_path: Path):
    from metalab.core.errors import UnknownNameError
    from metalab.lopt.arch_registry import make_arch
    from metalab.lopt.baselines import AdamArch, SGDMArch

    params = list(mlp().parameters())
    adam = save_weights(tmp_path / "adam.pt", AdamArch.theta(), arch="adam")
    with pytest.raises(ConfigError, match="for arch 'adam', not 'sgdm'"):
        LearnedOptimizer(params, weights=adam, arch=make_arch("sgdm"))
    sgdm = save_weights(tmp_path / "sgdm.pt", SGDMArch.theta(), arch="sgdm")

    class OtherSGDM(SGDMArch):  # same θ size, another optimizer
        name = "other-sgdm"

    with pytest.raises(ConfigError, match="for arch 'sgdm', not 'other-sgdm'"):
        LearnedOptimizer(params, weights=sgdm, arch=OtherSGDM())
    with pytest.raises(UnknownNameError, match="unknown optimizer architecture 'nosuch'"):
        LearnedOptimizer(params, arch="nosuch")
    with pytest.raises(UnknownNameError, match="did you mean adam"):
        LearnedOptimizer(params, weights=AdamArch.theta(), arch="adamm")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="non-finite"):
            LearnedOptimizer(params, weights=torch.full((4,), bad), arch="adam")
    with pytest.raises(ConfigError, match="arch_options"):
        LearnedOptimizer(params, weights=sgdm, arch_options={"lr": 0.5})
    with pytest.raises(ConfigError, match="weights must be"):
        LearnedOptimizer(params, weights=[0.1, 0.2], arch="sgdm")  # type: ignore[arg-type]
    assert LearnedOptimizer(params, weights=sgdm, arch=SGDMArch()).arch.name == "sgdm"


def test_step_lr_scheduler_drives_the_update_multiplier():
    x, y = cancer()
    models = [mlp(), mlp()]
    opts = [mlp_opt(m.parameters()) for m in models]
    scheduler = torch.optim.lr_scheduler.StepLR(opts[1], step_size=1, gamma=0.5)
    for model, opt in zip(models, opts, strict=True):
        one_step(model, opt, x, y)
    scheduler.step()
    assert opts[1].param_groups[0]["lr"] == 0.5
    before = [p.detach().clone() for p in models[0].parameters()]
    for model, opt in zip(models, opts, strict=True):
        one_step(model, opt, x, y)
    for b, full, half in zip(before, models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(half - b, 0.5 * (full - b), rtol=1e-4, atol=1e-7)
    assert float((models[0][0].weight.detach() - before[0]).abs().max()) > 1e-3
    # the multiplier (and the scheduler's initial_lr) survive a state_dict round trip
    clone = copy.deepcopy(models[1])
    clone_opt = mlp_opt(clone.parameters())
    clone_opt.load_state_dict(round_trip(opts[1]))
    assert clone_opt.param_groups[0]["lr"] == 0.5
    assert clone_opt.param_groups[0]["initial_lr"] == 1.0
    one_step(models[1], opts[1], x, y)
    one_step(clone, clone_opt, x, y)
    for p, q in zip(models[1].parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lr_option_and_bad_values():
    x, y = cancer()
    models = [mlp(), mlp()]
    halved = LearnedOptimizer(models[0].parameters(), gradient_descent_theta(), "mlp", lr=0.5)
    frozen = LearnedOptimizer(models[1].parameters(), gradient_descent_theta(), "mlp", lr=0.0)
    start = [p.detach().clone() for p in models[1].parameters()]
    one_step(models[0], halved, x, y)
    one_step(models[1], frozen, x, y)
    assert all(torch.equal(a, b) for a, b in zip(start, models[1].parameters(), strict=True))
    for bad in (-1.0, float("nan"), "big", True):
        with pytest.raises(ConfigError, match="lr"):
            LearnedOptimizer(mlp().parameters(), gradient_descent_theta(), "mlp", lr=bad)
    halved.param_groups[0]["lr"] = float("inf")
    with pytest.raises(ConfigError, match="lr"):
        one_step(models[0], halved, x, y)


def _manual_default_run(model, x, y, steps):
    """The default optimizer's arch called by hand on the flat parameters (no wrapper)."""
    from metalab.lopt.mlp_lopt import Segments
    from metalab.lopt.weights import load_weights

    weights = load_weights()
    arch = weights.build_arch()
    theta = weights.theta.reshape(1, -1)
    params = list(model.parameters())
    segments = Segments.from_shapes([tuple(p.shape) for p in params], torch.device("cpu"))
    flat = torch.cat([p.detach().reshape(-1) for p in params]).unsqueeze(0)
    state = arch.init_state(flat, segments)
    for t in range(steps):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads = torch.cat([p.grad.reshape(-1) for p in params]).unsqueeze(0)
        flat, state = arch.step(theta, flat, grads, state, torch.tensor([float(t)]), segments)
        with torch.no_grad():
            for p, piece in zip(params, flat[0].split([p.numel() for p in params]), strict=True):
                p.copy_(piece.view_as(p))


@pytest.mark.skipif(not DEFAULT_WEIGHTS_PATH.is_file(), reason="no default weights yet")
def test_default_optimizer_at_lr_one_is_bit_identical_to_its_arch():
    x, y = cancer()
    models = [mlp(), mlp()]
    opt = LearnedOptimizer(models[0].parameters())
    for _ in range(5):
        one_step(models[0], opt, x, y)
    _manual_default_run(models[1], x, y, 5)
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_parameter_stepped_alone_later_uses_the_groups_time():
    """Time features follow training time: a late parameter stepped alone continues the
    group's step count instead of restarting the time features at 0."""
    first, late = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    opt = LearnedOptimizer([first, late], gradient_descent_theta(), "mlp")
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        first.sum().backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    late.sum().backward()
    opt.step()
    assert float(opt.state[late]["step"]) == 6
    assert float(opt.state[first]["step"]) == 5


def test_a_group_on_two_devices_keeps_one_clock():
    """Parameters of one group on two devices share the group's training time: one first
    stepped late on the other device continues it (the meta device stands in for a GPU)."""
    here, there = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2, device="meta"))
    opt = LearnedOptimizer([here, there], gradient_descent_theta(), "mlp")
    for _ in range(3):
        here.grad = torch.ones(3)
        opt.step()
    here.grad, there.grad = None, torch.ones(2, device="meta")
    opt.step()
    assert float(opt.state[there]["step"]) == 4
    here.grad = torch.ones(3)
    opt.step()  # both devices stepped together: both at the same time
    assert float(opt.state[here]["step"]) == float(opt.state[there]["step"]) == 5


def test_a_group_lr_is_checked_when_the_group_is_added():
    model = mlp()
    with pytest.raises(ConfigError, match="lr"):
        LearnedOptimizer(
            [{"params": model[0].parameters(), "lr": -0.5}], gradient_descent_theta(), "mlp"
        )
    opt = LearnedOptimizer(model[0].parameters(), gradient_descent_theta(), "mlp", lr=0.5)
    opt.add_param_group({"params": model[2].parameters(), "lr": 2.0})
    assert [g["lr"] for g in opt.param_groups] == [0.5, 2.0]


def test_a_validation_loss_that_requires_grad_is_read_without_a_warning():
    model = mlp()
    opt = mlp_opt(model.parameters())
    loss = (model[0].weight ** 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.observe_validation_loss(loss)
    assert opt.param_groups[0]["val_loss"] == float(loss.detach())
