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
