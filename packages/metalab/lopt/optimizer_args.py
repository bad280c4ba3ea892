"""Checking the arguments of :class:`~metalab.lopt.LearnedOptimizer`: weights, arch, options.

The constructor resolves ``weights``/``arch``/``arch_options`` into an architecture and
its ``θ`` (:func:`resolve`); each param group's options are checked when the group is
added and again at every step (an LR scheduler or ``load_state_dict`` may change them).
Split from :mod:`metalab.lopt.optimizer` so that module holds only the stepping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.arch_registry import arch_class, make_arch
from metalab.lopt.interfaces import OptimizerArch
from metalab.lopt.weights import LoptWeights, load_weights

__all__ = [
    "GROUP_OPTIONS",
    "SCHEDULER_KEYS",
    "check_group_keys",
    "check_lr",
    "check_weight_decay",
    "one_number",
    "resolve",
]

DTYPE = torch.float32
# Options a param group may set (besides "params"); torch adds "param_names" itself.
GROUP_OPTIONS = ("lr", "weight_decay", "val_loss")
# Bookkeeping that torch's LR schedulers (and SWALR) write into a group: they do not
# configure the optimizer, but a group copied from a scheduled optimizer carries them.
SCHEDULER_KEYS = ("initial_lr", "max_lr", "min_lr", "swa_lr")
_ACCEPTED = frozenset({"params", "param_names", *GROUP_OPTIONS, *SCHEDULER_KEYS})


def check_group_keys(group: Mapping[str, Any]) -> None:
    """Refuse a param-group key that the learned optimizer would silently ignore.

    Torch's own optimizers keep unknown keys without a word, so a ``momentum`` or
    ``betas`` meant for another optimizer would look applied; here it is an error.
    """
    unknown = sorted(str(key) for key in group if key not in _ACCEPTED)
    if unknown:
        raise ConfigError(
            f"LearnedOptimizer has no param-group option {unknown[0]!r}; a group may set "
            f"{', '.join(GROUP_OPTIONS)} (and carry the LR schedulers' "
            f"{', '.join(SCHEDULER_KEYS)})"
        )


def check_lr(value: Any) -> float:
    """The update multiplier ``lr`` as a float, if it is a finite number ``>= 0``."""
    return _non_negative(value, "lr (a multiplier of the learned update)")


def check_weight_decay(value: Any) -> float:
    """The decoupled weight decay as a float, if it is a finite number ``>= 0``."""
    return _non_negative(value, "weight_decay (decoupled, per step at lr 1)")


def _non_negative(value: Any, what: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = float(value)
    ok = isinstance(value, float | int) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ConfigError(f"LearnedOptimizer {what} must be a finite number >= 0, got {value!r}")
    return float(value)


def one_number(value: Any, what: str) -> Tensor | float:
    """``value`` if it is one number (a float or a one-element tensor of any shape).

    An unreduced loss (one entry per example) would otherwise be read as its first entry.
    """
    if isinstance(value, bool) or not isinstance(value, Tensor | float | int):
        raise ConfigError(f"{what} must be one number, got {type(value).__name__}")
    if isinstance(value, Tensor) and (value.numel() != 1 or value.is_complex()):
        raise ConfigError(
            f"{what} must be one number, got a tensor of shape {tuple(value.shape)} "
            "(reduce it, e.g. loss.mean())"
        )
    return value


def resolve(
    weights: str | Path | Tensor | LoptWeights | None,
    arch: OptimizerArch | str | None,
    options: Mapping[str, Any] | None,
) -> tuple[OptimizerArch, Tensor, dict[str, Any]]:
    """The architecture, ``θ`` and provenance from the constructor's arguments.

    A weights file names its architecture, so a different ``arch`` is refused by name (not
    only by ``θ`` size: a same-size arch would read the weights as something else).
    """
    _check_arguments(weights, arch, options)
    if isinstance(weights, Tensor):
        if arch is None:
            raise ConfigError("LearnedOptimizer(weights=<tensor>) needs arch= (name or object)")
        built = arch if isinstance(arch, OptimizerArch) else make_arch(arch, **(options or {}))
        theta, provenance = weights.detach().reshape(-1).to("cpu", DTYPE), {}
    else:
        loaded = weights if isinstance(weights, LoptWeights) else load_weights(weights)
        name = arch.name if isinstance(arch, OptimizerArch) else arch
        if name is not None and name != loaded.arch:
            if weights is None:
                raise ConfigError(_no_packaged_weights(name, loaded.arch))
            raise ConfigError(f"the weights are for arch {loaded.arch!r}, not {name!r}")
        built = arch if isinstance(arch, OptimizerArch) else loaded.build_arch()
        theta = loaded.theta.detach().reshape(-1).to("cpu", DTYPE)
        provenance = dict(loaded.provenance)
    if theta.numel() != built.theta_dim:
        raise ConfigError(
            f"weights have {theta.numel()} entries but arch {built.name!r} needs {built.theta_dim}"
        )
    if not bool(torch.isfinite(theta).all()):
        raise ConfigError("the optimizer weights θ contain non-finite values (NaN or inf)")
    return built, theta, provenance


def _no_packaged_weights(name: str, packaged: str) -> str:
    """The error for ``arch=name`` without weights when only ``packaged`` ships weights."""
    return (
        f"only the {packaged!r} architecture ships packaged weights, so arch={name!r} needs "
        f"weights=: meta-train one with `metalab lopt meta-train --arch {name} "
        f"--save {name}.pt` and pass weights='{name}.pt' (or a θ tensor with arch={name!r})"
    )


def _check_arguments(weights: Any, arch: Any, options: Mapping[str, Any] | None) -> None:
    """Refuse argument types and combinations that :func:`resolve` cannot honour.

    An unknown arch name is reported as such (with suggestions) before any weights are
    read, instead of as a mismatch with the weights file.
    """
    if arch is not None and not isinstance(arch, OptimizerArch | str):
        raise ConfigError(f"arch must be an architecture name or object, got {type(arch).__name__}")
    if isinstance(arch, str):
        arch_class(arch)
    if not (weights is None or isinstance(weights, str | Path | Tensor | LoptWeights)):
        raise ConfigError(
            "weights must be None (the default), a weights-file path, a LoptWeights or a θ "
            f"tensor, got {type(weights).__name__}"
        )
    if isinstance(weights, Tensor) and weights.is_complex():
        raise ConfigError("the optimizer weights θ must be real, got a complex tensor")
    if options and not (isinstance(weights, Tensor) and isinstance(arch, str)):
        raise ConfigError(
            "arch_options apply to weights=<θ tensor> with arch=<name>; a weights file "
            "carries its own options and an arch object is already built"
        )
