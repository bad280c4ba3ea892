"""The model-level API: reports, refusals with one clear line, symmetry breaking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.core.errors import ConfigError, MetalabError, UnknownNameError
from metalab.net2net import (
    GrowthRefused,
    Residual,
    deepen,
    mlp,
    preservation_error,
    residual_cnn,
    small_cnn,
    widen,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_widen_reports_what_changed_and_leaves_the_teacher_alone():
    teacher = mlp(5, [4, 3], 2, norm="batch")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, report = widen(teacher, "fc1", 9, generator=gen())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert (report.operation, report.layer, report.old_width, report.new_width) == (
        "widen",
        "fc1",
        4,
        9,
    )
    assert report.consumers == ["fc2"] and report.norms == ["bn1"]
    assert report.mapping[:4] == [0, 1, 2, 3] and len(report.mapping) == 9
    assert report.parameters_after == sum(p.numel() for p in student.parameters())
    assert (
        student.fc1.out_features == 9
        and student.bn1.num_features == 9
        and student.fc2.in_features == 9
    )
    assert "fc1 4 -> 9" in report.summary()
    assert report.to_dict()["consumers"] == ["fc2"]


def test_float32_students_agree_to_float_tolerance():
    teacher = small_cnn(1, [6, 8], 10, image_size=8).eval()
    student, _ = widen(teacher, "conv2", 20, generator=gen())
    student, _ = deepen(student, "conv1")
    x = torch.randn(32, 1, 8, 8)
    assert preservation_error(teacher, student, x) < 1e-5
    assert next(student.parameters()).dtype == torch.float32


class FunctionalNet(nn.Module):
    """A user's own class with functional activations and a flatten call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(F.relu(self.fc(torch.flatten(h, 1))))


def test_user_classes_with_functional_ops_are_grown_in_place():
    net = FunctionalNet().double().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    wide, _ = widen(net, "conv", 7, generator=gen())
    deep, report = deepen(wide, "fc")
    assert type(deep) is FunctionalNet
    assert report.wrapped == "fc" and report.inserted == ["fc.2"]
    assert preservation_error(net, deep, x) < 1e-12
    assert report.params["fc.0.weight"].source == "fc.weight"


def _scale_by_shape(h: torch.Tensor) -> torch.Tensor:
    n = h.shape[0]
    return h.reshape(n, -1) * n  # the batch size is also used as a number


# The usual ways user code flattens a CNN's features before the classifier, and some that
# read or fix the width (a widening would change them).
FLATTENS = {
    "view": lambda net, h: h.view(h.size(0), -1),
    "reshape": lambda net, h: h.reshape(h.shape[0], -1),
    "flatten-1-3": lambda net, h: torch.flatten(h, 1, 3),
    "Flatten-1-3": lambda net, h: net.flat(h),
    "view-list": lambda net, h: h.view([h.size(0), -1]),
    "view-size-dim": lambda net, h: h.view(h.size(dim=0), -1),
    "reshape-size-index": lambda net, h: h.reshape(h.size()[0], -1),
    "view-by-channel-count": lambda net, h: h.view(h.size(0), h.size(1) * 4),
    "view-then-scale-by-size": lambda net, h: h.view(h.size(0), -1) / h.size(0),
    "reshape-then-scale-by-shape": lambda net, h: _scale_by_shape(h),
    "view-fixed": lambda net, h: h.view(-1, 12),
}


class ReshapingNet(nn.Module):
    """conv -> ReLU -> 2x2 pool -> one of ``FLATTENS`` -> Linear."""

    def __init__(self, flatten: str) -> None:
        super().__init__()
        self.flatten = flatten
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 2 * 2, 2)
        self.flat = nn.Flatten(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(FLATTENS[self.flatten](self, h))


@pytest.mark.parametrize(
    "flatten",
    [
        "view",
        "reshape",
        "flatten-1-3",
        "Flatten-1-3",
        "view-list",
        "view-size-dim",
        "reshape-size-index",
    ],
)
def test_batch_flattening_reshapes_are_followed(flatten):
    net = ReshapingNet(flatten).double().eval()
    wide, report = widen(net, "conv", 5, generator=gen())
    assert report.params["fc.weight"].source == "fc.weight"
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    assert wide.fc.in_features == 20 and preservation_error(net, wide, x) < 1e-12


@pytest.mark.parametrize("flatten", ["view-by-channel-count", "view-fixed"])
def test_reshapes_that_read_or_fix_the_width_are_refused(flatten):
    with pytest.raises(GrowthRefused, match="mixes or reshapes units"):
        widen(ReshapingNet(flatten), "conv", 5, generator=gen())


@pytest.mark.parametrize("flatten", ["view-then-scale-by-size", "reshape-then-scale-by-shape"])
def test_a_batch_size_also_used_as_a_number_is_refused(flatten):
    use = "truediv" if "size" in flatten else "mul"
    with pytest.raises(GrowthRefused, match=f"size of axis 0, and call_function '{use}'") as info:
        widen(ReshapingNet(flatten), "conv", 5, generator=gen())
    assert "\n" not in str(info.value)


class SizeScaled(nn.Module):
    """``fc2(h) / h.size(0)``: the batch size for a batch, the width for one 1-D input."""

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if self.flatten:
            return self.fc2(h.view(h.size(0), -1))
        return self.fc2(h) / h.size(0)


def test_size_0_used_in_arithmetic_is_refused_since_it_may_be_the_width():
    model = SizeScaled().double()
    with pytest.raises(GrowthRefused, match=r"call_method 'size'.*truediv.*width itself"):
        widen(model, "fc1", 7, generator=gen())


def test_the_batch_flattening_view_after_a_linear_is_followed():
    model = SizeScaled(flatten=True).double()
    wide, report = widen(model, "fc1", 7, generator=gen())
    assert report.consumers == ["fc2"] and wide.fc2.in_features == 7
    assert preservation_error(model, wide, torch.randn(5, 3, dtype=torch.float64)) < 1e-12


def test_noise_breaks_the_symmetry_between_replicas_and_no_noise_keeps_it():
    torch.manual_seed(0)
    teacher = mlp(4, [3], 2)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))

    def replica_gap(noise: float) -> float:
        student, report = widen(teacher, "fc1", 6, noise=noise, generator=gen(1))
        opt = torch.optim.SGD(student.parameters(), lr=0.5)
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(student(x), y).backward()
            opt.step()
        w, g = student.fc1.weight.detach(), torch.tensor(report.mapping)
        return float((w - w[g]).abs().max())

    assert replica_gap(0.0) < 1e-6
    assert replica_gap(0.05) > 1e-3


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: widen(m, "stem", 8, generator=gen()), "residual sum"),
        (lambda m: widen(m, "out", 12, generator=gen()), "model's output"),
        (lambda m: widen(m, "block1.body.bn1", 12, generator=gen()), "not a Linear or Conv2d"),
        (lambda m: widen(m, "block1.body.conv1", 2, generator=gen()), "new width must be >= 3"),
        (lambda m: deepen(m, "block1.body.conv2"), "before any activation"),
        (lambda m: deepen(m, "out"), "before any activation"),
        (lambda m: deepen(m, "stem", kernel_size=4), "odd kernel_size"),
        (lambda m: deepen(m, "stem", noise=0.1), "generator"),
    ],
)
def test_impossible_growth_is_refused_with_one_clear_line(call, match):
    model = residual_cnn(1, 4, 3, 5)
    with pytest.raises(MetalabError, match=match) as info:
        call(model)
    assert "\n" not in str(info.value)


def test_a_model_without_growable_layers_says_so():
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.ReLU(), nn.Conv1d(3, 2, 1))
    with pytest.raises(GrowthRefused, match=r"not a Linear or Conv2d; the model has no Linear"):
        widen(model, "0", 6, generator=gen())


def test_unknown_layers_get_suggestions():
    with pytest.raises(UnknownNameError, match="did you mean fc1"):
        widen(mlp(3, [4], 2), "fc", 5, generator=gen())


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU])
def test_deepening_refuses_activations_where_the_identity_fails(act):
    with pytest.raises(GrowthRefused, match=f"{act.__name__}.*phi\\(I phi\\(v\\)\\) != phi\\(v\\)"):
        deepen(mlp(3, [4], 2, activation=act), "fc1")


@pytest.mark.parametrize("act", [nn.Tanh, nn.GELU])
def test_widening_works_for_any_elementwise_activation(act):
    model = mlp(3, [4, 5], 2, activation=act).double()
    wide, _ = widen(model, "fc2", 8, generator=gen())
    assert preservation_error(model, wide, torch.randn(6, 3, dtype=torch.float64)) < 1e-12


def test_layernorm_needs_a_multiple_width_and_widening_into_concatenation_is_refused():
    with pytest.raises(ConfigError, match="multiple of 4"):
        widen(mlp(3, [4], 2, norm="layer"), "fc1", 6, generator=gen())

    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = nn.Linear(2, 3), nn.Linear(2, 3), nn.Linear(6, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.cat([self.a(x), self.b(x)], dim=1))

    with pytest.raises(GrowthRefused, match="concatenation"):
        widen(Cat(), "a", 5, generator=gen())


def test_shared_layers_and_untraceable_models_are_refused():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.fc(torch.relu(self.fc(x))))

    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            return self.out(h) if h.sum() > 0 else self.out(-h)

    with pytest.raises(GrowthRefused, match="called 2 times"):
        widen(Shared(), "fc", 5, generator=gen())
    with pytest.raises(GrowthRefused, match="cannot trace Dynamic"):
        widen(Dynamic(), "fc", 5, generator=gen())


def test_deepening_residual_blocks_and_after_deepened_layers():
    model = residual_cnn(2, 4, 3, 5, blocks=2).double().eval()
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    grown, report = deepen(model, "block2.body.conv1")
    assert isinstance(grown.block2, Residual) and report.inserted == [
        "block2.body.act1.1",
        "block2.body.act1.2",
    ]
    grown, _ = deepen(grown, "block2.body.conv1")  # twice at the same place
    grown, _ = deepen(grown, "stem")
    assert preservation_error(model, grown, x) < 1e-12
    assert (
        sum(isinstance(m, nn.Conv2d) for m in grown.modules()) == 5 + 3
    )  # five original convolutions, three inserted


def test_preservation_error_restores_every_submodules_mode():
    teacher = mlp(3, [4], 2, norm="batch").train()
    teacher.bn1.eval()  # a frozen BatchNorm inside a model that is training
    student, _ = widen(teacher, "fc1", 6, generator=gen())
    student.train().out.eval()
    assert preservation_error(teacher, student, torch.randn(5, 3)) < 1e-5
    assert teacher.training and not teacher.bn1.training and teacher.fc1.training
    assert student.training and not student.out.training and student.bn1.training


class TwoHeads(nn.Module):
    """A model returning a nested structure of tensors (and a non-tensor)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(3, width)
        self.a, self.b = nn.Linear(width, 2), nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, object]]:
        h = torch.relu(self.fc(x))
        return self.a(h), {"b": self.b(h), "name": "heads"}


def test_preservation_error_compares_every_tensor_of_a_structured_output():
    teacher = TwoHeads().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    student, _ = widen(teacher, "fc", 9, generator=gen())
    assert preservation_error(teacher, student, x) < 1e-12
    with torch.no_grad():
        student.b.bias.add_(0.25)  # only the second head moves
    assert abs(preservation_error(teacher, student, x) - 0.25) < 1e-12

    class OneHead(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(MetalabError, match="differ in structure"):
        preservation_error(teacher, OneHead(), x)
    with pytest.raises(MetalabError, match=r"differ in shape \(\[5, 2\] vs \[5, 1\]\)"):
        preservation_error(nn.Linear(3, 2), nn.Linear(3, 1), torch.randn(5, 3))
