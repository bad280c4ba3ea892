"""Candidate operations of the NAS-Bench-201 and DARTS cells.

Names follow the two papers' code so cell strings are interchangeable with theirs:
NAS-Bench-201 (Dong & Yang 2020, Sec. 2.1) uses ``none``, ``skip_connect``,
``nor_conv_1x1``, ``nor_conv_3x3`` (ReLU-Conv-BN) and ``avg_pool_3x3``; DARTS (Liu et al.
2019, Sec. 3.1) adds ``max_pool_3x3``, ``sep_conv_3x3/5x5`` and ``dil_conv_3x3/5x5``.

Batch norm follows the search/evaluation split of both codebases: in a supernet
(``affine=False, track=False``) every batch norm uses batch statistics in train and eval
mode alike (DARTS-PT evaluates the supernet "with batch norm in train mode"), which also
keeps the supernet free of buffers so it can be ``vmap``'d over architecture weights; a
discrete network trained for the ground truth uses ``affine=True, track=True``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from metalab.core.errors import UnknownNameError

__all__ = [
    "DARTS_OPS",
    "NB201_OPS",
    "OPERATIONS",
    "OpFactory",
    "make_op",
    "op_names",
]

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

OpFactory = Callable[[int, bool, bool], nn.Module]


class Zero(nn.Module):
    """The ``none`` operation: multiplies its input by zero (keeps shape and graph)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


class Identity(nn.Module):
    """The ``skip_connect`` operation (stride 1)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def _bn(channels: int, affine: bool, track: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine, track_running_stats=track)


def _relu_conv_bn(kernel: int) -> OpFactory:
    def build(channels: int, affine: bool, track: bool) -> nn.Module:
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False),
            _bn(channels, affine, track),
        )

    return build


def _dil_conv(kernel: int) -> OpFactory:
    """DARTS's dilated separable conv: ReLU, depthwise dilated conv, pointwise conv, BN."""

    def build(channels: int, affine: bool, track: bool) -> nn.Module:
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(
                channels,
                channels,
                kernel,
                padding=kernel - 1,
                dilation=2,
                groups=channels,
                bias=False,
            ),
            nn.Conv2d(channels, channels, 1, bias=False),
            _bn(channels, affine, track),
        )

    return build


def _sep_conv(kernel: int) -> OpFactory:
    """DARTS's separable conv: the dilation-1 depthwise-pointwise block applied twice."""

    def build(channels: int, affine: bool, track: bool) -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [
                nn.ReLU(),
                nn.Conv2d(
                    channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False
                ),
                nn.Conv2d(channels, channels, 1, bias=False),
                _bn(channels, affine, track),
            ]
        return nn.Sequential(*layers)

    return build


OPERATIONS: dict[str, OpFactory] = {
    "none": lambda c, a, t: Zero(),
    "skip_connect": lambda c, a, t: Identity(),
    "nor_conv_1x1": _relu_conv_bn(1),
    "nor_conv_3x3": _relu_conv_bn(3),
    "avg_pool_3x3": lambda c, a, t: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda c, a, t: nn.MaxPool2d(3, stride=1, padding=1),
    "sep_conv_3x3": _sep_conv(3),
    "sep_conv_5x5": _sep_conv(5),
    "dil_conv_3x3": _dil_conv(3),
    "dil_conv_5x5": _dil_conv(5),
}


def op_names() -> list[str]:
    """Every operation name :func:`make_op` accepts."""
    return sorted(OPERATIONS)


def make_op(name: str, channels: int, *, affine: bool, track: bool) -> nn.Module:
    """Build operation ``name`` on ``channels`` channels (stride 1, shape-preserving).

    Raises:
        UnknownNameError: ``name`` is not an operation (close names are suggested).
    """
    if name not in OPERATIONS:
        raise UnknownNameError("operation", name, OPERATIONS)
    return OPERATIONS[name](channels, affine, track)
