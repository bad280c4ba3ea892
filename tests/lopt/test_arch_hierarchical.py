"""The hierarchical learned optimizer (Metz et al. 2020) and the architecture registry."""

from __future__ import annotations

import pytest
import torch

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.arch_mlp import MLPArch
from metalab.lopt.arch_registry import arch_names, make_arch, register_arch
from metalab.lopt.interfaces import LossFeatures, OptimizerArch
from metalab.lopt.mlp_lopt import Segments

SHAPES = [(3, 4), (4,), (2, 3, 3), ()]
SEGMENTS = Segments.from_shapes(SHAPES, torch.device("cpu"))
N = int(SEGMENTS.sizes.sum())


def _inputs(num: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(seed)
    params = torch.randn(num, N, generator=gen).to(dtype)
    grads = torch.randn(num, N, generator=gen).to(dtype)
    t = torch.arange(num, dtype=torch.float32) * 7
    losses = LossFeatures(torch.rand(num, generator=gen) + 0.5, torch.rand(num, generator=gen))
    return params, grads, t, losses


def _theta(arch: HierarchicalArch, num: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([arch.init_theta(generator=gen) for _ in range(num)])


def _run(arch, theta, params, grads, t, losses, steps=3):
    state = arch.init_state(params, SEGMENTS)
    for k in range(steps):
        params, state = arch.step(theta, params, grads * (k + 1), state, t + k, SEGMENTS, losses)
    return params, state


def test_shapes_and_size():
    arch = HierarchicalArch()
    theta = arch.init_theta(generator=torch.Generator().manual_seed(0))
    assert theta.shape == (arch.theta_dim,) == (9867,)
    params, grads, t, losses = _inputs(3)
    state = arch.init_state(params, SEGMENTS)
    new, new_state = arch.step(theta.expand(3, -1), params, grads, state, t, SEGMENTS, losses)
    assert new.shape == params.shape and torch.isfinite(new).all()
    assert new_state.keys() == state.keys()
    assert {k: v.shape for k, v in new_state.items()} == {k: v.shape for k, v in state.items()}
    assert state["moments"].shape == (3, N, 6)
    assert state["lstm_h"].shape == (3, len(SHAPES), 32)


def test_deterministic():
    arch = HierarchicalArch(lstm=16, context=4)
    assert torch.equal(_theta(arch, 2, seed=5), _theta(arch, 2, seed=5))
    inputs = _inputs(2)
    a, _ = _run(arch, _theta(arch, 2), *inputs)
    b, _ = _run(arch, _theta(arch, 2), *inputs)
    assert torch.equal(a, b)


def test_embedded_mlp_theta_makes_the_mlp_updates():
    mlp, arch = MLPArch(), HierarchicalArch()
    mlp_theta = torch.stack(
        [mlp.init_theta(generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    )
    theta = torch.stack([arch.theta_from_mlp(row) for row in mlp_theta])
    params, grads, t, losses = _inputs(2)
    expected, _ = _run(mlp, mlp_theta, params, grads, t, None)
    got, _ = _run(arch, theta, params, grads, t, losses)
    assert not torch.allclose(expected, params)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_fresh_hierarchical_is_close_to_fresh_mlp():
    arch = HierarchicalArch()
    theta = _theta(arch, 2)
    mlp_theta = theta[:, : MLPArch().theta_dim]
    params, grads, t, losses = _inputs(2)
    hier, _ = _run(arch, theta, params, grads, t, losses)
    plain, _ = _run(MLPArch(), mlp_theta, params, grads, t, None)
    diff = (hier - plain).norm() / (plain - params).norm()
    assert 0 < diff < 0.1  # conditioned, but a small perturbation of the MLP step


def test_validation_loss_changes_the_update():
    arch = HierarchicalArch(context_scale=1.0)
    params, grads, t, losses = _inputs(2)
    val = losses.val.clone().requires_grad_(True)
    theta = _theta(arch, 2)
    state = arch.init_state(params, SEGMENTS)
    state["val_seen"] = torch.ones(2)
    state["val_init"] = torch.full((2,), 0.7)
    new, _ = arch.step(theta, params, grads, state, t, SEGMENTS, losses._replace(val=val))
    (grad,) = torch.autograd.grad(new.square().sum(), val)
    assert (grad.abs() > 0).all()


def test_works_without_validation_or_any_loss():
    arch = HierarchicalArch(context_scale=1.0)
    params, grads, t, losses = _inputs(2)
    theta = _theta(arch, 2)
    with_val, _ = _run(arch, theta, params, grads, t, losses)
    no_val, state = _run(arch, theta, params, grads, t, losses._replace(val=None))
    no_loss, _ = _run(arch, theta, params, grads, t, None)
    for out in (no_val, no_loss):
        assert torch.isfinite(out).all() and not torch.allclose(out, params)
    assert not torch.allclose(with_val, no_val)
    assert torch.equal(state["val_seen"], torch.zeros(2))


def test_non_finite_training_loss_keeps_the_previous_loss_statistics():
    """A NaN/inf training loss used to make every parameter NaN within 3 steps, silently.

    Masked without a device sync: that step is the step fed the running loss, and the
    loss references stay as they were.
    """
    arch = HierarchicalArch(context_scale=1.0)
    params, grads, t, losses = _inputs(3)
    theta = _theta(arch, 3)
    params, state = _run(arch, theta, params, grads, t, losses)
    bad = losses._replace(train=torch.tensor([float("nan"), float("inf"), 0.8]))
    new, new_state = arch.step(theta, params, grads, state, t + 3, SEGMENTS, bad)
    stand_in = losses._replace(train=torch.cat([state["train_ema"][:2], torch.tensor([0.8])]))
    expected, expected_state = arch.step(theta, params, grads, state, t + 3, SEGMENTS, stand_in)
    assert torch.isfinite(new).all() and torch.equal(new, expected)
    for key in ("train_init", "train_ema", "train_seen"):
        assert torch.allclose(new_state[key], expected_state[key])
        assert torch.allclose(new_state[key][:2], state[key][:2])
    for _ in range(3):  # repeated bad steps, then a finite one: all finite
        new, new_state = arch.step(theta, new, grads, new_state, t + 4, SEGMENTS, bad)
    new, _ = arch.step(theta, new, grads, new_state, t + 7, SEGMENTS, losses)
    assert torch.isfinite(new).all()


def test_non_finite_loss_before_any_finite_one_and_non_finite_validation_loss():
    arch = HierarchicalArch(context_scale=1.0)
    params, grads, t, losses = _inputs(2)
    theta = _theta(arch, 2)
    state = arch.init_state(params, SEGMENTS)
    nan = torch.full((2,), float("nan"))
    new, after = arch.step(theta, params, grads, state, t, SEGMENTS, losses._replace(train=nan))
    assert torch.isfinite(new).all()
    assert torch.equal(after["train_seen"], torch.zeros(2))  # the first finite loss sets them
    no_val, _ = arch.step(theta, params, grads, state, t, SEGMENTS, losses._replace(val=None))
    bad_val, after = arch.step(theta, params, grads, state, t, SEGMENTS, losses._replace(val=nan))
    assert torch.equal(bad_val, no_val)  # a NaN validation loss counts as none
    assert torch.equal(after["val_seen"], torch.zeros(2))


def test_batched_equals_per_particle_loop():
    arch = HierarchicalArch(lstm=16)
    params, grads, t, losses = _inputs(4)
    theta = _theta(arch, 4)
    batched, batched_state = _run(arch, theta, params, grads, t, losses)
    for p in range(4):
        one = LossFeatures(losses.train[p : p + 1], losses.val[p : p + 1])
        single, single_state = _run(
            arch, theta[p : p + 1], params[p : p + 1], grads[p : p + 1], t[p : p + 1], one
        )
        torch.testing.assert_close(batched[p : p + 1], single, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batched_state["lstm_h"][p : p + 1], single_state["lstm_h"])


def test_float64_params_keep_their_dtype():
    arch = HierarchicalArch()
    params, grads, t, losses = _inputs(2, dtype=torch.float64)
    new, state = _run(arch, _theta(arch, 2), params, grads, t, losses)
    assert new.dtype == torch.float64 and state["lstm_h"].dtype == torch.float64
    assert torch.isfinite(new).all()


def test_registry_names_and_errors():
    assert {"mlp", "hierarchical"} <= set(arch_names())
    assert isinstance(make_arch("mlp"), MLPArch)
    arch = make_arch("hierarchical", lstm=8, context=None)
    assert isinstance(arch, HierarchicalArch) and arch.shapes.lstm == 8
    with pytest.raises(UnknownNameError, match="did you mean hierarchical"):
        make_arch("hierarchal")
    with pytest.raises(ConfigError, match="does not take lstm"):
        make_arch("mlp", lstm=4)


def test_register_arch_is_idempotent_and_refuses_taken_names():
    assert register_arch(MLPArch) is MLPArch

    class Impostor(MLPArch):
        name = "mlp"

    with pytest.raises(ConfigError, match="already taken"):
        register_arch(Impostor)

    class Nameless(MLPArch):
        name = ""

    with pytest.raises(ConfigError, match="no name"):
        register_arch(Nameless)
    assert all(issubclass(type(make_arch(n)), OptimizerArch) for n in arch_names())
