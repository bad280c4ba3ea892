"""Layers inserted by ``deepen`` take the mode of the layer they follow.

An eval-mode model must come back computing the same function as the user left it, with no
call to ``eval()``: an inserted BatchNorm in train mode would normalize by the batch's
statistics instead of its running ones (``preservation_error`` switches both models to eval,
so it cannot see this; the tests compare ``model(x)`` with ``grown(x)`` directly).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.net2net import deepen, mlp, small_cnn
from tests.net2net.conftest import give_statistics


def _x(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((6, *shape), generator=gen, dtype=torch.float64) * 2 + 1


class FunctionalRelu(nn.Module):
    """fc1 -> bn1 -> F.relu: ``deepen`` wraps ``bn1`` and inserts a fresh ReLU after it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn1, self.out = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.bn1(self.fc1(x))))


CASES = [  # (model, layer to deepen after, input shape without the batch axis)
    (lambda: mlp(3, [4, 5], 2, norm="batch"), "fc1", (3,)),
    (lambda: small_cnn(1, [3, 4], 2, image_size=4), "conv1", (1, 4, 4)),
    (FunctionalRelu, "fc1", (3,)),
]


@pytest.mark.parametrize(("build", "after", "shape"), CASES)
def test_a_model_deepened_in_eval_mode_computes_the_same_function_as_left(build, after, shape):
    model = give_statistics(build().double(), shape, seed=0)  # eval mode, real statistics
    grown, report = deepen(model, after)
    assert not any(m.training for m in grown.modules())
    assert any(
        isinstance(grown.get_submodule(n), nn.BatchNorm1d | nn.BatchNorm2d) for n in report.inserted
    )
    x = _x(shape)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("build", "after", "shape"), CASES)
def test_a_model_deepened_in_train_mode_stays_in_train_mode(build, after, shape):
    model = give_statistics(build().double(), shape, seed=0).train()
    x = _x(shape)
    grown, report = deepen(model, after, data=x)  # the new BatchNorm fits x's statistics
    assert all(grown.get_submodule(n).training for n in [report.wrapped, *report.inserted])
    assert all(m.training for m in grown.modules())
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x), rtol=0, atol=1e-10)


def test_inserted_layers_follow_the_layer_they_follow_not_a_frozen_neighbour():
    model = mlp(3, [4], 2).double().train()
    model.act1.eval()  # a module in eval mode inside a training model keeps its own flag
    grown, report = deepen(model, "fc1", batchnorm=True)
    block = grown.get_submodule(report.wrapped)
    assert [m.training for m in block] == [False, True, True, False]
    assert grown.training and grown.fc1.training
