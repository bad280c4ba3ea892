"""What the traced graph cannot see, a real input can: ``widen(..., example=)`` and ``grow``.

fx traces without shapes, so ``x.view(x.size(0), -1)`` or ``flatten(1)`` of an *unbatched*
convolution output (axis 0 is the channels) looks like a flatten after the batch axis, and
a BatchNorm1d over the sequence axis of ``(N, S, F)`` looks like one over the units when
``S == F``. Given an example input, the growth is refused in one line instead of returning
a model that fails later; ``metalab net2net grow`` always checks on random inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from metalab.cli.main import cli
from metalab.core.errors import ConfigError
from metalab.net2net import GrowthRefused, grow_model, mlp, save_model, small_cnn, widen
from metalab.net2net.report import check_on_example
from tests.net2net.conftest import give_statistics


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Unbatched(nn.Module):
    """A per-image model: x is (C, H, W) with no batch axis, so size(0) is the channels."""

    def __init__(self, flatten: str) -> None:
        super().__init__()
        self.conv, self.fc, self.flatten = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(4, 3), flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))  # (2, 2, 2)
        flat = h.view(h.size(0), -1) if self.flatten == "view" else torch.flatten(h, 1)
        return self.fc(flat)


class SequenceBatchNorm(nn.Module):
    """BatchNorm1d over the sequence axis S of (N, S, F), with S == F == 4."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


@pytest.mark.parametrize("flatten", ["view", "flatten"])
def test_an_unbatched_flatten_is_refused_given_an_example(flatten):
    model = Unbatched(flatten).double()
    x = torch.randn(1, 2, 2, generator=gen(1), dtype=torch.float64)
    grown, _ = widen(model, "conv", 4, generator=gen())  # documented: not seen without one
    with pytest.raises(RuntimeError):
        grown(x)
    with pytest.raises(GrowthRefused, match="breaks the model on the example input") as info:
        widen(model, "conv", 4, generator=gen(), example=x)
    assert "unbatched" in str(info.value) and "\n" not in str(info.value)


def test_a_norm_over_another_axis_of_the_same_size_is_refused_given_an_example():
    model = SequenceBatchNorm().double().eval()
    x = torch.randn(5, 4, 3, generator=gen(1), dtype=torch.float64)
    with pytest.raises(GrowthRefused, match="breaks the model on the example input"):
        widen(model, "fc1", 6, generator=gen(), example=x)


@pytest.mark.parametrize(
    ("noise", "kind"), [(0.0, "gaussian"), (0.3, "zero_sum"), (0.3, "gaussian")]
)
def test_a_sound_widening_passes_the_check(noise, kind):
    model = give_statistics(small_cnn(1, [3, 4], 2, image_size=4), (1, 4, 4), seed=0)
    model.double().train()
    x = torch.randn(6, 1, 4, 4, generator=gen(1), dtype=torch.float64)
    grown, report = widen(
        model, "conv1", 5, noise=noise, noise_kind=kind, generator=gen(), example=x
    )
    assert report.new_width == 5 and grown.training and model.training  # modes restored


def test_an_example_the_model_cannot_run_is_a_config_error():
    with pytest.raises(ConfigError, match="example input does not run through the model"):
        widen(mlp(3, [4], 2), "fc1", 6, generator=gen(), example=torch.randn(2, 5))


def test_a_changed_output_is_refused_when_exactness_is_expected():
    model = mlp(3, [4], 2).double()
    other = mlp(3, [4], 2).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert check_on_example(model, model, x, what="nothing", exact=True) == 0.0
    with pytest.raises(GrowthRefused, match="nothing changes the model's output"):
        check_on_example(model, other, x, what="nothing", exact=True)
    assert check_on_example(model, other, x, what="noise", exact=False) > 0


def test_grow_model_refuses_a_growth_that_breaks_the_model():
    model = SequenceBatchNorm().eval()
    with pytest.raises(GrowthRefused, match=r"growing the model \(widened fc1 4 -> 6"):
        grow_model(model, (4, 3), widen_to=[("fc1", 6)], generator=gen())


def test_cli_grow_with_an_input_shape_that_does_not_fit_is_one_line(tmp_path):
    save_model(tmp_path / "m.pt", mlp(3, [4], 2), input_shape=(5,))
    result = CliRunner().invoke(
        cli,
        ["net2net", "grow", str(tmp_path / "m.pt"), "--widen", "fc1=6", "--out", "o.pt"],
    )
    assert result.exit_code == 2, result.output
    assert "does not run on inputs of shape [5]" in result.output
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0


_OLD_TORCH = """
import torch.nn as nn
del nn.RMSNorm  # torch < 2.4
del nn.Module.set_submodule  # torch < 2.5
import torch
from metalab.net2net import GrowthRefused, deepen, mlp, widen
model = mlp(3, [4, 5], 2, norm="batch")
grown, _ = deepen(model, "fc1")
grown, _ = widen(grown, "fc2", 7, generator=torch.Generator())
try:
    widen(nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Linear(4, 2)), "0", 6,
          generator=torch.Generator())
except GrowthRefused as exc:
    print("refused:", exc)
"""


def test_net2net_runs_without_apis_newer_than_torch_2_2():
    if not hasattr(nn, "RMSNorm") or not hasattr(nn.Module, "set_submodule"):
        pytest.skip("this torch already lacks them; the whole suite checks it")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _OLD_TORCH], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "refused: GroupNorm" in done.stdout
