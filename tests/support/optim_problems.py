"""A small smooth problem on which an optimizer arch is compared with a ``torch.optim`` one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from metalab.lopt.mlp_lopt import Segments


def tanh_regression(size: int = 6, rows: int = 6, seed: int = 0):
    """``(loss, x0)``: ``loss(x) = ‖A tanh(x) − b‖²`` over the last axis, in float64."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, size, generator=gen, dtype=torch.float64)
    target = torch.randn(rows, generator=gen, dtype=torch.float64)
    x0 = torch.randn(size, generator=gen, dtype=torch.float64)

    def loss(x):
        return (torch.tanh(x) @ a.T - target).pow(2).sum(-1)

    return loss, x0


def run_arch(arch, theta_rows, steps: int, shapes: Sequence[tuple[int, ...]] = ((6,),), **problem):
    """Parameters ``[P, steps, N]`` after each step of ``arch`` (one row of θ per particle)."""
    loss, x0 = tanh_regression(**problem)
    params = x0.repeat(theta_rows.shape[0], 1)
    segments = Segments.from_shapes(list(shapes), torch.device("cpu"))
    state = arch.init_state(params, segments)
    history = []
    for t in range(steps):
        p = params.clone().requires_grad_(True)
        (grads,) = torch.autograd.grad(loss(p).sum(), p)
        t_rows = torch.full((len(params),), t)
        params, state = arch.step(theta_rows, params, grads, state, t_rows, segments)
        history.append(params)
    return torch.stack(history, 1)


def run_torch(make_opt: Callable, steps: int, **problem):
    """Parameters ``[steps, N]`` after each step of ``make_opt([x])`` on the same problem."""
    loss, x0 = tanh_regression(**problem)
    x = x0.clone().requires_grad_(True)
    opt = make_opt([x])
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss(x).backward()
        opt.step()
        history.append(x.detach().clone())
    return torch.stack(history)
