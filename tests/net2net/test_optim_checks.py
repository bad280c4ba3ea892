"""transfer_optimizer refuses arguments that do not belong together, in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.core.errors import ConfigError
from metalab.net2net import deepen, mlp, transfer_optimizer, widen
from metalab.net2net.report import ParamChange


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(3)


def _trained():
    torch.manual_seed(0)
    model = mlp(4, [3, 5], 2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, (x, y)


def _refused(*args, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        transfer_optimizer(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_report_of_a_later_growth_step_is_refused_not_left_to_step():
    """m -> s1 -> s2 with the s1 -> s2 report but m: the state would not fit s2."""
    model, opt, _ = _trained()
    first, _ = widen(model, "fc1", 6, generator=_gen())
    second, report = widen(first, "fc2", 8, generator=_gen())
    _refused(opt, model, second, report, match="shape")


def test_report_of_another_growth_of_the_same_model_is_refused():
    model, opt, _ = _trained()
    grown, _ = widen(model, "fc1", 6, generator=_gen())
    _, other = widen(model, "fc2", 8, generator=_gen())
    _refused(opt, model, grown, other, match="new_model's is")


def test_optimizer_of_another_model_is_refused_even_with_state_reset():
    model, _, _ = _trained()
    _, foreign, _ = _trained()
    grown, report = widen(model, "fc1", 6, generator=_gen())
    for state in ("carry", "reset"):
        with pytest.raises(ConfigError, match="none of the optimizer's parameters"):
            transfer_optimizer(foreign, model, grown, report, state=state)


def test_tensors_trained_beside_the_model_are_carried_unchanged():
    """A learnable loss weight in the optimizer keeps its place, group and state."""
    torch.manual_seed(0)
    model = mlp(4, [3, 5], 2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    scale = torch.nn.Parameter(torch.ones(()))
    opt = torch.optim.Adam([{"params": model.parameters()}, {"params": [scale], "lr": 0.5}])
    for _ in range(2):
        opt.zero_grad()
        (scale * F.cross_entropy(model(x), y)).backward()
        opt.step()
    grown, report = widen(model, "fc1", 6, generator=_gen())
    carried = transfer_optimizer(opt, model, grown, report)
    assert carried.param_groups[1]["params"] == [scale] and carried.param_groups[1]["lr"] == 0.5
    for key, value in opt.state[scale].items():
        assert torch.equal(carried.state[scale][key], value)
        assert carried.state[scale][key] is not value  # a copy: the old optimizer is untouched
    assert not transfer_optimizer(opt, model, grown, report, state="reset").state
    before = scale.detach().clone()
    carried.zero_grad()
    (scale * F.cross_entropy(grown(x), y)).backward()
    carried.step()
    assert not torch.equal(scale.detach(), before)


def test_report_naming_parameters_the_models_lack_is_refused():
    model, opt, _ = _trained()
    grown, report = widen(model, "fc1", 6, generator=_gen())
    renamed = {f"x.{k}": v for k, v in report.params.items()}
    report.params = renamed
    _refused(opt, model, grown, report, match="not in new_model")
    _, fresh = widen(model, "fc1", 6, generator=_gen())
    fresh.params["fc1.extra"] = ParamChange("nope.weight")
    _refused(opt, model, grown, fresh, match="'nope.weight' is not in old_model")


def test_report_indexing_beyond_the_old_parameter_is_refused():
    model, opt, _ = _trained()
    grown, report = widen(model, "fc1", 6, generator=_gen())
    change = report.params["fc1.bias"]
    assert change.index is not None
    change.index = change.index + 10
    _refused(opt, model, grown, report, match="beyond its shape")


def test_new_model_with_parameters_the_report_does_not_know_is_refused():
    model, opt, _ = _trained()
    deeper, report = deepen(model, "fc1")
    deepest, _ = deepen(deeper, "fc2")
    with pytest.raises(ConfigError):
        transfer_optimizer(opt, model, deepest, report)


def test_matching_arguments_still_transfer_and_step_after_two_growths():
    """Each step's optimizer carried with its own report trains the twice-grown model."""
    model, opt, (x, y) = _trained()
    first, report1 = widen(model, "fc1", 6, generator=_gen())
    opt1 = transfer_optimizer(opt, model, first, report1)
    second, report2 = deepen(first, "fc1")
    opt2 = transfer_optimizer(opt1, first, second, report2)
    assert len(opt2.state) == len(opt.state)
    opt2.zero_grad()
    F.cross_entropy(second(x), y).backward()
    opt2.step()


def test_optimizer_over_a_subset_of_old_model_is_accepted():
    """A fine-tuned head (frozen body): the optimizer owns some of old_model's tensors."""
    model, _, (x, y) = _trained()
    opt = torch.optim.SGD(model.fc2.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    grown, report = widen(model, "fc1", 6, generator=_gen())
    new_opt = transfer_optimizer(opt, model, grown, report)
    assert [p.shape for p in new_opt.param_groups[0]["params"]] == [
        grown.fc2.weight.shape,
        grown.fc2.bias.shape,
    ]
