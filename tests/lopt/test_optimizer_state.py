"""``LearnedOptimizer.state_dict``/``load_state_dict``: round trips, refusals, old layouts."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.optimizer import LearnedOptimizer
from tests.lopt.optim_helpers import (
    adam_theta,
    cancer,
    hier_opt,
    mlp,
    mlp_opt,
    one_step,
    round_trip,
    train,
)


def test_state_dict_round_trip_gives_bit_identical_steps():
    x, y = cancer()
    model = mlp()
    opt = hier_opt(model.parameters())
    train(model, opt, x, y, 3, val=0.4)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    clone = copy.deepcopy(model)
    clone_opt = hier_opt(clone.parameters())
    clone_opt.load_state_dict(torch.load(buffer, weights_only=True))
    a = train(model, opt, x, y, 3)
    b = train(clone, clone_opt, x, y, 3)
    assert a == b
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)
    assert clone_opt.param_groups[0]["val_loss"] == 0.4
    assert float(clone_opt.state[next(clone.parameters())]["step"]) == 6


def test_bfloat16_params_round_trip_their_float32_state_exactly():
    """torch's load_state_dict casts state to the parameter's dtype; the learned
    optimizer's state is float32 whatever the parameters, so it must come back float32."""
    x, y = cancer(torch.bfloat16)
    model = mlp(torch.bfloat16)
    opt = mlp_opt(model.parameters())
    train(model, opt, x, y, 3)
    clone = copy.deepcopy(model)
    clone_opt = mlp_opt(clone.parameters())
    clone_opt.load_state_dict(round_trip(opt))
    for p in clone.parameters():
        assert all(v.dtype == torch.float32 for v in clone_opt.state[p].values())
    assert train(model, opt, x, y, 3) == train(clone, clone_opt, x, y, 3)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("legacy", [False, True], ids=["recorded", "legacy"])
def test_state_of_another_arch_is_refused(legacy):
    """mlp state into a hierarchical optimizer was a raw KeyError at step(); the reverse
    was accepted silently. ``legacy``: a state_dict without the arch record."""
    x, y = cancer()
    made = {}
    for name, make in (("mlp", mlp_opt), ("hierarchical", hier_opt)):
        model = mlp()
        made[name] = (model, make(model.parameters()))
        one_step(*made[name], x, y)
    for source, target in (("mlp", "hierarchical"), ("hierarchical", "mlp")):
        saved = round_trip(made[source][1])
        if legacy:
            del saved["lopt_arch"]
        model = mlp()
        opt = mlp_opt(model.parameters()) if target == "mlp" else hier_opt(model.parameters())
        with pytest.raises(ConfigError, match=f"'{source}'|{target!r}") as err:
            opt.load_state_dict(saved)
        assert "\n" not in str(err.value)
        one_step(model, opt, x, y)  # the refused load left the optimizer as it was


def test_state_of_the_same_arch_with_other_options_is_refused():
    x, y = cancer()
    model = mlp()
    opt = hier_opt(model.parameters())
    one_step(model, opt, x, y)
    saved = round_trip(opt)
    small = HierarchicalArch(lstm=8)
    theta = small.init_theta(generator=torch.Generator().manual_seed(0))
    other = LearnedOptimizer(mlp().parameters(), theta, small)
    with pytest.raises(ConfigError, match="9867 weights; this one is 'hierarchical' with 3219"):
        other.load_state_dict(saved)
    del saved["lopt_arch"]
    with pytest.raises(ConfigError, match=r"lopt.lstm_h .* is \(32,\), expected \(8,\)"):
        other.load_state_dict(saved)


def test_legacy_state_dict_without_the_record_still_loads():
    x, y = cancer()
    model = mlp()
    opt = hier_opt(model.parameters())
    train(model, opt, x, y, 2, val=0.4)
    saved = round_trip(opt)
    assert saved["lopt_arch"] == {"name": "hierarchical", "theta_dim": 9867}
    del saved["lopt_arch"]
    for group in saved["param_groups"]:
        del group["lr"]  # saved before the lr multiplier existed
    clone = copy.deepcopy(model)
    clone_opt = hier_opt(clone.parameters())
    clone_opt.load_state_dict(saved)
    assert clone_opt.param_groups[0]["lr"] == 1.0
    assert train(model, opt, x, y, 2) == train(clone, clone_opt, x, y, 2)


def test_legacy_adam_state_with_one_counter_per_group_still_loads():
    """Before per-tensor counts, AdamArch kept a ``[1]`` counter in every parameter's state."""
    x, y = cancer()
    model = mlp()
    opt = LearnedOptimizer(model.parameters(), adam_theta(), "adam")
    one_step(model, opt, x, y)
    saved = round_trip(opt)
    del saved["lopt_arch"]
    for state in saved["state"].values():
        state["lopt.count"] = state["lopt.count"].reshape(1)
    clone = copy.deepcopy(model)
    clone_opt = LearnedOptimizer(clone.parameters(), adam_theta(), "adam")
    clone_opt.load_state_dict(saved)
    one_step(model, opt, x, y)
    one_step(clone, clone_opt, x, y)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


def test_damaged_state_dicts_are_one_line_errors():
    model = mlp()
    opt = mlp_opt(model.parameters())
    x, y = cancer()
    one_step(model, opt, x, y)
    saved = round_trip(opt)
    with pytest.raises(ConfigError, match="not an optimizer state_dict"):
        opt.load_state_dict({"weights": 1})
    bad = copy.deepcopy(saved)
    bad["lopt_arch"] = "mlp"
    with pytest.raises(ConfigError, match="damaged"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(saved)
    bad["state"][0]["lopt.moments"] = torch.zeros(1, 3, 6)
    wrong = r"lopt.moments of a parameter of shape \(16, 30\) is \(1, 3, 6\), expected \(16, 30, 6"
    with pytest.raises(ConfigError, match=wrong):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(saved)
    bad["param_groups"][0]["params"] = bad["param_groups"][0]["params"][:2]
    with pytest.raises(ConfigError, match="parameter"):
        opt.load_state_dict(bad)
    opt.load_state_dict(saved)


def test_a_parameter_never_stepped_but_looked_at_still_round_trips():
    """Reading ``opt.state[p]`` (a logging hook) stores ``{}``; that state_dict must load."""
    x, y = cancer()
    model = mlp()
    opt = mlp_opt(model.parameters())
    model[2].weight.requires_grad_(False)
    one_step(model, opt, x, y)
    assert opt.state[model[2].weight] == {}  # the look that stores an empty state
    clone = copy.deepcopy(model)
    clone_opt = mlp_opt(clone.parameters())
    clone_opt.load_state_dict(round_trip(opt))
    model[2].weight.requires_grad_(True)
    clone[2].weight.requires_grad_(True)
    assert train(model, opt, x, y, 2) == train(clone, clone_opt, x, y, 2)


def _to_batched_layout(state_dict, layout):
    """``state_dict`` with every slice in the layout saved before parameter-shaped state."""
    for state in state_dict["state"].values():
        for key, kind in layout.kinds.items():
            trail = layout.probes[key][2:]
            value = state["lopt." + key]
            if kind == "entry":
                state["lopt." + key] = value.reshape(1, -1, *trail)
            elif kind == "tensor":
                state["lopt." + key] = value.reshape(1, 1, *trail)
    return state_dict


def test_state_is_kept_in_each_parameters_own_layout():
    """Per-entry state is ``[*param.shape, ...]``, so it can be indexed like the parameter
    (what Net2Net's widening needs); per-tensor state drops the batch axes."""
    x, y = cancer()
    adam = "adam", {"lopt.m": (16, 30), "lopt.count": ()}, {"lopt.m": (16,)}
    for name, weight, bias in (
        ("mlp", {"lopt.moments": (16, 30, 6)}, {"lopt.moments": (16, 6)}),
        ("hierarchical", {"lopt.lstm_h": (32,), "lopt.train_ema": (1,)}, {"lopt.lstm_h": (32,)}),
        adam,
    ):
        model = mlp()
        make = {"mlp": mlp_opt, "hierarchical": hier_opt}.get(name)
        opt = (
            make(model.parameters())
            if make
            else LearnedOptimizer(model.parameters(), adam_theta(), name)
        )
        one_step(model, opt, x, y, loss=torch.tensor(0.5))
        for param, expect in ((model[0].weight, weight), (model[0].bias, bias)):
            assert {k: tuple(opt.state[param][k].shape) for k in expect} == expect


def test_state_dicts_in_the_earlier_batched_layout_still_load():
    x, y = cancer()
    for make in (mlp_opt, hier_opt):
        model = mlp()
        opt = make(model.parameters())
        train(model, opt, x, y, 2, val=0.4)
        old = _to_batched_layout(round_trip(opt), opt._state_layout())
        assert tuple(old["state"][0]["lopt.moments"].shape) == (1, 480, 6)
        clone = copy.deepcopy(model)
        clone_opt = make(clone.parameters())
        clone_opt.load_state_dict(old)
        assert tuple(clone_opt.state[clone[0].weight]["lopt.moments"].shape) == (16, 30, 6)
        assert train(model, opt, x, y, 2) == train(clone, clone_opt, x, y, 2)


def test_carry_rules_name_every_state_entry_of_the_builtin_archs():
    """``state_carry_rules``: an int for parameter-shaped moments (the gradient's power),
    ``"copy"`` for per-tensor and shared state — what a tool that grows parameters needs."""
    x, y = cancer()
    expected = {
        "mlp": {"step": "copy", "lopt.moments": 1},
        "adam": {"step": "copy", "lopt.m": 1, "lopt.v": 2, "lopt.count": "copy"},
    }
    for make in (mlp_opt, hier_opt, lambda p: LearnedOptimizer(p, adam_theta(), "adam")):
        model = mlp()
        opt = make(model.parameters())
        one_step(model, opt, x, y, loss=torch.tensor(0.5))
        rules = opt.state_carry_rules
        assert set(rules) == set(opt.state[model[0].weight])
        assert expected.get(opt.arch.name, rules) == rules
        for p in model.parameters():
            for key, rule in rules.items():
                if isinstance(rule, int):
                    assert opt.state[p][key].shape[: p.dim()] == p.shape
    assert hier_opt(mlp().parameters()).state_carry_rules["lopt.lstm_h"] == "copy"
