"""Averaged SGD in the NTK regime: measured vs predicted rates (Nitanda & Suzuki, ICLR 2021).

The two-layer network in the NTK parameterization with symmetric initialization, one-pass
averaged SGD (Algorithm 1) batched over seeds × horizons × widths, the same algorithm in
the RKHS of the analytic NTK, Funk–Hecke NTK spectra on the circle and S² checked against
the empirical NTK (torch.func), source-condition targets, and the ridge-proxy prediction.

Example:
    >>> from metalab.ntk import make_activation, ntk_spectrum
    >>> spec = ntk_spectrum(make_activation("relu"), dim=2, max_degree=50)
    >>> round(spec.kappa_one, 3)
    1.25
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalab.core.lazy import lazy_exports

# module -> names; imported on first use so that `metalab ntk --help` does not import torch
_EXPORTS = {
    "activations": [
        "Activation",
        "ReLU",
        "Sigmoid",
        "Swish",
        "Tanh",
        "activation_names",
        "activation_resolver",
        "make_activation",
    ],
    "asgd": [
        "ASGDResult",
        "DataStream",
        "KernelASGD",
        "KernelState",
        "Lanes",
        "Learner",
        "NetworkASGD",
        "NetworkState",
        "run_asgd",
        "stack_lanes",
    ],
    "empirical": ["SpectrumComparison", "compare_spectra", "check_spectrum_inputs"],
    "network": [
        "augment_inputs",
        "empirical_ntk",
        "network_forward",
        "single_network_output",
        "symmetric_init",
        "width_mask",
    ],
    "spectrum": [
        "NTKSpectrum",
        "funk_hecke_eigenvalues",
        "gegenbauer_normalized",
        "harmonic_multiplicity",
        "ntk_dot_kernel",
        "ntk_spectrum",
    ],
    "sphere": ["basis_degrees", "harmonic_basis", "sample_sphere", "sphere_quadrature"],
    "study": [
        "ModelConfig",
        "Problem",
        "Setting",
        "fit_rate",
        "horizon_grid",
        "make_problem",
        "run_problems",
    ],
    "targets": ["SourceTarget", "make_source_target", "source_energies"],
    "theory": [
        "balanced_lambda0",
        "last_iterate_plateau",
        "predicted_exponent",
        "regularization",
        "ridge_proxy",
        "averaged_sgd_risk",
    ],
    "blocked": ["run_kernel_blocked", "block_kernel_step", "dot_kernel_gram"],
}

__all__ = [
    "ASGDResult",
    "Activation",
    "DataStream",
    "KernelASGD",
    "KernelState",
    "Lanes",
    "Learner",
    "ModelConfig",
    "NTKSpectrum",
    "NetworkASGD",
    "NetworkState",
    "Problem",
    "ReLU",
    "Setting",
    "Sigmoid",
    "SourceTarget",
    "SpectrumComparison",
    "Swish",
    "Tanh",
    "activation_names",
    "activation_resolver",
    "augment_inputs",
    "averaged_sgd_risk",
    "balanced_lambda0",
    "basis_degrees",
    "block_kernel_step",
    "check_spectrum_inputs",
    "compare_spectra",
    "dot_kernel_gram",
    "empirical_ntk",
    "fit_rate",
    "funk_hecke_eigenvalues",
    "gegenbauer_normalized",
    "harmonic_basis",
    "harmonic_multiplicity",
    "horizon_grid",
    "last_iterate_plateau",
    "make_activation",
    "make_problem",
    "make_source_target",
    "network_forward",
    "ntk_dot_kernel",
    "ntk_spectrum",
    "predicted_exponent",
    "regularization",
    "ridge_proxy",
    "run_asgd",
    "run_kernel_blocked",
    "run_problems",
    "sample_sphere",
    "single_network_output",
    "source_energies",
    "sphere_quadrature",
    "stack_lanes",
    "symmetric_init",
    "width_mask",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.ntk.activations import (
        Activation,
        ReLU,
        Sigmoid,
        Swish,
        Tanh,
        activation_names,
        activation_resolver,
        make_activation,
    )
    from metalab.ntk.asgd import (
        ASGDResult,
        DataStream,
        KernelASGD,
        KernelState,
        Lanes,
        Learner,
        NetworkASGD,
        NetworkState,
        run_asgd,
        stack_lanes,
    )
    from metalab.ntk.blocked import block_kernel_step, dot_kernel_gram, run_kernel_blocked
    from metalab.ntk.empirical import SpectrumComparison, check_spectrum_inputs, compare_spectra
    from metalab.ntk.network import (
        augment_inputs,
        empirical_ntk,
        network_forward,
        single_network_output,
        symmetric_init,
        width_mask,
    )
    from metalab.ntk.spectrum import (
        NTKSpectrum,
        funk_hecke_eigenvalues,
        gegenbauer_normalized,
        harmonic_multiplicity,
        ntk_dot_kernel,
        ntk_spectrum,
    )
    from metalab.ntk.sphere import basis_degrees, harmonic_basis, sample_sphere, sphere_quadrature
    from metalab.ntk.study import (
        ModelConfig,
        Problem,
        Setting,
        fit_rate,
        horizon_grid,
        make_problem,
        run_problems,
    )
    from metalab.ntk.targets import SourceTarget, make_source_target, source_energies
    from metalab.ntk.theory import (
        averaged_sgd_risk,
        balanced_lambda0,
        last_iterate_plateau,
        predicted_exponent,
        regularization,
        ridge_proxy,
    )
