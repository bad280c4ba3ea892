"""The core on a real GPU: same numbers as on the CPU, nothing silently left on the host.

Skipped on machines without CUDA (CI); run on a GPU machine with ``pytest tests/core``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.core.claims import run_spec
from metalab.core.device import resolve_device
from metalab.core.population import antithetic_perturbations, module_params, population_loss
from metalab.core.seeding import make_generator
from metalab.core.specs import find_spec
from metalab.core.training import accuracy, train_supervised

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_picks_cuda_when_present():
    assert resolve_device("auto").type == "cuda"


def test_population_loss_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    stacked, _ = antithetic_perturbations(
        module_params(model), pairs=4, sigma=0.1, generator=make_generator(0, "noise")
    )
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    on_cpu = population_loss(model, stacked, F.cross_entropy, x, y)
    cuda = torch.device("cuda")
    on_gpu = population_loss(
        model.to(cuda),
        {k: v.to(cuda) for k, v in stacked.items()},
        F.cross_entropy,
        x.to(cuda),
        y.to(cuda),
    )
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)


def test_cuda_generators_are_reproducible():
    a = torch.randn(5, generator=make_generator(3, "noise", device="cuda"), device="cuda")
    b = torch.randn(5, generator=make_generator(3, "noise", device="cuda"), device="cuda")
    assert torch.equal(a, b)


def test_train_supervised_learns_on_cuda():
    cuda = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    x, y = x.to(cuda), y.to(cuda)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)).to(cuda)
    train_supervised(
        model,
        (x, y),
        optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
        epochs=20,
        batch_size=64,
        generator=gen,
    )
    assert accuracy(model, x, y) > 0.9


def test_run_spec_records_the_cuda_device(toy_experiments, tmp_path):
    outcome = run_spec(find_spec("toy-gd"), device="cuda", out=tmp_path)
    assert outcome.error is None
    assert outcome.summary["config"]["device"].startswith("cuda")
