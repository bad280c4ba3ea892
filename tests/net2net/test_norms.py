"""Norms between the widened layer and its consumers: where they hold the units.

A norm after a flatten is per feature over blocks of channel positions (replicated block by
block); a LayerNorm over a convolution's ``[C, H, W]`` is kept exact by equal replication;
one within each channel (``[H, W]``, ``[W]``) needs no change. Anything whose size does
not match the units, or a consumer reading them on another axis, is refused in one line.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.net2net import GrowthRefused, preservation_error, widen
from tests.net2net.conftest import give_statistics

IMAGE = (1, 4, 4)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn((8, *shape), generator=gen(seed), dtype=torch.float64) * 2


def _flatten_then(norm: nn.Module, pool: bool) -> nn.Sequential:
    """conv(3 channels) -> ReLU -> [pool] -> flatten -> norm -> Linear, on 1x4x4 images."""
    features = 3 * (4 if pool else 16)
    pooling = [nn.MaxPool2d(2)] if pool else []
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        *pooling,
        nn.Flatten(),
        norm,
        nn.Linear(features, 2),
    )
    return give_statistics(model.double(), IMAGE, seed=0)


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize(("kind", "width"), [("batch", 5), ("batch", 6), ("layer", 6)])
def test_a_norm_after_a_flatten_is_replicated_per_channel_block(kind, width, pool):
    features = 3 * (4 if pool else 16)
    norm = nn.BatchNorm1d(features) if kind == "batch" else nn.LayerNorm(features)
    model = _flatten_then(norm, pool)
    norm_name = str(len(model) - 2)
    grown, report = widen(model, "0", width, generator=gen())
    x = _x(IMAGE)
    assert report.norms == [norm_name]
    assert preservation_error(model, grown, x) < 1e-12
    block = features // 3
    widened = grown.get_submodule(norm_name)
    assert widened.weight.shape == (width * block,)
    g = torch.tensor(report.mapping)
    expanded = (g[:, None] * block + torch.arange(block)).reshape(-1)
    torch.testing.assert_close(widened.bias, norm.bias[expanded], rtol=0, atol=0)
    model.train()
    grown.train()
    with torch.no_grad():  # BatchNorm on the same batch: replicated features, same statistics
        torch.testing.assert_close(grown(x), model(x), rtol=0, atol=1e-12)


def _conv_then(norm: nn.Module) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(3, 2, 1))
    return give_statistics(model.double(), IMAGE, seed=0)


def test_a_layernorm_over_channels_and_positions_is_exact_with_equal_replication():
    model = _conv_then(nn.LayerNorm([3, 4, 4]))
    grown, report = widen(model, "0", 6, generator=gen())
    assert report.norms == ["1"] and grown[1].normalized_shape == (6, 4, 4)
    assert preservation_error(model, grown, _x(IMAGE)) < 1e-12
    with pytest.raises(ValueError, match="multiple of 3"):
        widen(model, "0", 5, generator=gen())


@pytest.mark.parametrize("shape", [[4], [4, 4]])
def test_a_layernorm_within_each_channel_is_left_alone(shape):
    model = _conv_then(nn.LayerNorm(shape))
    grown, report = widen(model, "0", 5, generator=gen())
    assert report.norms == [] and grown[1].normalized_shape == tuple(shape)
    torch.testing.assert_close(grown[1].weight, model[1].weight, rtol=0, atol=0)
    assert preservation_error(model, grown, _x(IMAGE)) < 1e-12


def test_a_layernorm_over_a_linears_sequence_and_features_is_widened_on_its_unit_axis():
    model = give_statistics(
        nn.Sequential(nn.Linear(2, 4), nn.LayerNorm([5, 4]), nn.ReLU(), nn.Linear(4, 1)).double(),
        (5, 2),
        seed=0,
    )
    grown, report = widen(model, "0", 8, generator=gen())
    assert report.norms == ["1"] and grown[1].weight.shape == (5, 8)
    assert report.params["1.weight"].dim == 1
    assert preservation_error(model, grown, _x((5, 2))) < 1e-12


class LinearOnConvWidth(nn.Module):
    """A Linear applied to a convolution's last (width) axis, with no flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 3, 1), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x))).sum(dim=(1, 2))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (  # BatchNorm1d over a Linear's sequence axis (5), not its 4 units
            nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(4, 1)),
            "BatchNorm1d '1' after '0' has 5 features",
        ),
        (LinearOnConvWidth(), "acts on the last \\(width\\) axis"),
        (  # a Linear over (5, 2) inputs flattened: its units are not channel-major blocks
            nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(20, 1)),
            "has 20 inputs, not the 4 units",
        ),
        (  # a Linear's units read by a convolution as its width
            nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Conv2d(3, 2, 1)),
            "axis other than its input channels",
        ),
    ],
)
def test_norms_and_consumers_that_do_not_hold_the_units_are_refused(model, match):
    with pytest.raises(GrowthRefused, match=match) as info:
        widen(model, "0" if isinstance(model, nn.Sequential) else "conv", 6, generator=gen())
    assert "\n" not in str(info.value)


class NormThenPool(nn.Module):
    """conv -> a norm -> ReLU -> global average pool (by ``mean`` or by pooling) -> Linear."""

    def __init__(self, norm: nn.Module, pool: str = "mean") -> None:
        super().__init__()
        self.conv, self.norm, self.fc, self.pool = nn.Conv2d(1, 4, 3), norm, nn.Linear(4, 2), pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x)))
        if self.pool == "mean":
            return self.fc(h.mean((2, 3)))
        if self.pool == "torch.sum":
            return self.fc(torch.sum(h, dim=-1).sum(-1))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


@pytest.mark.parametrize(
    ("norm", "match"),
    [
        (nn.GroupNorm(2, 4), "GroupNorm 'norm' between 'conv' .* normalizes groups of 2 channels"),
        (nn.InstanceNorm2d(4, affine=True), "InstanceNorm2d 'norm' between 'conv' .* cannot be"),
        (nn.BatchNorm3d(4), "BatchNorm3d 'norm' between 'conv' .* cannot be widened"),
    ],
)
def test_norms_widen_cannot_rewrite_are_named_by_their_class(norm, match):
    with pytest.raises(GrowthRefused, match=match) as info:
        widen(NormThenPool(norm), "conv", 6, generator=gen())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("pool", "match"),
    [
        ("mean", r"reduced by mean over dims \(2, 3\) \(call_method 'mean', node 'mean'\)"),
        ("torch.sum", r"reduced by sum over dims -1 \(call_function 'sum', node 'sum_1'\)"),
    ],
)
def test_a_reduction_is_refused_by_naming_the_op_and_its_dims(pool, match):
    with pytest.raises(GrowthRefused, match=match) as info:
        widen(NormThenPool(nn.Identity(), pool), "conv", 6, generator=gen())
    assert "adaptive_avg_pool2d(x, 1).flatten(1)" in str(info.value)
    assert "\n" not in str(info.value)


def test_the_global_pool_the_reduction_refusal_suggests_is_widened():
    model = give_statistics(NormThenPool(nn.BatchNorm2d(4), "adaptive").double(), IMAGE, seed=0)
    grown, report = widen(model, "conv", 6, generator=gen())
    assert report.consumers == ["fc"] and report.norms == ["norm"]
    assert preservation_error(model, grown, _x(IMAGE)) < 1e-12
