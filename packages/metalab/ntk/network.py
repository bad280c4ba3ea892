"""The paper's two-layer network in the NTK parameterization, batched over lanes.

Nitanda & Suzuki (2021), Sec. 2: ``g_Θ(x) = (1/√M) Σ_r a_r σ(b_rᵀx + γ c_r)`` with all of
``a, B, c`` trained and the *symmetric initialization*: ``a_r = +R`` for ``r < M/2`` and
``−R`` otherwise, ``b_r = b_{r+M/2}`` uniform on ``S^{d−1}``, ``c = 0`` (so ``g_{Θ⁰} ≡ 0``).

Many networks ("lanes": seeds × horizons × widths) are stored in one tensor
``P`` of shape ``(L, d + 2, M_max)`` with ``P[:, 0] = a``, ``P[:, 1:d+1] = Bᵀ`` and
``P[:, d+1] = c``; a lane of width ``M < M_max`` keeps its extra neurons at zero and
masked. With ``v = (0, x, γ)`` the pre-activations are ``P v``, which makes the SGD step a
handful of batched tensor operations (:mod:`metalab.ntk.asgd`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import functional_call, jacrev, vmap

from metalab.core.errors import ConfigError
from metalab.ntk.activations import Activation

__all__ = [
    "augment_inputs",
    "empirical_ntk",
    "network_forward",
    "single_network_output",
    "symmetric_init",
    "width_mask",
]


def width_mask(widths: Sequence[int], *, dtype: torch.dtype) -> Tensor:
    """``(L, M_max)`` mask, 1 on the first ``M_l`` neurons of lane ``l``."""
    w = torch.as_tensor(list(widths))
    return (torch.arange(int(w.max()))[None, :] < w[:, None]).to(dtype)


def symmetric_init(
    widths: Sequence[int],
    dim: int,
    *,
    radius: float = 1.0,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Symmetric initialization of one network per entry of ``widths`` (each even).

    Returns:
        ``P⁰`` of shape ``(L, d + 2, M_max)``; neurons beyond a lane's width are zero.

    Raises:
        ConfigError: a width that is not a positive even integer.
    """
    if any(int(m) <= 0 or int(m) % 2 for m in widths):
        raise ConfigError(f"widths must be positive and even (symmetric init), got {list(widths)}")
    half = torch.as_tensor([int(m) // 2 for m in widths])
    lanes, m_max = half.numel(), 2 * int(half.max())
    z = torch.randn((lanes, m_max // 2, dim), generator=generator, dtype=dtype)
    b_half = z / z.norm(dim=-1, keepdim=True)
    neuron = torch.arange(m_max)[None, :]
    source = (neuron % half[:, None]).clamp_max(m_max // 2 - 1)
    b = torch.gather(b_half, 1, source[..., None].expand(lanes, m_max, dim))
    mask = width_mask([2 * int(h) for h in half], dtype=dtype)
    sign = torch.where(neuron < half[:, None], 1.0, -1.0).to(dtype)
    params = torch.zeros((lanes, dim + 2, m_max), dtype=dtype)
    params[:, 0] = radius * sign * mask
    params[:, 1 : dim + 1] = (b * mask[..., None]).transpose(1, 2)
    return params


def augment_inputs(x: Tensor, gamma: float) -> Tensor:
    """``v = (0, x, γ)`` so that ``P v = Bx + γc`` (shape ``(..., d + 2)``)."""
    zeros = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    return torch.cat([zeros, x, torch.full_like(zeros, gamma)], dim=-1)


def network_forward(
    params: Tensor,
    x: Tensor,
    activation: Activation,
    *,
    gamma: float,
    widths: Sequence[int] | Tensor,
    block: int | None = None,
) -> Tensor:
    """Outputs ``g_Θ(x)`` of every lane at shared points ``x`` (``(n, d)``) → ``(L, n)``.

    The points go in blocks small enough that one block's ``(L, n_b, M)`` pre-activations
    stay in cache (about 2²⁰ numbers): the activation is the cost here, and with blocks of
    hundreds of points it ran from main memory, ~4× slower (the risk quadrature of an
    M = 16384 network on S² evaluates 8192 points per lane).
    """
    w = torch.as_tensor(widths, dtype=params.dtype)
    mask = (torch.arange(params.shape[2])[None, :] < w[:, None]).to(params.dtype)
    a = (params[:, 0] * mask).unsqueeze(-1)  # (L, M, 1)
    if block is None:
        block = max(1, (1 << 20) // (params.shape[0] * params.shape[2]))
    outs = []
    for start in range(0, x.shape[0], block):
        v = augment_inputs(x[start : start + block], gamma)  # (n_b, d+2)
        pre = torch.matmul(v, params)  # (L, n_b, M)
        outs.append(torch.bmm(activation(pre), a).squeeze(-1))
    return torch.cat(outs, dim=1) / w.sqrt()[:, None]


def single_network_output(
    params: dict[str, Tensor], x: Tensor, activation: Activation, *, gamma: float
) -> Tensor:
    """``g_Θ(x)`` for one network given as ``{"a": (M,), "B": (M, d), "c": (M,)}``."""
    pre = params["B"] @ x + gamma * params["c"]
    return (params["a"] * activation(pre)).sum() / params["a"].shape[0] ** 0.5


class _Net(torch.nn.Module):
    """A parameter container so :func:`torch.func.functional_call` can drive the model."""

    def __init__(self, params: dict[str, Tensor], activation: Activation, gamma: float) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_parameter(name, torch.nn.Parameter(value.clone()))
        self.activation, self.gamma = activation, gamma

    def forward(self, x: Tensor) -> Tensor:
        params: dict[str, Tensor] = {name: p for name, p in self.named_parameters()}
        return single_network_output(params, x, self.activation, gamma=self.gamma)


def empirical_ntk(
    params: dict[str, Tensor], x: Tensor, activation: Activation, *, gamma: float
) -> Tensor:
    """Gram matrix ``K_ij = ⟨∇_Θ g(x_i), ∇_Θ g(x_j)⟩`` of one network at points ``x``.

    Per-example Jacobians come from ``vmap(jacrev(functional_call(...)))`` (torch.func).
    """
    model = _Net(params, activation, gamma)
    frozen = {name: p.detach() for name, p in model.named_parameters()}

    def output(theta: dict[str, Tensor], point: Tensor) -> Tensor:
        return functional_call(model, theta, (point,))

    jac = vmap(jacrev(output), in_dims=(None, 0))(frozen, x)
    flat = torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=1)
    return flat @ flat.T
