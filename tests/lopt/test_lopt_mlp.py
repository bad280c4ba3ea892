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


def _reference_step(theta, params, grads, moments, t, shapes=None):
    """The update written straight from its definition (19 features, plain MLP), per particle."""
    shapes = shapes or MLPLOptShapes()
    betas = torch.tensor([0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
    new_moments = betas * moments + (1 - betas) * grads.unsqueeze(-1)
    outs = []
    for i in range(params.shape[0]):
        feats = torch.cat([params[i, :, None], grads[i, :, None], new_moments[i]], dim=1)
        pieces = torch.split(feats, TASK.segments.sizes.tolist(), dim=0)
        feats = torch.cat([p / torch.sqrt(p.pow(2).mean(0) + 1e-12) for p in pieces])
        time = time_features(t[i : i + 1]).expand(feats.shape[0], -1)
        w = {k: v[0] for k, v in shapes.unflatten(theta[i : i + 1]).items()}
        h = torch.relu(torch.cat([feats, time], dim=1) @ w["w1"] + w["b1"])
        h = torch.relu(h @ w["w2"] + w["b2"])
        out = h @ w["w3"] + w["b3"]
        outs.append(params[i] - out[:, 0] * torch.exp(0.001 * out[:, 1]) * 0.001)
    return torch.stack(outs), new_moments


@pytest.mark.parametrize("cache_bytes", [2**40, 2**20])  # one block / several particle blocks
def test_update_matches_the_definition(monkeypatch, cache_bytes):
    monkeypatch.setattr("metalab.lopt.mlp_lopt._CACHE_BYTES", cache_bytes)
    gen = torch.Generator().manual_seed(3)
    theta = torch.stack([init_mlp_lopt(generator=gen) for _ in range(5)])
    theta = theta + 0.1 * torch.randn(theta.shape, generator=gen)
    params = TASK.init_params(5, generator=gen)
    grads = torch.randn(5, TASK.num_params, generator=gen)
    moments = 0.1 * torch.randn(5, TASK.num_params, 6, generator=gen)
    t = torch.tensor([0, 3, 40, 999, 20000])
    new, new_m = mlp_lopt_step(theta, params, grads, moments, t, TASK.segments)
    ref, ref_m = _reference_step(theta, params, grads, moments, t)
    assert torch.allclose(new_m, ref_m, atol=1e-6)
    assert torch.allclose(new - params, ref - params, atol=1e-7, rtol=1e-4)


def test_update_is_differentiable_and_matches_the_in_place_path():
    gen = torch.Generator().manual_seed(4)
    theta = init_mlp_lopt(generator=gen).unsqueeze(0).repeat(2, 1)
    params = TASK.init_params(2, generator=gen).requires_grad_(True)
    grads = torch.randn(2, TASK.num_params, generator=gen)
    moments = torch.rand(2, TASK.num_params, 6, generator=gen)
    t = torch.tensor([1, 7])
    theta = (theta + 0.1 * torch.randn(theta.shape, generator=gen)).requires_grad_(True)
    new, _ = mlp_lopt_step(theta, params, grads, moments, t, TASK.segments)
    with torch.no_grad():
        fast, _ = mlp_lopt_step(theta, params, grads, moments, t, TASK.segments)
    assert torch.allclose(new, fast, atol=1e-7)
    d_theta, d_params = torch.autograd.grad(new.square().sum(), (theta, params))
    ref, _ = _reference_step(theta, params, grads, moments, t)
    r_theta, r_params = torch.autograd.grad(ref.square().sum(), (theta, params))
    assert torch.allclose(d_theta, r_theta, rtol=1e-3, atol=1e-6)
    assert torch.allclose(d_params, r_params, rtol=1e-4, atol=1e-6)


def test_in_place_normalization_equals_normalize_and_is_differentiable():
    segments = Segments.from_shapes([(3, 2), (4,), (5,)], torch.device("cpu"))
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 15, 3, dtype=torch.float64, generator=gen)
    assert segments.bounds == ((0, 6), (6, 10), (10, 15))
    assert torch.allclose(segments.normalize_(x.clone(), dim=1), segments.normalize(x, dim=1))
    assert torch.autograd.gradcheck(lambda v: segments.normalize(v, dim=1), (x.requires_grad_(),))
