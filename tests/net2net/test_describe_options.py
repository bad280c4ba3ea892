"""``net2net describe`` lists only what each option accepts; the file format names its scope."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from metalab.cli.main import cli
from metalab.core.errors import MetalabError
from metalab.net2net import deepen, layer_options, mlp, residual_cnn, save_model, widen


def _describe(tmp_path, model, shape) -> list[str]:
    save_model(tmp_path / "m.pt", model, input_shape=shape)
    result = CliRunner().invoke(cli, ["net2net", "describe", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_describe_marks_the_output_layer_as_accepted_by_neither(tmp_path):
    lines = _describe(tmp_path, mlp(4, [3, 5], 2), (4,))
    assert "  fc1: Linear 4 -> 3; accepts --widen, --deepen-after" in lines
    (out,) = [line for line in lines if line.startswith("  out:")]
    assert "accepts neither" in out and "output" in out


def test_describe_separates_widen_from_deepen_around_a_residual_sum(tmp_path):
    lines = _describe(tmp_path, residual_cnn(2, 4, 3, 5, blocks=1), (2, 6, 6))
    by_layer = {line.split(":")[0].strip(): line for line in lines[1:]}
    assert by_layer["stem"].endswith("accepts --deepen-after")
    assert by_layer["block1.body.conv1"].endswith("accepts --widen, --deepen-after")
    assert "accepts neither" in by_layer["block1.body.conv2"]


def test_every_option_listed_is_one_the_growth_accepts():
    """What describe offers must work: each accepted layer grows without a refusal."""
    for model, width in ((mlp(4, [3, 5], 2), 9), (residual_cnn(2, 4, 3, 5, blocks=2), 9)):
        options = layer_options(model)
        assert options
        for layer in options:
            if layer.widen is None:
                widen(model, layer.name, width, generator=torch.Generator())
            if layer.deepen is None:
                deepen(model, layer.name)


class MyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def test_saving_a_custom_module_names_the_formats_scope_and_the_python_api(tmp_path):
    with pytest.raises(MetalabError) as info:
        save_model(tmp_path / "c.pt", MyCNN(), input_shape=(3,))
    message = str(info.value)
    assert "\n" not in message
    assert "cannot describe a MyCNN" in message
    assert "nn.Sequential" in message and "CLI" in message
    assert "widen" in message and "deepen" in message
    widen(MyCNN(), "fc1", 6, generator=torch.Generator())  # the API grows it
