"""``deepen`` refuses a growth that leaves a model that no longer runs.

The grown model runs the user's own forward, in which the wrapped module is now a
``Sequential``: a direct read of its tensors (tied weights) is refused from the traced
graph; a read of a plain attribute is invisible there and is caught by running an
``example`` (``data`` doubles as one).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.core.errors import ConfigError
from metalab.net2net import GrowthRefused, deepen, mlp, preservation_error


class TiedRead(nn.Module):
    """Reads ``c1.weight`` in the forward; ``c1`` is followed by a functional ReLU."""

    def __init__(self, read: str) -> None:
        super().__init__()
        self.read = read
        self.c1, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(x))
        if self.read == "weight":
            h = h * self.c1.weight.sum()
        elif self.read == "size":
            h = h[:, : self.c1.out_features]
        return self.out(h)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))


def test_a_forward_reading_the_wrapped_modules_tensor_is_refused_naming_it():
    with pytest.raises(GrowthRefused, match=r"'c1\.weight'") as info:
        deepen(TiedRead("weight"), "c1")
    assert "\n" not in str(info.value)
    with pytest.raises(GrowthRefused, match=r"'c1\.weight'"):
        deepen(TiedRead("weight"), "c1", data=_x())


def test_a_read_of_a_plain_attribute_is_caught_by_the_example():
    model = TiedRead("size")
    grown, _ = deepen(model, "c1")  # nothing in the graph shows the read
    with pytest.raises(AttributeError):
        grown(_x())
    for kwargs in ({"example": _x()}, {"data": _x()}):
        with pytest.raises(GrowthRefused, match=r"deepening after 'c1' .*breaks the model"):
            deepen(model, "c1", **kwargs)


def test_a_sound_deepening_passes_the_example_check():
    torch.manual_seed(0)
    model = mlp(3, [4, 5], 2, norm="batch").eval()
    grown, _ = deepen(model, "fc1", example=_x())
    assert preservation_error(model, grown, _x(1)) < 1e-5
    deepen(model.train(), "fc1", data=_x())
    deepen(model, "fc1", example=_x(), noise=0.5, generator=torch.Generator().manual_seed(0))


def test_an_example_the_model_cannot_run_is_a_config_error():
    with pytest.raises(ConfigError, match="does not run through the model"):
        deepen(TiedRead("none"), "c1", example=torch.zeros(5, 7))


def test_a_wrapped_activation_module_leaves_tensor_reads_alone():
    """With an ``nn.ReLU`` module after ``c1`` the ReLU is wrapped, so ``c1.weight`` stays."""

    class WithModule(TiedRead):
        def __init__(self) -> None:
            super().__init__("weight")
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.act(self.c1(x)) * self.c1.weight.sum())

    model = WithModule()
    grown, report = deepen(model, "c1", example=_x())
    assert report.wrapped == "act"
    assert preservation_error(model, grown, _x(1)) < 1e-5
