"""``LearnedOptimizer.state_dict``/``load_state_dict``: round trips, refusals, old layouts."""

from __future__ import annotations

import copy
import io
from pathlib import Path

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
    assert saved["lopt_arch"] == {"name": "hierarchical", "theta_dim": 9867, "format": 2}
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


FIXTURE = Path(__file__).parent / "data" / "legacy_6828924.pt"


def _fixture_case(name):
    """A case saved by the code of commit 6828924 (``data/make_legacy_6828924.py``)."""
    return torch.load(FIXTURE, weights_only=True)["cases"][name]


def assert_same_up_to_rounding(got, expected):
    """The fixture was computed on another CPU: vectorized kernels may round the last bit
    differently (measured: <= 3e-8 absolute, 1.4e-7 relative), any change of the rule is
    orders of magnitude larger."""
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


def _fixture_opt(name, params):
    groups = [{"params": params[0::2]}, {"params": params[1::2]}]  # weights, biases
    if name == "adam":
        return LearnedOptimizer(groups, adam_theta(), "adam")
    if name == "hierarchical":
        return hier_opt(groups)
    return LearnedOptimizer(groups)


@pytest.mark.parametrize("name", ["mlp_idiom", "adam", "hierarchical"])
def test_a_state_dict_saved_by_the_old_code_continues_identically(name):
    """The fixture holds the old code's state after 3 steps (batched ``[1, n, ...]`` layout,
    no format number) and the parameters it produced in the next 3 steps from the stored
    gradients and losses; the new code, resumed from that state, must produce the same."""
    case = _fixture_case(name)
    saved = case["optimizer"]
    assert "format" not in saved["lopt_arch"] and saved["state"][0]["step"] == 3
    params = [torch.nn.Parameter(p.clone()) for p in case["params"]]
    opt = _fixture_opt(name, params)
    if name == "mlp_idiom":  # groups kept weight_decay=0.1 then, but it was ignored
        saved["param_groups"][0]["weight_decay"] = 0
    opt.load_state_dict(saved)
    assert [g["weight_decay"] for g in opt.param_groups] == [0, 0.0]
    for grads, loss, expected in zip(case["grads"], case["losses"], case["next"], strict=True):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step(loss=loss)
        for p, q in zip(params, expected, strict=True):
            assert_same_up_to_rounding(p.detach(), q)
    assert opt.state_dict()["lopt_arch"]["format"] == 2


def test_an_old_state_dict_whose_groups_set_weight_decay_is_refused():
    """The AdamW idiom's ``weight_decay=0.1`` was kept and ignored before weight decay
    existed; loading it as is would start removing 10% of the weights per step."""
    case = _fixture_case("mlp_idiom")
    params = [torch.nn.Parameter(p.clone()) for p in case["params"]]
    opt = _fixture_opt("mlp_idiom", params)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ConfigError) as err:
        opt.load_state_dict(case["optimizer"])
    message = str(err.value)
    assert "\n" not in message and "saved when LearnedOptimizer ignored weight_decay" in message
    assert "param group 0 has weight_decay=0.1" in message
    assert "['weight_decay'] = 0" in message
    assert not opt.state and opt.param_groups[0]["weight_decay"] == 0.0
    assert opt.state_dict()["param_groups"] == before["param_groups"]


def test_old_groups_without_an_option_take_the_value_they_ran_with():
    """A group saved before ``lr``/``weight_decay`` existed ran at lr 1 without decay; the
    constructor's defaults (here lr 0.5, decay 0.001) must not change the resumed run."""
    case = _fixture_case("adam")
    saved = case["optimizer"]
    for group in saved["param_groups"]:
        del group["lr"]
    params = [torch.nn.Parameter(p.clone()) for p in case["params"]]
    groups = [{"params": params[0::2]}, {"params": params[1::2]}]
    opt = LearnedOptimizer(groups, adam_theta(), "adam", lr=0.5, weight_decay=0.001)
    opt.load_state_dict(saved)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(1.0, 0.0)] * 2
    for p, g in zip(params, case["grads"][0], strict=True):
        p.grad = g.clone()
    opt.step()
    for p, q in zip(params, case["next"][0], strict=True):
        assert_same_up_to_rounding(p, q)


def test_the_format_number_is_checked():
    model = mlp()
    opt = mlp_opt(model.parameters())
    saved = round_trip(opt)
    assert saved["lopt_arch"] == {"name": "mlp", "theta_dim": opt.arch.theta_dim, "format": 2}
    newer = copy.deepcopy(saved)
    newer["lopt_arch"]["format"] = 3
    with pytest.raises(ConfigError, match="format 3, from a newer metalab; this one reads"):
        opt.load_state_dict(newer)
    for bad in (0, "2", 2.0, True):
        damaged = copy.deepcopy(saved)
        damaged["lopt_arch"]["format"] = bad
        with pytest.raises(ConfigError, match="damaged optimizer state_dict"):
            opt.load_state_dict(damaged)
    opt.param_groups[0]["weight_decay"] = 0.005  # format 2: a saved decay is applied
    clone_opt = mlp_opt(copy.deepcopy(model).parameters())
    clone_opt.load_state_dict(round_trip(opt))
    assert clone_opt.param_groups[0]["weight_decay"] == 0.005


def test_carry_rules_name_every_state_entry_of_the_builtin_archs():
    """``state_carry_rules``: an int for parameter-shaped moments (the gradient's power),
    ``"copy"`` for per-tensor and shared state — what a tool that grows parameters needs."""
    x, y = cancer()
    per_tensor = ["lstm_h", "lstm_c", "train_init", "train_ema", "val_init", "train_seen"]
    expected = {
        "mlp": {"step": "copy", "lopt.moments": 1},
        "adam": {"step": "copy", "lopt.m": 1, "lopt.v": 2, "lopt.count": "copy"},
        "hierarchical": {
            "step": "copy",
            "lopt.moments": 1,
            **{f"lopt.{key}": "copy" for key in [*per_tensor, "val_seen"]},
        },
    }
    for make in (mlp_opt, hier_opt, lambda p: LearnedOptimizer(p, adam_theta(), "adam")):
        model = mlp()
        opt = make(model.parameters())
        one_step(model, opt, x, y, loss=torch.tensor(0.5))
        rules = opt.state_carry_rules
        assert set(rules) == set(opt.state[model[0].weight])
        assert rules == expected[opt.arch.name]
        for p in model.parameters():
            for key, rule in rules.items():
                if isinstance(rule, int):
                    assert opt.state[p][key].shape[: p.dim()] == p.shape
    assert hier_opt(mlp().parameters()).state_carry_rules["lopt.lstm_h"] == "copy"
