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


def test_bfloat16_params_round_trip_their_float32_state_exactly():
    """torch's load_state_dict casts state to the parameter's dtype; the learned
    optimizer's state is float32 whatever the parameters, so it must come back float32."""
    x, y = _cancer(torch.bfloat16)
    model = _mlp(torch.bfloat16)
    opt = _mlp_opt(model.parameters())
    _train(model, opt, x, y, 3)
    clone = copy.deepcopy(model)
    clone_opt = _mlp_opt(clone.parameters())
    clone_opt.load_state_dict(_saved(opt))
    for p in clone.parameters():
        assert all(v.dtype == torch.float32 for v in clone_opt.state[p].values())
    assert _train(model, opt, x, y, 3) == _train(clone, clone_opt, x, y, 3)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


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


def _one_step(model, opt, x, y, **step_kwargs):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step(**step_kwargs)
    return loss


def test_a_loss_that_is_not_one_number_is_refused():
    x, y = _cancer()
    model = _mlp()
    opt = _hier_opt(model.parameters())
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


def _saved(opt):
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _mlp_opt(params):
    return LearnedOptimizer(params, gradient_descent_theta(), "mlp")


@pytest.mark.parametrize("legacy", [False, True], ids=["recorded", "legacy"])
def test_state_of_another_arch_is_refused(legacy):
    """mlp state into a hierarchical optimizer was a raw KeyError at step(); the reverse
    was accepted silently. ``legacy``: a state_dict without the arch record."""
    x, y = _cancer()
    made = {}
    for name, make in (("mlp", _mlp_opt), ("hierarchical", _hier_opt)):
        model = _mlp()
        made[name] = (model, make(model.parameters()))
        _one_step(*made[name], x, y)
    for source, target in (("mlp", "hierarchical"), ("hierarchical", "mlp")):
        saved = _saved(made[source][1])
        if legacy:
            del saved["lopt_arch"]
        model = _mlp()
        opt = _mlp_opt(model.parameters()) if target == "mlp" else _hier_opt(model.parameters())
        with pytest.raises(ConfigError, match=f"'{source}'|{target!r}") as err:
            opt.load_state_dict(saved)
        assert "\n" not in str(err.value)
        _one_step(model, opt, x, y)  # the refused load left the optimizer as it was


def test_state_of_the_same_arch_with_other_options_is_refused():
    x, y = _cancer()
    model = _mlp()
    opt = _hier_opt(model.parameters())
    _one_step(model, opt, x, y)
    saved = _saved(opt)
    small = HierarchicalArch(lstm=8)
    theta = small.init_theta(generator=torch.Generator().manual_seed(0))
    other = LearnedOptimizer(_mlp().parameters(), theta, small)
    with pytest.raises(ConfigError, match="9867 weights; this one is 'hierarchical' with 3219"):
        other.load_state_dict(saved)
    del saved["lopt_arch"]
    with pytest.raises(ConfigError, match=r"lopt.lstm_h .* is \(1, 1, 32\), expected \(1, 1, 8\)"):
        other.load_state_dict(saved)


def test_legacy_state_dict_without_the_record_still_loads():
    x, y = _cancer()
    model = _mlp()
    opt = _hier_opt(model.parameters())
    _train(model, opt, x, y, 2, val=0.4)
    saved = _saved(opt)
    assert saved["lopt_arch"] == {"name": "hierarchical", "theta_dim": 9867}
    del saved["lopt_arch"]
    for group in saved["param_groups"]:
        del group["lr"]  # saved before the lr multiplier existed
    clone = copy.deepcopy(model)
    clone_opt = _hier_opt(clone.parameters())
    clone_opt.load_state_dict(saved)
    assert clone_opt.param_groups[0]["lr"] == 1.0
    assert _train(model, opt, x, y, 2) == _train(clone, clone_opt, x, y, 2)


def test_legacy_adam_state_with_one_counter_per_group_still_loads():
    """Before per-tensor counts, AdamArch kept a ``[1]`` counter in every parameter's state."""
    x, y = _cancer()
    model = _mlp()
    opt = LearnedOptimizer(model.parameters(), _adam_theta(), "adam")
    _one_step(model, opt, x, y)
    saved = _saved(opt)
    del saved["lopt_arch"]
    for state in saved["state"].values():
        state["lopt.count"] = state["lopt.count"].reshape(1)
    clone = copy.deepcopy(model)
    clone_opt = LearnedOptimizer(clone.parameters(), _adam_theta(), "adam")
    clone_opt.load_state_dict(saved)
    _one_step(model, opt, x, y)
    _one_step(clone, clone_opt, x, y)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


def _adam_theta():
    from metalab.lopt.baselines import AdamArch

    return AdamArch.theta(lr=1e-2)


def test_damaged_state_dicts_are_one_line_errors():
    model = _mlp()
    opt = _mlp_opt(model.parameters())
    x, y = _cancer()
    _one_step(model, opt, x, y)
    saved = _saved(opt)
    with pytest.raises(ConfigError, match="not an optimizer state_dict"):
        opt.load_state_dict({"weights": 1})
    bad = copy.deepcopy(saved)
    bad["lopt_arch"] = "mlp"
    with pytest.raises(ConfigError, match="damaged"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(saved)
    bad["state"][0]["lopt.moments"] = torch.zeros(1, 3, 6)
    with pytest.raises(ConfigError, match=r"lopt.moments.*\(1, 3, 6\).*\(1, 480, 6\)"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(saved)
    bad["param_groups"][0]["params"] = bad["param_groups"][0]["params"][:2]
    with pytest.raises(ConfigError, match="parameter"):
        opt.load_state_dict(bad)
    opt.load_state_dict(saved)


def test_arch_and_weights_mismatches_are_named(tmp_path: Path):
    from metalab.core.errors import UnknownNameError
    from metalab.lopt.arch_registry import make_arch
    from metalab.lopt.baselines import AdamArch, SGDMArch

    params = list(_mlp().parameters())
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
    x, y = _cancer()
    models = [_mlp(), _mlp()]
    opts = [_mlp_opt(m.parameters()) for m in models]
    scheduler = torch.optim.lr_scheduler.StepLR(opts[1], step_size=1, gamma=0.5)
    for model, opt in zip(models, opts, strict=True):
        _one_step(model, opt, x, y)
    scheduler.step()
    assert opts[1].param_groups[0]["lr"] == 0.5
    before = [p.detach().clone() for p in models[0].parameters()]
    for model, opt in zip(models, opts, strict=True):
        _one_step(model, opt, x, y)
    for b, full, half in zip(before, models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(half - b, 0.5 * (full - b), rtol=1e-4, atol=1e-7)
    assert float((models[0][0].weight.detach() - before[0]).abs().max()) > 1e-3
    # the multiplier (and the scheduler's initial_lr) survive a state_dict round trip
    clone = copy.deepcopy(models[1])
    clone_opt = _mlp_opt(clone.parameters())
    clone_opt.load_state_dict(_saved(opts[1]))
    assert clone_opt.param_groups[0]["lr"] == 0.5
    assert clone_opt.param_groups[0]["initial_lr"] == 1.0
    _one_step(models[1], opts[1], x, y)
    _one_step(clone, clone_opt, x, y)
    for p, q in zip(models[1].parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lr_option_and_bad_values():
    x, y = _cancer()
    models = [_mlp(), _mlp()]
    halved = LearnedOptimizer(models[0].parameters(), gradient_descent_theta(), "mlp", lr=0.5)
    frozen = LearnedOptimizer(models[1].parameters(), gradient_descent_theta(), "mlp", lr=0.0)
    start = [p.detach().clone() for p in models[1].parameters()]
    _one_step(models[0], halved, x, y)
    _one_step(models[1], frozen, x, y)
    assert all(torch.equal(a, b) for a, b in zip(start, models[1].parameters(), strict=True))
    for bad in (-1.0, float("nan"), "big", True):
        with pytest.raises(ConfigError, match="lr"):
            LearnedOptimizer(_mlp().parameters(), gradient_descent_theta(), "mlp", lr=bad)
    halved.param_groups[0]["lr"] = float("inf")
    with pytest.raises(ConfigError, match="lr"):
        _one_step(models[0], halved, x, y)


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
    x, y = _cancer()
    models = [_mlp(), _mlp()]
    opt = LearnedOptimizer(models[0].parameters())
    for _ in range(5):
        _one_step(models[0], opt, x, y)
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
    model = _mlp()
    with pytest.raises(ConfigError, match="lr"):
        LearnedOptimizer(
            [{"params": model[0].parameters(), "lr": -0.5}], gradient_descent_theta(), "mlp"
        )
    opt = LearnedOptimizer(model[0].parameters(), gradient_descent_theta(), "mlp", lr=0.5)
    opt.add_param_group({"params": model[2].parameters(), "lr": 2.0})
    assert [g["lr"] for g in opt.param_groups] == [0.5, 2.0]


def test_a_parameter_never_stepped_but_looked_at_still_round_trips():
    """Reading ``opt.state[p]`` (a logging hook) stores ``{}``; that state_dict must load."""
    x, y = _cancer()
    model = _mlp()
    opt = _mlp_opt(model.parameters())
    model[2].weight.requires_grad_(False)
    _one_step(model, opt, x, y)
    assert opt.state[model[2].weight] == {}  # the look that stores an empty state
    clone = copy.deepcopy(model)
    clone_opt = _mlp_opt(clone.parameters())
    clone_opt.load_state_dict(_saved(opt))
    model[2].weight.requires_grad_(True)
    clone[2].weight.requires_grad_(True)
    assert _train(model, opt, x, y, 2) == _train(clone, clone_opt, x, y, 2)
