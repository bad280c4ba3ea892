"""Theory check ``pes-unbiased``: PES is unbiased for the smoothed full-unroll gradient.

On :class:`~metalab.lopt.toy_systems.LinearQuadratic` the full meta-loss is a quadratic in
θ, so its Gaussian smoothing has exactly the gradient of the un-smoothed loss, known in
closed form (:func:`~metalab.lopt.toy_systems.linear_quadratic_loss`). The episode length
is not a multiple of the window, so PES must credit losses after a mid-window reset
correctly. See ``theory/pes-unbiased.md`` for the derivation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, positive
from metalab.lopt.experiments_toy import single_thread
from metalab.lopt.registry import make_estimator
from metalab.lopt.toy_systems import LinearQuadratic, linear_quadratic_loss
from metalab.lopt.training import estimate_statistics

__all__ = ["PESUnbiasedParams", "pes_unbiased"]


@dataclass
class PESUnbiasedParams:
    """System, estimator and sample sizes of the check."""

    dim: int = at_least(1, 3)
    horizon: int = at_least(1, 10)
    truncation: int = at_least(1, 4)
    decay: float = 0.9
    coupling: float = -0.5
    theta0: float = 0.3
    pairs: int = at_least(1, 20)
    sigma: float = positive(0.1)
    repeats: int = at_least(2, 400)  # a standard error needs two samples


@runner_params(PESUnbiasedParams)
def pes_unbiased(config: RunConfig, run: Run) -> dict[str, float]:
    """Mean of many PES / truncated-ES / TBPTT / full-ES estimates vs the exact gradient.

    A sample sums estimates over ``lcm(T, K)`` steps, divided by the episodes they span.
    """
    p = config.typed(PESUnbiasedParams)
    system = LinearQuadratic(
        dim=p.dim, horizon=p.horizon, decay=p.decay, coupling=p.coupling, theta0=p.theta0
    )
    theta = system.initial_theta()
    exact = linear_quadratic_loss(system, theta)[1]
    span = p.horizon * p.truncation // math.gcd(p.horizon, p.truncation)
    episodes = span // p.horizon
    es = {"pairs": p.pairs, "sigma": p.sigma}
    setups = {
        "pes": (make_estimator("pes", truncation=p.truncation, **es), span // p.truncation),
        "tes": (
            make_estimator("truncated-es", truncation=p.truncation, **es),
            span // p.truncation,
        ),
        "tbptt": (make_estimator("tbptt", truncation=p.truncation), span // p.truncation),
        "full_es": (make_estimator("full-es", **es), episodes),
    }
    metrics: dict[str, float] = {"episodes_per_sample": float(episodes)}
    for label, (estimator, windows) in setups.items():
        with single_thread():
            stats = estimate_statistics(
                system,
                estimator,
                theta,
                repeats=p.repeats,
                windows=windows,
                generator=config.generator(f"noise/{label}"),
            )
        mean = stats.mean.double() / episodes
        stderr = stats.stderr.double() / episodes
        error = mean - exact
        z = torch.where(stderr > 0, error.abs() / stderr.clamp(min=1e-30), error.abs() * math.inf)
        z = torch.where(error == 0, torch.zeros_like(z), z)
        metrics[f"{label}.max_abs_z"] = float(z.max())
        metrics[f"{label}.rel_error"] = float(error.norm() / exact.norm())
        run.log(
            None,
            estimator=label,
            mean=mean.tolist(),
            stderr=stderr.tolist(),
            exact=exact.tolist(),
            z=z.tolist(),
        )
    return metrics
