"""``LearnedOptimizer`` param-group options: decoupled weight decay (its warning and limit),
refused options of other optimizers, user metadata in groups, ``val_loss``, and the error
for an architecture that ships no packaged weights."""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
from torch import nn

from metalab.core.errors import ConfigError
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.optimizer import LearnedOptimizer
from metalab.lopt.optimizer_args import FOREIGN_OPTIONS
from metalab.lopt.weights import DEFAULT_WEIGHTS_PATH
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


def test_weight_decay_shrinks_parameters_with_zero_gradients():
    """With zero gradients the hand-written θ makes no learned update, so each step only
    decays: ``p ← p · (1 − lr · weight_decay)``."""
    decayed, kept = nn.Parameter(torch.linspace(-1, 1, 6)), nn.Parameter(torch.ones(3))
    start = decayed.detach().clone()
    with pytest.warns(UserWarning, match="removes 10% of each parameter per step"):
        opt = LearnedOptimizer(
            [{"params": [decayed], "weight_decay": 0.1}, {"params": [kept]}],
            gradient_descent_theta(),
            "mlp",
            lr=0.5,
        )
    for _ in range(3):
        decayed.grad, kept.grad = torch.zeros(6), torch.zeros(3)
        opt.step()
    torch.testing.assert_close(decayed.detach(), start * (1 - 0.5 * 0.1) ** 3)
    assert torch.equal(kept.detach(), torch.ones(3))  # weight_decay defaults to 0
    decayed.grad = None
    before = decayed.detach().clone()
    opt.step()
    assert torch.equal(decayed.detach(), before)  # no gradient: no step, no decay


def test_weight_decay_is_decoupled_from_the_learned_update():
    """One step with decay = the same step without it, minus ``lr · wd · p_before``."""
    x, y = cancer()
    models = [mlp(), mlp()]
    plain = LearnedOptimizer(models[0].parameters(), gradient_descent_theta(), "mlp", lr=0.7)
    decay = LearnedOptimizer(
        models[1].parameters(), gradient_descent_theta(), "mlp", lr=0.7, weight_decay=0.008
    )
    before = [p.detach().clone() for p in models[0].parameters()]
    one_step(models[0], plain, x, y)
    one_step(models[1], decay, x, y)
    for b, p, q in zip(before, models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(q, p - 0.7 * 0.008 * b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(p, b)  # the learned update did move the parameters
    assert decay.defaults["weight_decay"] == decay.param_groups[0]["weight_decay"] == 0.008


def test_weight_decay_round_trips_and_bad_values_are_refused():
    x, y = cancer()
    model = mlp()
    opt = LearnedOptimizer(model.parameters(), gradient_descent_theta(), "mlp", weight_decay=0.01)
    train(model, opt, x, y, 2)
    clone = copy.deepcopy(model)
    clone_opt = mlp_opt(clone.parameters())  # weight_decay 0 until the state dict says 0.01
    clone_opt.load_state_dict(round_trip(opt))
    assert clone_opt.param_groups[0]["weight_decay"] == 0.01
    assert train(model, opt, x, y, 2) == train(clone, clone_opt, x, y, 2)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)
    for bad in (-0.1, float("nan"), "0.1", True):
        with pytest.raises(ConfigError, match=r"weight_decay .* must be a finite number >= 0"):
            mlp_opt([{"params": mlp().parameters(), "weight_decay": bad}])
    opt.param_groups[0]["weight_decay"] = float("inf")
    with pytest.raises(ConfigError, match="weight_decay"):
        one_step(model, opt, x, y)


def test_the_adamw_grouping_idiom_warns_once_with_the_conversion():
    """``{"weight_decay": 0.1}`` on the weights (AdamW's idiom) removes 10% per step here."""
    model = mlp()
    idiom = [
        {"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},
        {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = LearnedOptimizer(idiom, gradient_descent_theta(), "mlp")
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "weight_decay": 0.5})
        opt.param_groups[1]["weight_decay"] = 0.2
        one_step(model, opt, *cancer())
    assert len(caught) == 1 and caught[0].category is UserWarning
    message = str(caught[0].message)
    assert "weight_decay=0.1 removes 10% of each parameter per step at lr 1" in message
    assert "wd_adamw * lr_adamw" in message and "\n" not in message
    assert caught[0].filename == __file__  # points at the caller, not at torch or metalab
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a small decay says nothing
        opt = mlp_opt([{"params": mlp().parameters(), "weight_decay": 0.01}])
    opt.param_groups[0]["weight_decay"] = 0.02  # set after construction: warns at step
    with pytest.warns(UserWarning, match="removes 2%") as record:
        opt.step()
    assert record[0].filename == __file__


@pytest.mark.parametrize(
    "make",
    [
        lambda p: LearnedOptimizer(p, gradient_descent_theta(), "mlp", lr=2, weight_decay=0.5),
        lambda p: mlp_opt([{"params": p, "weight_decay": 1.0}]),
        lambda p: mlp_opt([{"params": p, "lr": 4.0, "weight_decay": 0.3}]),
        lambda p: mlp_opt(p[:1]).add_param_group({"params": p[1:], "weight_decay": 1.5}),
    ],
)
def test_lr_times_weight_decay_of_one_or_more_is_refused(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match=r"lr \* weight_decay = .* >= 1 would zero") as e:
            make(list(mlp().parameters()))
    assert "\n" not in str(e.value) and "fraction removed per step at lr 1" in str(e.value)


def test_a_scheduler_raising_lr_past_the_decay_limit_fails_at_step_before_any_change():
    x, y = cancer()
    model = mlp()
    opt = LearnedOptimizer(
        model.parameters(), gradient_descent_theta(), "mlp", lr=0.5, weight_decay=0.005
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 + 500 * step)
    one_step(model, opt, x, y)
    sched.step()  # lr 0.5 · 501 = 250.5; 250.5 · 0.005 >= 1
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match=r"lr \* weight_decay = 250.5 \* 0.005 >= 1"):
        one_step(model, opt, x, y)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_the_refused_options_are_other_torch_optimizers_options():
    named = {"momentum", "dampening", "nesterov", "betas", "eps", "amsgrad", "alpha"}
    named |= {"centered", "rho", "lr_decay", "initial_accumulator_value", "lambd", "t0"}
    named |= {"max_iter", "history_size", "line_search_fn", "foreach", "fused", "capturable"}
    named |= {"differentiable", "maximize", "decoupled_weight_decay", "momentum_decay"}
    assert named <= FOREIGN_OPTIONS
    assert not FOREIGN_OPTIONS & {"params", "lr", "weight_decay", "val_loss", "name"}
    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop, torch.optim.LBFGS):
        assert set(cls([nn.Parameter(torch.ones(1))]).defaults) - {"lr", "weight_decay"} <= (
            FOREIGN_OPTIONS
        )


@pytest.mark.parametrize("key", ["momentum", "betas", "nesterov", "foreach"])
def test_options_of_other_optimizers_are_refused_when_added_or_set(key):
    x, y = cancer()
    model = mlp()
    with pytest.raises(ConfigError, match=rf"no param-group option '{key}' \(an option of") as e:
        mlp_opt([{"params": model.parameters(), key: 0.9}])
    assert "\n" not in str(e.value) and "a group may set lr, weight_decay, val_loss" in str(e.value)
    opt = mlp_opt(model[0].parameters())
    with pytest.raises(ConfigError, match=f"'{key}'"):
        opt.add_param_group({"params": model[2].parameters(), key: 0.9})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": model[2].parameters()})
    one_step(model, opt, x, y)
    opt.param_groups[1][key] = 0.9  # set after construction: refused at the next step
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match=f"'{key}'"):
        one_step(model, opt, x, y)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_other_keys_are_the_users_metadata_and_survive_a_round_trip():
    """Torch optimizers keep unknown group keys; a ``name`` tag (set at construction or
    afterwards), a scheduler's ``initial_lr`` and torch's ``param_names`` are kept here too."""
    x, y = cancer()
    model = mlp()
    opt = mlp_opt([{"params": model[0].named_parameters(), "name": "body", "initial_lr": 1.0}])
    opt.add_param_group({"params": list(model[2].named_parameters()), "lr": 0.5})
    opt.param_groups[1]["name"] = "head"
    train(model, opt, x, y, 2)
    assert opt.param_groups[1]["param_names"] == ["weight", "bias"]
    clone = copy.deepcopy(model)
    clone_opt = mlp_opt([{"params": clone[0].parameters()}, {"params": clone[2].parameters()}])
    clone_opt.load_state_dict(round_trip(opt))
    assert [g["name"] for g in clone_opt.param_groups] == ["body", "head"]
    assert train(model, opt, x, y, 2) == train(clone, clone_opt, x, y, 2)
    copied = copy.deepcopy(clone_opt)  # torch's __setstate__ adds defaults["differentiable"]
    copied.add_param_group({"params": [("extra", nn.Parameter(torch.ones(2)))]})
    assert "differentiable" not in copied.param_groups[-1]
    twin, twin_opt = copy.deepcopy((clone, clone_opt))  # it lost the arch and θ before
    assert train(clone, clone_opt, x, y, 2) == train(twin, twin_opt, x, y, 2)


def test_the_state_dict_of_another_optimizer_class_is_refused():
    model = mlp()
    adamw = torch.optim.AdamW(model.parameters(), weight_decay=0.01)
    opt = mlp_opt(model.parameters())
    with pytest.raises(ConfigError, match="no param-group option 'amsgrad'"):
        opt.load_state_dict(adamw.state_dict())
    assert "betas" not in opt.param_groups[0]  # nothing changed


@pytest.mark.parametrize("bad", ["oops", float("nan"), float("inf"), torch.ones(2), True])
def test_a_val_loss_that_is_not_a_finite_number_is_refused(bad):
    x, y = cancer()
    model = mlp()
    with pytest.raises(ConfigError, match="val_loss must be None or a finite number"):
        mlp_opt([{"params": model.parameters(), "val_loss": bad}])
    opt = mlp_opt(model.parameters())
    opt.param_groups[0]["val_loss"] = bad
    with pytest.raises(ConfigError, match="val_loss must be None or a finite number"):
        one_step(model, opt, x, y)
    saved = round_trip(mlp_opt(model.parameters()))
    saved["param_groups"][0]["val_loss"] = bad
    with pytest.raises(ConfigError, match="val_loss must be None or a finite number"):
        mlp_opt(model.parameters()).load_state_dict(saved)
    opt.param_groups[0]["val_loss"] = torch.tensor(0.25)  # one number: fine
    one_step(model, opt, x, y, loss=torch.tensor(0.5))


def test_a_non_finite_observed_validation_loss_is_refused():
    opt = hier_opt(mlp().parameters())
    with pytest.raises(ConfigError, match="val_loss must be None or a finite number, got nan"):
        opt.observe_validation_loss(float("nan"))
    assert opt.param_groups[0]["val_loss"] is None


@pytest.mark.skipif(not DEFAULT_WEIGHTS_PATH.is_file(), reason="no default weights yet")
@pytest.mark.parametrize("arch", ["hierarchical", HierarchicalArch()], ids=["name", "object"])
def test_an_arch_without_packaged_weights_says_how_to_get_them(arch):
    from metalab.lopt.cli_meta_train import meta_train

    with pytest.raises(ConfigError) as err:
        LearnedOptimizer(mlp().parameters(), arch=arch)
    message = str(err.value)
    assert "only the 'mlp' architecture ships packaged weights" in message
    assert "`metalab lopt meta-train --arch hierarchical --save hierarchical.pt`" in message
    assert "weights='hierarchical.pt'" in message and "\n" not in message
    options = {opt for param in meta_train.params for opt in param.opts}
    assert set(re.findall(r"--[a-z-]+", message)) <= options  # the command really parses
