"""Layers inserted by ``deepen`` take the mode of the layer they follow; a BatchNorm that of
the BatchNorm already in the chain (else the layer's).

An eval-mode model, or one fine-tuned with frozen (eval) BatchNorms, must come back computing
the same function as the user left it, with no call to ``eval()``: an inserted BatchNorm in
train mode would normalize by the batch's statistics instead of its running ones
(``preservation_error`` switches both models to eval, so it cannot see this; the tests
compare ``model(x)`` with ``grown(x)`` directly). With ``data``, the new norm is fitted to the
features of the modules' own modes, never to a train-mode pass the model does not make.
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


def _freeze_batchnorms(model: nn.Module) -> nn.Module:
    """Fine-tuning with frozen BatchNorm: the model trains, every BatchNorm keeps eval mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.eval()
    return model


@pytest.mark.parametrize("with_data", [False, True])
@pytest.mark.parametrize(("build", "after", "shape"), CASES)
def test_a_model_with_frozen_batchnorms_keeps_its_function(build, after, shape, with_data):
    model = _freeze_batchnorms(give_statistics(build().double(), shape, seed=0))
    x = _x(shape)
    grown, report = deepen(model, after, data=x if with_data else None)
    new, norm = (grown.get_submodule(n) for n in report.inserted)
    assert isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d)
    assert not norm.training and new.training  # the norm is frozen like the model's own
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x), rtol=0, atol=1e-12)
        other = _x(shape, seed=7) * 3 - 2  # eval-mode identity: exact on any input
        torch.testing.assert_close(grown(other), model(other), rtol=0, atol=1e-12)
    modes = {n: m.training for n, m in model.named_modules()}
    assert all(
        grown.get_submodule(n).training == t for n, t in modes.items() if n != report.wrapped
    )


def test_statistics_are_estimated_on_the_features_of_the_users_modes():
    """With bn1 frozen, the new norm sees bn1's running-statistics features, not the batch's."""
    model = _freeze_batchnorms(
        give_statistics(mlp(3, [4, 5], 2, norm="batch").double(), (3,), seed=0)
    )
    x = _x((3,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grown, report = deepen(model, "fc1", data=x)
    with torch.no_grad():
        features = torch.relu(model.bn1(model.fc1(x)))  # bn1 in eval mode, as the user left it
    norm = grown.get_submodule(report.inserted[-1])
    torch.testing.assert_close(norm.running_mean, features.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(norm.running_var, features.var(0, unbiased=False))
    for key, value in model.state_dict().items():  # the user's model and statistics untouched
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert grown.bn1.num_batches_tracked == model.bn1.num_batches_tracked


def test_the_inserted_norm_follows_the_chains_batchnorm_not_the_layer():
    """bn1 normalizes by batch statistics (train) while fc1 is in eval: the new norm trains
    too, so it is the identity on batches like ``data`` (and in eval mode on any input)."""
    model = give_statistics(mlp(3, [4, 5], 2, norm="batch").double(), (3,), seed=0).train()
    model.fc1.eval()
    x = _x((3,))
    grown, report = deepen(model, "fc1", data=x)
    new, norm = (grown.get_submodule(n) for n in report.inserted)
    assert norm.training and not new.training
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x), rtol=0, atol=1e-10)
