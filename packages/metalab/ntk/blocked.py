"""Averaged SGD in the NTK's RKHS, ``c`` steps at a time by an exact block recursion.

The kernel learner of :mod:`metalab.ntk.asgd` (Algorithm 1 of Nitanda & Suzuki, 2021, in
spectral coordinates ``ψ_j = √μ_j φ_j``) is linear, so ``c`` consecutive steps of one lane
can be computed at once. With ``q = 1 − ηλ``, ``e_s = ψ_sᵀθ_s − y_s`` and
``θ_{s+1} = qθ_s − η e_s ψ_s``:

``e_s + η Σ_{u<s} q^{s−1−u} k(x_s, x_u) e_u = q^s ψ_sᵀθ_0 − y_s``

— a unit lower-triangular system whose matrix is the (truncated) NTK Gram matrix of the
block, ``ψ(x)ᵀψ(x') = Σ_k μ_k N(d,k) P_k(xᵀx')`` by the addition theorem
(:func:`dot_kernel_gram`; the runner takes it as the product of the features, which is
cheaper for the circle's 129 features and exactly consistent with them). Then
``θ_c = q^c θ_0 − η Σ_u q^{c−1−u} e_u ψ_u`` and the running sum of the iterates gains
``Σ_{s=1}^{c} q^s θ_0 − η Σ_u (Σ_{m<c−u} q^m) e_u ψ_u``: every step of Algorithm 1 exactly,
as a few batched matrix products instead of ``c`` rounds of Python-level tensor ops.

Lanes are laid out as ``(seeds, K)``: the ``K`` lanes of one seed (every horizon and every
target of a sphere) read the *same* sample stream (common random numbers), so the harmonic
basis and the Gram matrix of a block are computed once per seed. Each lane on its own is
still a fresh one-pass run; only lanes of different seeds are independent.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.ntk.sphere import basis_degrees, harmonic_basis, sample_sphere

__all__ = ["block_kernel_step", "dot_kernel_gram", "run_kernel_blocked"]


def dot_kernel_gram(x: Tensor, weights: Tensor, *, dim: int) -> Tensor:
    """``G_su = Σ_k w_k P_k^{(d)}(x_sᵀx_u)`` for points ``x`` (``(..., c, d)``) → ``(..., c, c)``.

    With ``w_k = μ_k N(d, k)`` this is ``ψ(x_s)ᵀψ(x_u)`` for the spectral features truncated
    at degree ``len(weights) − 1`` (addition theorem; Chebyshev on the circle, Legendre on S²).
    """
    t = (x @ x.transpose(-1, -2)).clamp_(-1.0, 1.0)
    previous, current = torch.ones_like(t), t
    gram = torch.full_like(t, float(weights[0]))
    for k in range(1, weights.numel()):
        gram.add_(current, alpha=float(weights[k]))
        if k + 1 < weights.numel():
            if dim == 2:  # T_{k+1} = 2t T_k − T_{k−1}
                nxt = torch.addcmul(-previous, current, t, value=2.0)
            else:  # (k+1) P_{k+1} = (2k+1) t P_k − k P_{k−1}
                nxt = torch.addcmul(previous, current, t, value=-(2 * k + 1) / k)
                nxt.mul_(-k / (k + 1))
            previous, current = current, nxt
    return gram


def block_kernel_step(
    theta: Tensor, total: Tensor, psi: Tensor, y: Tensor, gram: Tensor, *, decay: Tensor, lr: Tensor
) -> None:
    """Advance every lane by the ``c`` samples of a block, in place.

    Args:
        theta: ``(S, K, J)`` current spectral coordinates.
        total: ``(S, K, J)`` running sum of the iterates (gains ``θ_1 … θ_c``).
        psi: ``(S, c, J)`` features ``√μ_j φ_j(x_s)`` of the block (shared by a seed's lanes).
        y: ``(S, c, K)`` labels (per lane, since lanes may have different targets).
        gram: ``(S, c, c)`` ``ψ_sᵀψ_u`` (only the strictly lower triangle is read).
        decay: ``(K,)`` ``q = 1 − ηλ``.
        lr: ``(K,)`` step sizes ``η``.
    """
    c, k = psi.shape[1], theta.shape[1]
    qpow = decay[:, None] ** torch.arange(c + 1, dtype=psi.dtype)  # (K, c+1)
    head = qpow[:, :c]
    # D⁻¹(I + N)D = I + (η/q) G_lower with D = diag(q^s): solve for ẽ = D⁻¹e
    rhs = torch.bmm(theta, psi.transpose(1, 2)) - y.transpose(1, 2) / head  # (S, K, c)
    system = gram[:, None] * (lr / decay)[None, :, None, None]
    scaled = torch.linalg.solve_triangular(
        system, rhs.unsqueeze(-1), upper=False, unitriangular=True
    ).squeeze(-1)
    err = scaled * head * lr[:, None]  # η e_u
    last_weight = head.flip(-1)  # q^{c−1−u}
    sum_weight = torch.cumsum(head, dim=1).flip(-1)  # Σ_{m=0}^{c−1−u} q^m
    update = torch.bmm(torch.cat([err * last_weight, err * sum_weight], dim=1), psi)
    total.add_(theta * qpow[:, 1:].sum(1)[None, :, None]).sub_(update[:, k:])
    theta.mul_(qpow[:, c][None, :, None]).sub_(update[:, :k])


def _risk(theta: Tensor, sqrt_mu: Tensor, coef: Tensor) -> Tensor:
    """``‖Σ_j θ_j √μ_j φ_j − g_ρ‖²`` for ``theta`` ``(S, K, J)`` and ``coef`` ``(K, J_t)``."""
    fitted = theta * sqrt_mu
    width = min(fitted.shape[-1], coef.shape[-1])
    inside = ((fitted[..., :width] - coef[:, :width]) ** 2).sum(-1)
    return inside + (fitted[..., width:] ** 2).sum(-1) + (coef[:, width:] ** 2).sum(-1)


def run_kernel_blocked(
    mu: np.ndarray,
    coef: Tensor,
    *,
    lam: Tensor,
    eta: Tensor,
    horizon: Tensor,
    seeds: int,
    dim: int,
    feature_degree: int,
    noise_half_width: float,
    generator: torch.Generator,
    block: int = 32,
) -> tuple[Tensor, Tensor]:
    """Kernel Algorithm 1 for ``seeds × K`` lanes; excess risks ``(averaged, last)``, ``(S, K)``.

    Args:
        mu: NTK eigenvalue per degree (≥ ``feature_degree + 1`` of them).
        coef: ``(K, J_t)`` target coefficients of each lane (harmonic basis, full degrees).
        lam: ``(K,)`` λ of each lane (the same for every seed).
        eta: ``(K,)`` step size η of each lane.
        horizon: ``(K,)`` horizon ``T`` of each lane.
        seeds: independent sample streams (each shared by its ``K`` lanes).
        dim: input dimension (2 or 3).
        feature_degree: highest harmonic degree of the features.
        noise_half_width: labels get ``U[−a, a]`` noise.
        generator: the stream's random numbers.
        block: steps per exact block solve.

    Raises:
        ConfigError: bad horizons, step sizes or block size.
    """
    if block < 1 or seeds < 1 or bool((horizon < 1).any()) or bool((eta <= 0).any()):
        raise ConfigError("need block ≥ 1, seeds ≥ 1, horizons ≥ 1 and positive step sizes")
    if bool((lam < 0).any()) or bool((eta * lam >= 1).any()):
        raise ConfigError("need λ ≥ 0 and ηλ < 1")
    degrees = basis_degrees(dim, feature_degree)
    sqrt_mu = torch.from_numpy(np.sqrt(np.clip(mu[degrees], 0.0, None)))
    target_degree = int(basis_degrees(dim, 200)[coef.shape[1] - 1])
    lanes = horizon.numel()
    theta = torch.zeros((seeds, lanes, degrees.size), dtype=torch.float64)
    total = torch.zeros_like(theta)
    averaged = torch.full((seeds, lanes), torch.nan, dtype=torch.float64)
    last = torch.full_like(averaged, torch.nan)
    active, t = torch.arange(lanes), 0
    decay = 1 - eta * lam
    for end in sorted({int(h) for h in horizon}):
        while t < end:
            size = min(block, end - t)
            x = sample_sphere((seeds, size), dim, generator=generator, dtype=torch.float64)
            basis = harmonic_basis(x, max(target_degree, feature_degree))
            noise = torch.rand((seeds, size, 1), generator=generator, dtype=torch.float64)
            y = basis[..., : coef.shape[1]] @ coef[active].T + (2 * noise - 1) * noise_half_width
            psi = basis[..., : degrees.size] * sqrt_mu
            gram = torch.bmm(psi, psi.transpose(1, 2))  # = dot_kernel_gram(x, μ_k N(d,k))
            block_kernel_step(theta, total, psi, y, gram, decay=decay[active], lr=eta[active])
            t += size
        done = horizon[active] == end
        rows = active[done]
        averaged[:, rows] = _risk(total[:, done] / (end + 1), sqrt_mu, coef[rows])
        last[:, rows] = _risk(theta[:, done], sqrt_mu, coef[rows])
        theta, total, active = theta[:, ~done], total[:, ~done], active[~done]
    return averaged, last
