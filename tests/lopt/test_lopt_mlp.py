import math

import pytest
import torch

from metalab.lopt import PES
from metalab.lopt.mlp_lopt import (
    NUM_FEATURES,
    MLPLOptShapes,
    Segments,
    init_mlp_lopt,
    mlp_lopt_step,
    time_features,
)
from metalab.lopt.tasks import DigitsMLP, LearnedOptimizerSystem

TASK = DigitsMLP()


def test_the_optimizer_has_the_papers_size():
    assert NUM_FEATURES == 19
    assert MLPLOptShapes().size == 19 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2 == 1762
    assert TASK.num_params == 64 * 32 + 32 + 32 * 10 + 10


def test_hand_written_backward_matches_autograd_in_double():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 4, dtype=torch.float64, generator=gen)
    y = torch.randint(3, (3, 5), generator=gen)
    task = DigitsMLP((4, 6, 3), data=(x[0], y[0]))
    params = task.init_params(3, generator=gen).double().requires_grad_(True)
    loss, grad = task.loss_and_grad(params.detach(), x, y)
    assert torch.allclose(loss, task.loss(params, x, y))
    (auto,) = torch.autograd.grad(task.loss(params, x, y).sum(), params)
    assert torch.allclose(grad, auto, atol=1e-12)
    assert torch.autograd.gradcheck(lambda p: task.loss(p, x, y), (params,))


def test_segment_normalization_gives_unit_rms_per_tensor():
    segments = Segments.from_shapes(TASK.shapes, torch.device("cpu"))
    features = torch.randn(2, 3, TASK.num_params) * torch.linspace(0.1, 10, TASK.num_params)
    normalized = segments.normalize(features)
    for piece in torch.split(normalized, segments.sizes.tolist(), dim=-1):
        assert torch.allclose(piece.pow(2).mean(dim=-1), torch.ones(2, 3), atol=1e-4)
    assert torch.allclose(segments.rms(normalized), torch.ones(2, 3, 4), atol=1e-4)
    along_one = segments.normalize(features.transpose(1, 2), dim=1)
    assert torch.allclose(along_one, normalized.transpose(1, 2))


def test_time_features():
    feats = time_features(torch.tensor([0, 10]))
    assert feats.shape == (2, 11)
    assert feats[1, 2] == pytest.approx(0.0)  # tanh(10/10 - 1)
    assert feats[0, 0] == pytest.approx(math.tanh(-1.0))


def test_batched_update_equals_one_particle_at_a_time():
    gen = torch.Generator().manual_seed(1)
    theta = torch.stack([init_mlp_lopt(generator=gen) for _ in range(3)])
    params = TASK.init_params(3, generator=gen)
    grads, moments = (
        torch.randn(3, TASK.num_params, generator=gen),
        torch.rand(3, TASK.num_params, 6),
    )
    t = torch.tensor([0, 5, 100])
    new, new_m = mlp_lopt_step(theta, params, grads, moments, t, TASK.segments)
    for i in range(3):
        one, one_m = mlp_lopt_step(
            theta[i : i + 1],
            params[i : i + 1],
            grads[i : i + 1],
            moments[i : i + 1],
            t[i : i + 1],
            TASK.segments,
        )
        assert torch.allclose(new[i], one[0], atol=1e-6)
        assert torch.allclose(new_m[i], one_m[0])


def test_update_is_the_papers_output_rule():
    """With w3 = 0 and b3 = (d, m): every parameter moves by d·exp(0.001 m)·0.001."""
    shapes = MLPLOptShapes()
    theta = torch.zeros(1, shapes.size)
    theta[0, -2:] = torch.tensor([2.0, 100.0])
    params = torch.ones(1, TASK.num_params)
    new, _ = mlp_lopt_step(
        theta,
        params,
        torch.ones_like(params),
        torch.zeros(1, TASK.num_params, 6),
        torch.zeros(1),
        TASK.segments,
    )
    assert torch.allclose(new, params - 2.0 * math.exp(0.1) * 0.001)


def test_pes_on_the_learned_optimizer_system_runs_and_is_finite():
    system = LearnedOptimizerSystem(horizon=7)
    theta = system.initial_theta()
    estimator = PES(pairs=2, sigma=0.01, truncation=4, nan_loss=10.0, loss_clip=10.0)
    gen = torch.Generator().manual_seed(0)
    state = estimator.init(system, theta, generator=gen)
    for _ in range(3):  # crosses an episode end inside a window
        estimate, state = estimator.step(system, theta, state, generator=gen)
    assert estimate.grad.shape == (1762,)
    assert torch.isfinite(estimate.grad).all()
    assert estimate.grad.abs().sum() > 0
    assert 0 < float(estimate.loss) < 40
