"""Rate studies: build the problems of a setting, run every (seed, horizon) lane, fit slopes.

A *setting* fixes the sphere ``S^{d−1}`` and the source exponent ``r``; with the NTK
spectrum it fixes ``β = d/(d−1)`` (Corollary 2), the predicted exponent ``2rβ/(2rβ+1)``,
``λ(T) = λ₀ T^{−β/(2rβ+1)}`` with the oracle constant λ₀ (bias = variance of the ridge proxy
at the largest horizon) and the step size ``η = η_scale / (4 κ(1))``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from metalab.core.errors import ConfigError
from metalab.core.stats import LogLogFit, fit_loglog
from metalab.ntk.activations import Activation, make_activation
from metalab.ntk.asgd import (
    ASGDResult,
    DataStream,
    KernelASGD,
    Lanes,
    Learner,
    NetworkASGD,
    run_asgd,
)
from metalab.ntk.blocked import run_kernel_blocked
from metalab.ntk.spectrum import NTKSpectrum, ntk_spectrum
from metalab.ntk.targets import SourceTarget, make_source_target
from metalab.ntk.theory import (
    averaged_sgd_risk,
    balanced_lambda0,
    predicted_exponent,
    regularization,
    ridge_proxy,
)

__all__ = [
    "ModelConfig",
    "Problem",
    "Setting",
    "fit_rate",
    "horizon_grid",
    "make_problem",
    "run_problems",
]

_TARGET_DEGREE = {2: 64, 3: 16}
_SPECTRUM_DEGREE = {2: 300, 3: 120}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Setting:
    """One (sphere, source exponent) pair of the rate check."""

    name: str
    dim: int
    r: float
    network: bool = True
    width: int = 0  # network width of this setting (0: the model's)
    target_log_power: float | None = None  # the target's p (None: the model's)


@dataclass(frozen=True)
class ModelConfig:
    """The network (and hence its NTK) and the data: paper Sec. 2 and (A2)."""

    activation: str = "swish"
    sharpness: float = 20.0
    radius: float = 1.0
    gamma: float = 1.0
    width: int = 2048
    eta_scale: float = 1.0
    noise_half_width: float = 0.5
    sup_norm: float = 0.5
    network_dtype: str = "float64"  # "float32" halves the network's memory traffic
    target_log_power: float = 2.0  # p of the target's energy μ_k^{2r} k^{−1}(1 + log k)^{−p}

    def torch_dtype(self) -> torch.dtype:
        """The network learner's floating type (the kernel learner always uses float64).

        Raises:
            ConfigError: anything but ``"float32"`` or ``"float64"``.
        """
        if self.network_dtype not in _DTYPES:
            raise ConfigError(
                f"network_dtype must be one of {sorted(_DTYPES)}, got {self.network_dtype!r}"
            )
        return _DTYPES[self.network_dtype]

    def make_activation(self) -> Activation:
        """The activation (sharpness applies to swish only)."""
        return make_activation(
            self.activation, sharpness=self.sharpness if self.activation == "swish" else None
        )


@dataclass
class Problem:
    """Everything a setting needs: spectrum, target, λ₀, η and the predictions."""

    setting: Setting
    spectrum: NTKSpectrum
    target: SourceTarget
    lambda0: float
    eta: float
    reference_horizon: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def predicted(self) -> float:
        """``2rβ/(2rβ+1)``."""
        return predicted_exponent(self.setting.r, self.spectrum.beta)

    def lam(self, horizon: np.ndarray | float) -> np.ndarray:
        """``λ(T)``."""
        return regularization(
            horizon, r=self.setting.r, beta=self.spectrum.beta, lambda0=self.lambda0
        )

    def proxy(self, horizon: np.ndarray | float) -> np.ndarray:
        """Ridge-proxy excess risk (bias + variance) at horizons ``T``."""
        bias, var = ridge_proxy(
            horizon,
            self.lam(horizon),
            mu=self.spectrum.mu,
            multiplicity=self.spectrum.multiplicity,
            energy=self.target.degree_energy(),
            noise_variance=self.target.noise_variance,
        )
        result: np.ndarray = bias + var
        return result

    def expected_risk(self, horizon: np.ndarray | float) -> np.ndarray:
        """Closed-form expected risk of the kernel learner (features up to its degree)."""
        keep = _TARGET_DEGREE[self.setting.dim] + 1
        return averaged_sgd_risk(
            horizon,
            self.lam(horizon),
            eta=self.eta,
            mu=self.spectrum.mu[:keep],
            multiplicity=self.spectrum.multiplicity[:keep],
            energy=self.target.degree_energy(),
            noise_variance=self.target.noise_variance,
            kappa_one=self.spectrum.kappa_one,
        )


def horizon_grid(t_max: float, *, decades: float, per_decade: int) -> np.ndarray:
    """Log-spaced integer horizons ending at ``t_max`` and spanning ``decades``."""
    if t_max < 10 or decades <= 0 or per_decade < 1:
        raise ConfigError("need t_max ≥ 10, decades > 0 and per_decade ≥ 1")
    count = round(decades * per_decade) + 1
    return np.unique(
        np.round(np.logspace(np.log10(t_max) - decades, np.log10(t_max), count)).astype(np.int64)
    )


@functools.lru_cache(maxsize=16)
def _spectrum(
    activation: str, sharpness: float, dim: int, radius: float, gamma: float
) -> NTKSpectrum:
    model = ModelConfig(activation=activation, sharpness=sharpness)
    return ntk_spectrum(
        model.make_activation(),
        dim=dim,
        max_degree=_SPECTRUM_DEGREE[dim],
        radius=radius,
        gamma=gamma,
    )


def make_problem(
    setting: Setting, model: ModelConfig, *, reference_horizon: float, generator: torch.Generator
) -> Problem:
    """Spectrum, source target (drawn from ``generator``), oracle λ₀ and step size."""
    if setting.dim not in _TARGET_DEGREE:
        raise ConfigError(f"setting {setting.name!r}: dim must be 2 or 3, got {setting.dim}")
    spectrum = _spectrum(model.activation, model.sharpness, setting.dim, model.radius, model.gamma)
    log_power = setting.target_log_power
    if log_power is None:
        log_power = model.target_log_power
    target = make_source_target(
        spectrum,
        r=setting.r,
        max_degree=_TARGET_DEGREE[setting.dim],
        generator=generator,
        sup_norm=model.sup_norm,
        noise_half_width=model.noise_half_width,
        log_power=log_power,
    )
    lambda0 = balanced_lambda0(
        reference_horizon,
        r=setting.r,
        beta=spectrum.beta,
        mu=spectrum.mu,
        multiplicity=spectrum.multiplicity,
        energy=target.degree_energy(),
        noise_variance=target.noise_variance,
    )
    eta = model.eta_scale / (4 * spectrum.kappa_one)
    return Problem(setting, spectrum, target, lambda0, eta, reference_horizon)


def _lanes(problems: Sequence[Problem], horizons: np.ndarray, seeds: int, width: int) -> Lanes:
    rows = [(p, t) for p in problems for _ in range(seeds) for t in horizons]
    horizon = torch.tensor([t for _, t in rows], dtype=torch.int64)
    lam = torch.tensor([float(p.lam(t)) for p, t in rows], dtype=torch.float64)
    eta = torch.tensor([p.eta for p, _ in rows], dtype=torch.float64)
    coef = torch.stack([p.target.coef for p, _ in rows])
    return Lanes(horizon, lam, eta, coef, torch.full((len(rows),), width, dtype=torch.int64))


def run_problems(
    problems: Sequence[Problem],
    model: ModelConfig,
    *,
    horizons: np.ndarray,
    seeds: int,
    network: bool,
    generator: torch.Generator,
) -> dict[str, np.ndarray]:
    """Run kernel (and network) ASGD on ``seeds × horizons`` lanes per problem (same sphere).

    Without the network, the kernel lanes run through the exact block recursion of
    :mod:`metalab.ntk.blocked` (a seed's lanes share its sample stream); with it, every lane
    pairs a network and a kernel on the same stream (:func:`metalab.ntk.asgd.run_asgd`).

    Returns:
        ``{"kernel.averaged": (P, seeds, H), "kernel.last": ..., "network.averaged": ...}``.
    """
    dims = {p.setting.dim for p in problems}
    if len(dims) != 1:
        raise ConfigError("run_problems needs problems on one sphere")
    dim = dims.pop()
    degree = _TARGET_DEGREE[dim]
    shape = (len(problems), seeds, horizons.size)
    if not network:
        lanes = _lanes(problems, horizons, 1, model.width)
        averaged, last = run_kernel_blocked(
            problems[0].spectrum.mu,
            lanes.coef,
            lam=lanes.lam,
            eta=lanes.eta,
            horizon=lanes.horizon,
            seeds=seeds,
            dim=dim,
            feature_degree=degree,
            noise_half_width=model.noise_half_width,
            generator=generator,
        )
        return {
            "kernel.averaged": _per_problem(averaged, shape),
            "kernel.last": _per_problem(last, shape),
        }
    learners: dict[str, Learner] = {
        "kernel": KernelASGD(problems[0].spectrum.mu, dim=dim, feature_degree=degree),
        "network": NetworkASGD(
            model.make_activation(),
            dim=dim,
            radius=model.radius,
            gamma=model.gamma,
            quadrature=4 * degree,
            dtype=model.torch_dtype(),
        ),
    }
    lanes = _lanes(problems, horizons, seeds, model.width)
    stream = DataStream(dim, degree, model.noise_half_width)
    results: dict[str, ASGDResult] = run_asgd(learners, lanes, stream, generator=generator)
    out = {}
    for name, res in results.items():
        out[f"{name}.averaged"] = res.averaged.reshape(shape).numpy()
        out[f"{name}.last"] = res.last.reshape(shape).numpy()
    return out


def _per_problem(risks: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """``(seeds, P·H)`` (lanes of a seed ordered problem-major) → ``(P, seeds, H)``."""
    return risks.reshape(shape[1], shape[0], shape[2]).transpose(0, 1).numpy()


def fit_rate(horizons: np.ndarray, risks: np.ndarray, *, fit_decades: float) -> LogLogFit:
    """Fit ``risk ∝ T^{slope}`` on every seed's risks over the last ``fit_decades`` of T."""
    keep = horizons >= horizons.max() / 10**fit_decades * (1 - 1e-9)
    if keep.sum() < 2:
        raise ConfigError("the fit range holds fewer than two horizons")
    x = np.broadcast_to(horizons[keep], risks[..., keep].shape)
    return fit_loglog(x.ravel(), risks[..., keep].ravel())
