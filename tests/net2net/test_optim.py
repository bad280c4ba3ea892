"""Optimizer state carried over (mapped like its parameter) or reset after growth."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.core.errors import ConfigError
from metalab.net2net import deepen, mlp, transfer_optimizer, widen


def _trained(optimizer_cls, **kwargs):
    torch.manual_seed(0)
    model = mlp(4, [3, 5], 2, norm="batch")
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    opt = optimizer_cls(model.parameters(), **kwargs)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, (x, y)


def test_adam_moments_follow_the_mapping_with_gradient_scaling():
    model, opt, _ = _trained(torch.optim.Adam, lr=1e-2)
    grown, report = widen(model, "fc1", 7, generator=torch.Generator().manual_seed(3))
    new_opt = transfer_optimizer(opt, model, grown, report)
    g = torch.tensor(report.mapping)
    count = torch.bincount(g)[g].float()
    old, new = opt.state[model.fc1.weight], new_opt.state[grown.fc1.weight]
    torch.testing.assert_close(new["exp_avg"], old["exp_avg"][g] / count[:, None])
    torch.testing.assert_close(new["exp_avg_sq"], old["exp_avg_sq"][g] / count[:, None] ** 2)
    torch.testing.assert_close(
        new_opt.state[grown.bn1.bias]["exp_avg"], opt.state[model.bn1.bias]["exp_avg"][g] / count
    )
    torch.testing.assert_close(
        new_opt.state[grown.fc2.weight]["exp_avg"], opt.state[model.fc2.weight]["exp_avg"][:, g]
    )
    torch.testing.assert_close(
        new_opt.state[grown.out.bias]["exp_avg_sq"], opt.state[model.out.bias]["exp_avg_sq"]
    )
    assert float(new["step"]) == float(old["step"]) == 3
    # Adam's direction m / sqrt(v) of a replicated unit equals the teacher's (scale-free).
    ratio = lambda s: s["exp_avg"] / (s["exp_avg_sq"].sqrt() + 1e-12)  # noqa: E731
    torch.testing.assert_close(ratio(new), ratio(old)[g])


def test_rmsprop_momentum_is_scale_free_and_not_rescaled():
    """RMSprop's momentum accumulates grad / sqrt(square_avg): the 1/count of a replica's
    gradient cancels, so the buffer is copied while square_avg scales by 1/count²."""
    model, opt, _ = _trained(torch.optim.RMSprop, lr=1e-2, momentum=0.9)
    grown, report = widen(model, "fc1", 7, generator=torch.Generator().manual_seed(3))
    new_opt = transfer_optimizer(opt, model, grown, report)
    g = torch.tensor(report.mapping)
    count = torch.bincount(g)[g].float()
    old, new = opt.state[model.fc1.weight], new_opt.state[grown.fc1.weight]
    torch.testing.assert_close(new["square_avg"], old["square_avg"][g] / count[:, None] ** 2)
    torch.testing.assert_close(new["momentum_buffer"], old["momentum_buffer"][g])
    # SGD's momentum holds the gradient itself, so there it does scale
    sgd_model, sgd, _ = _trained(torch.optim.SGD, lr=1e-2, momentum=0.9)
    sgd_grown, sgd_report = widen(sgd_model, "fc1", 7, generator=torch.Generator().manual_seed(3))
    moved = transfer_optimizer(sgd, sgd_model, sgd_grown, sgd_report).state[sgd_grown.fc1.weight]
    torch.testing.assert_close(
        moved["momentum_buffer"],
        sgd.state[sgd_model.fc1.weight]["momentum_buffer"][g] / count[:, None],
    )


def test_groups_hyperparameters_and_parameters_are_the_grown_models():
    model, _, _ = _trained(torch.optim.SGD, lr=0.1)
    opt = torch.optim.SGD(
        [
            {"params": [*model.fc1.parameters()], "lr": 0.5},
            {"params": [p for n, p in model.named_parameters() if not n.startswith("fc1")]},
        ],
        lr=0.1,
        momentum=0.9,
    )
    grown, report = deepen(model, "fc1")
    new_opt = transfer_optimizer(opt, model, grown, report, state="reset")
    assert type(new_opt) is torch.optim.SGD and not new_opt.state
    assert [g["lr"] for g in new_opt.param_groups] == [0.5, 0.1]
    assert new_opt.param_groups[1]["momentum"] == 0.9
    ids = {id(p) for g in new_opt.param_groups for p in g["params"]}
    assert ids == {id(p) for p in grown.parameters()}
    inserted = {id(p) for name in report.inserted for p in grown.get_submodule(name).parameters()}
    assert inserted <= {id(p) for p in new_opt.param_groups[0]["params"]}


def test_momentum_is_carried_through_deepen_and_training_continues():
    model, opt, (x, y) = _trained(torch.optim.SGD, lr=0.1, momentum=0.9)
    grown, report = deepen(model, "fc2")
    new_opt = transfer_optimizer(opt, model, grown, report)
    torch.testing.assert_close(
        new_opt.state[grown.fc2.weight]["momentum_buffer"],
        opt.state[model.fc2.weight]["momentum_buffer"],
    )
    assert all(
        not new_opt.state[p]
        for name in report.inserted
        for p in grown.get_submodule(name).parameters()
    )
    before = float(F.cross_entropy(grown(x), y).detach())
    for _ in range(10):
        new_opt.zero_grad()
        F.cross_entropy(grown(x), y).backward()
        new_opt.step()
    assert float(F.cross_entropy(grown(x), y).detach()) < before


def test_unknown_buffers_and_modes_are_refused():
    model, opt, _ = _trained(torch.optim.Rprop, lr=0.01)
    grown, report = widen(model, "fc2", 8, generator=torch.Generator())
    with pytest.raises(ConfigError, match="use state='reset'"):
        transfer_optimizer(opt, model, grown, report)
    assert not transfer_optimizer(opt, model, grown, report, state="reset").state
    with pytest.raises(ConfigError, match="'carry' or 'reset'"):
        transfer_optimizer(opt, model, grown, report, state="keep")  # type: ignore[arg-type]


OPTIMIZERS = [
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (torch.optim.Adam, {"lr": 1e-2, "amsgrad": True}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.05}),
    (torch.optim.NAdam, {"lr": 1e-2}),
    (torch.optim.RAdam, {"lr": 1e-2}),
    (torch.optim.Adamax, {"lr": 1e-2}),
    (torch.optim.RMSprop, {"lr": 1e-2, "momentum": 0.5, "centered": True}),
    (torch.optim.Adagrad, {"lr": 1e-2, "initial_accumulator_value": 0.1}),
]


def _same_state(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, second[key], rtol=0, atol=0)
        else:
            assert value == second[key]


@pytest.mark.parametrize(
    ("optimizer_cls", "kwargs"), OPTIMIZERS, ids=lambda v: getattr(v, "__name__", "")
)
def test_every_common_optimizer_is_carried_and_reset(optimizer_cls, kwargs):
    model, opt, (x, y) = _trained(optimizer_cls, **kwargs)
    grown, report = widen(model, "fc1", 7, generator=torch.Generator().manual_seed(3))
    g = torch.tensor(report.mapping)
    carried = transfer_optimizer(opt, model, grown, report)
    assert type(carried) is optimizer_cls and carried.defaults == opt.defaults
    for old, new in zip(opt.param_groups, carried.param_groups, strict=True):
        assert {k: v for k, v in old.items() if k != "params"} == {
            k: v for k, v in new.items() if k != "params"
        }
    old_state, new_state = opt.state[model.fc2.weight], carried.state[grown.fc2.weight]
    assert new_state.keys() == old_state.keys()
    for key, value in old_state.items():  # split outgoing weights: every buffer follows g
        if value.dim():
            torch.testing.assert_close(new_state[key], value[:, g], rtol=0, atol=0)
    _same_state(carried.state[grown.out.bias], opt.state[model.out.bias])
    reset = transfer_optimizer(opt, model, grown, report, state="reset")
    fresh = optimizer_cls(grown.parameters(), **kwargs)  # Adagrad fills its state at once
    for p in grown.parameters():
        _same_state(reset.state.get(p, {}), fresh.state.get(p, {}))
    for new_opt in (carried, reset):
        before = float(F.cross_entropy(grown(x), y).detach())
        for _ in range(3):
            new_opt.zero_grad()
            F.cross_entropy(grown(x), y).backward()
            new_opt.step()
        assert float(F.cross_entropy(grown(x), y).detach()) < before


class ScheduledSGD(torch.optim.SGD):
    """A user's optimizer with a constructor argument its ``defaults`` do not record."""

    def __init__(self, params, lr: float = 0.1, schedule: str = "cosine") -> None:
        super().__init__(params, lr=lr)
        self.schedule = schedule


def test_an_optimizer_whose_constructor_cannot_be_rebuilt_is_refused():
    model, opt, _ = _trained(ScheduledSGD, lr=0.1, schedule="step")
    grown, report = deepen(model, "fc1")
    with pytest.raises(ConfigError, match="argument\\(s\\) schedule are not recorded") as info:
        transfer_optimizer(opt, model, grown, report, state="reset")
    assert "\n" not in str(info.value)


def test_the_learned_optimizer_is_rebuilt_with_its_weights_and_its_moments_are_mapped():
    from metalab.lopt import LearnedOptimizer

    model, opt, (x, y) = _trained(LearnedOptimizer, weight_decay=1e-4)
    grown, report = widen(model, "fc1", 7, generator=torch.Generator().manual_seed(3))
    widened = transfer_optimizer(opt, model, grown, report)
    rules = opt.state_carry_rules
    for name, change in report.params.items():
        old = opt.state[model.get_parameter(change.source)]
        new = widened.state[grown.get_parameter(name)]
        assert set(new) == set(old)
        for key, value in old.items():
            if change.index is None or rules.get(key) == "copy" or value.dim() == 0:
                assert torch.equal(new[key], value), (name, key)
                continue
            param = grown.get_parameter(name)
            assert new[key].shape[: param.dim()] == param.shape
            expected = value.index_select(change.dim, change.index)
            if change.grad_scale is not None:
                shape = [1] * value.dim()
                shape[change.dim] = -1
                expected = expected * change.grad_scale.view(shape) ** rules[key]
            torch.testing.assert_close(new[key], expected)
    assert widened.param_groups[0]["weight_decay"] == 1e-4
    reset = transfer_optimizer(opt, model, grown, report, state="reset")
    assert isinstance(reset, LearnedOptimizer) and not reset.state
    assert torch.equal(reset.theta, opt.theta) and reset.arch.name == opt.arch.name
    assert reset.provenance == opt.provenance
    deep, deep_report = deepen(model, "fc1")  # nothing grows: every buffer is kept as it was
    carried = transfer_optimizer(opt, model, deep, deep_report)
    _same_state(carried.state[deep.fc1.weight], opt.state[model.fc1.weight])
    for new_opt, net in ((widened, grown), (reset, grown), (carried, deep)):
        weight = net.fc1.weight.detach().clone()
        loss = F.cross_entropy(net(x), y)
        new_opt.zero_grad()
        loss.backward()
        new_opt.step(loss=loss)
        assert not torch.equal(net.fc1.weight, weight)
        assert torch.isfinite(F.cross_entropy(net(x), y))


def test_lbfgs_whole_model_history_is_not_carried_and_lr_multiplier_is_kept():
    from metalab.lopt import LearnedOptimizer

    model = mlp(4, [3, 5], 2)
    grown, report = widen(model, "fc1", 7, generator=torch.Generator().manual_seed(3))
    lbfgs = torch.optim.LBFGS(model.parameters())
    with pytest.raises(ConfigError, match="LBFGS keeps one history"):
        transfer_optimizer(lbfgs, model, grown, report)
    assert isinstance(transfer_optimizer(lbfgs, model, grown, report, state="reset"), type(lbfgs))
    learned = LearnedOptimizer(model.parameters(), lr=0.3)
    rebuilt = transfer_optimizer(learned, model, grown, report, state="reset")
    assert rebuilt.defaults["lr"] == 0.3 and rebuilt.param_groups[0]["lr"] == 0.3


def _learned_baselines():
    from metalab.lopt import LearnedOptimizer
    from metalab.lopt.baselines import AdamArch, SGDMArch

    sgdm = SGDMArch.theta(lr=0.05, momentum=0.9)
    return {
        "sgdm": (
            lambda p: LearnedOptimizer(p, sgdm, "sgdm"),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        ),
        "adam": (
            lambda p: LearnedOptimizer(p, AdamArch.theta(lr=1e-2), "adam"),
            lambda p: torch.optim.Adam(p, lr=1e-2),
        ),
    }


def _widened_run(make, state="carry"):
    """4 steps, widen fc1 to 7 units, carry (or reset) the optimizer, 4 more steps."""
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model = mlp(4, [3, 5], 2).double()
    opt = make(model.parameters())
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    grown, report = widen(model, "fc1", 7, generator=torch.Generator().manual_seed(3))
    new_opt = transfer_optimizer(opt, model, grown, report, state=state)
    for _ in range(4):
        new_opt.zero_grad()
        F.cross_entropy(grown(x), y).backward()
        new_opt.step()
    return [p.detach() for p in grown.parameters()]


@pytest.mark.parametrize("name", ["sgdm", "adam"])
def test_learned_sgdm_and_adam_carried_through_widen_step_as_torchs_carried_ones(name):
    """metalab's ``sgdm``/``adam`` archs are SGD-momentum/Adam written as learned optimizers:
    carried through a widen by their declared state rules, their next steps must match
    torch's SGD/Adam carried through the same widen, by value (float32 arch math against
    torch's float64, hence the 1e-6)."""
    learned, reference = _learned_baselines()[name]
    ours, theirs = _widened_run(learned), _widened_run(reference)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    reset = _widened_run(reference, state="reset")  # a wrong carry would be this far off
    assert max(float((p - q).abs().max()) for p, q in zip(reset, theirs, strict=True)) > 1e-3
