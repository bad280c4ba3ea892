"""Shared pieces of the ``LearnedOptimizer`` tests: data, models, a hand-written θ, loops.

``gradient_descent_theta`` is a θ for the per-parameter MLP optimizer (Metz et al. 2019)
whose update is ``0.001 · c · g / RMS_tensor(g)`` — per-tensor normalized gradient
descent, a descent direction — so "training works" tests can demand that the loss falls.
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from torch import nn

from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.mlp_lopt import MLPLOptShapes
from metalab.lopt.optimizer import LearnedOptimizer

__all__ = [
    "adam_theta",
    "cancer",
    "gradient_descent_theta",
    "hier_opt",
    "mlp",
    "mlp_opt",
    "one_step",
    "round_trip",
    "train",
]


def gradient_descent_theta(c: float = 10.0) -> torch.Tensor:
    """MLP-optimizer weights with ``d = c · g/RMS(g)``, ``m = 0``: normalized gradient descent."""
    shapes = MLPLOptShapes()
    theta = torch.zeros(1, shapes.size)
    w = shapes.unflatten(theta)
    w["w1"][0, 1, 0], w["w1"][0, 1, 1] = 1.0, -1.0  # feature 1 = normalized gradient
    w["w2"][0, 0, 0] = w["w2"][0, 1, 1] = 1.0
    w["w3"][0, 0, 0], w["w3"][0, 1, 0] = c, -c  # d = c·relu(g) − c·relu(−g)
    return theta[0]


def cancer(dtype=torch.float32):
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=dtype), torch.tensor(y)


def mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(30, 16), nn.Tanh(), nn.Linear(16, 2)).to(dtype)


def train(model, opt, x, y, steps, *, val=None):
    losses = []
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(float(opt.step(closure, val_loss=val).detach()))
    return losses


def hier_opt(params):
    arch = HierarchicalArch(context_scale=1.0)
    return LearnedOptimizer(
        params, arch.init_theta(generator=torch.Generator().manual_seed(3)), arch
    )


def one_step(model, opt, x, y, **step_kwargs):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    step_kwargs.setdefault("loss", loss.detach())  # the hierarchical arch requires one
    opt.step(**step_kwargs)
    return loss


def round_trip(opt):
    """``opt.state_dict()`` after torch.save and torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def mlp_opt(params):
    return LearnedOptimizer(params, gradient_descent_theta(), "mlp")


def adam_theta():
    from metalab.lopt.baselines import AdamArch

    return AdamArch.theta(lr=1e-2)
