"""``LearnedOptimizer`` param-group options: decoupled weight decay, refused unknown options,
and the error for an architecture that ships no packaged weights."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from metalab.core.errors import ConfigError
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.optimizer import LearnedOptimizer
from metalab.lopt.weights import DEFAULT_WEIGHTS_PATH
from tests.lopt.optim_helpers import (
    cancer,
    gradient_descent_theta,
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
        models[1].parameters(), gradient_descent_theta(), "mlp", lr=0.7, weight_decay=0.03
    )
    before = [p.detach().clone() for p in models[0].parameters()]
    one_step(models[0], plain, x, y)
    one_step(models[1], decay, x, y)
    for b, p, q in zip(before, models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(q, p - 0.7 * 0.03 * b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(p, b)  # the learned update did move the parameters
    assert decay.defaults["weight_decay"] == decay.param_groups[0]["weight_decay"] == 0.03


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


@pytest.mark.parametrize("key", ["momentum", "betas", "decay", "weight_decay_"])
def test_unknown_group_options_are_refused(key):
    model = mlp()
    with pytest.raises(ConfigError, match=rf"no param-group option '{key}'; a group may set") as e:
        mlp_opt([{"params": model.parameters(), key: 0.9}])
    assert "\n" not in str(e.value) and "lr, weight_decay, val_loss" in str(e.value)
    opt = mlp_opt(model[0].parameters())
    with pytest.raises(ConfigError, match=f"'{key}'"):
        opt.add_param_group({"params": model[2].parameters(), key: 0.9})
    assert len(opt.param_groups) == 1


def test_scheduler_bookkeeping_keys_and_named_parameters_are_accepted():
    """Groups copied from a scheduled optimizer carry ``initial_lr`` etc.; torch adds
    ``param_names`` for named parameters. Neither configures the optimizer."""
    model = mlp()
    opt = mlp_opt([{"params": model[0].named_parameters(), "initial_lr": 1.0, "max_lr": 2.0}])
    opt.add_param_group({"params": list(model[2].named_parameters()), "lr": 0.5})
    assert opt.param_groups[1]["param_names"] == ["weight", "bias"]
    assert opt.param_groups[0]["initial_lr"] == 1.0


def test_the_state_dict_of_another_optimizer_class_is_refused():
    model = mlp()
    adamw = torch.optim.AdamW(model.parameters(), weight_decay=0.01)
    opt = mlp_opt(model.parameters())
    with pytest.raises(ConfigError, match="no param-group option 'amsgrad'"):
        opt.load_state_dict(adamw.state_dict())
    assert "betas" not in opt.param_groups[0]  # nothing changed


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
