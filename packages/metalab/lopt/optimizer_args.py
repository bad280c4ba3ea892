"""Checking the arguments of :class:`~metalab.lopt.LearnedOptimizer`: weights, arch, options.

The constructor resolves ``weights``/``arch``/``arch_options`` into an architecture and
its ``θ`` (:func:`resolve`); each param group's options are checked when the group is
added, when a state dict is loaded and again at every step (an LR scheduler or the user
may change them): :class:`GroupChecks`.
Split from :mod:`metalab.lopt.optimizer` so that module holds only the stepping.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
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
    "FOREIGN_OPTIONS",
    "GROUP_OPTIONS",
    "GroupChecks",
    "check_grad",
    "check_group_keys",
    "check_lr",
    "check_rates",
    "check_train_loss",
    "check_val_loss",
    "check_weight_decay",
    "one_number",
    "resolve",
]

DTYPE = torch.float32
# Options a param group may set (besides "params"); torch adds "param_names" itself.
GROUP_OPTIONS = ("lr", "weight_decay", "val_loss")
# Options torch's own optimizers take that this one cannot honour (the learned update
# chooses its own momentum and step sizes): read from their constructors, so the list
# follows the installed torch, plus the common ones in case a torch version lacks one.
_COMMON_FOREIGN = (
    "momentum", "dampening", "nesterov", "betas", "eps", "amsgrad", "alpha", "centered",
    "rho", "lr_decay", "initial_accumulator_value", "lambd", "t0", "max_iter",
    "history_size", "line_search_fn", "foreach", "fused", "capturable", "differentiable",
    "maximize", "decoupled_weight_decay", "momentum_decay",
)  # fmt: skip
# A group decaying more than this per step (at lr 1) is probably AdamW's weight_decay.
DECAY_WARNING_ABOVE = 0.01


def _torch_options() -> frozenset[str]:
    """The keyword arguments of every optimizer class in ``torch.optim``."""
    names: set[str] = set()
    for value in vars(torch.optim).values():
        is_optimizer = isinstance(value, type) and issubclass(value, torch.optim.Optimizer)
        if is_optimizer and value is not torch.optim.Optimizer:
            arguments = list(inspect.signature(value.__init__).parameters.values())[2:]
            names.update(a.name for a in arguments if a.kind is not a.VAR_KEYWORD)
    return frozenset(names)


FOREIGN_OPTIONS = (_torch_options() | set(_COMMON_FOREIGN)) - {"params", *GROUP_OPTIONS}


def check_group_keys(group: Mapping[str, Any]) -> None:
    """Refuse an option of another torch optimizer that the learned one would ignore.

    Torch's optimizers keep unknown keys without a word, so a ``momentum`` or ``betas``
    meant for another optimizer would look applied; here it is an error. Any other key
    (``"name"``, a scheduler's ``initial_lr``, torch's ``param_names``) is the user's
    metadata and kept, as torch keeps it.
    """
    foreign = sorted(str(key) for key in group if key in FOREIGN_OPTIONS)
    if foreign:
        raise ConfigError(
            f"LearnedOptimizer has no param-group option {foreign[0]!r} (an option of other "
            "torch optimizers; the learned update chooses its own momentum and step sizes); "
            f"a group may set {', '.join(GROUP_OPTIONS)}, and other keys are kept as metadata"
        )


def check_lr(value: Any) -> float:
    """The update multiplier ``lr`` as a float, if it is a finite number ``>= 0``."""
    return _non_negative(value, "lr (a multiplier of the learned update)")


def check_weight_decay(value: Any) -> float:
    """The decoupled weight decay as a float, if it is a finite number ``>= 0``."""
    return _non_negative(value, "weight_decay (decoupled, per step at lr 1)")


def check_rates(lr: float, weight_decay: float) -> None:
    """Refuse ``lr · weight_decay >= 1``: each step would zero the parameters or flip them."""
    if lr * weight_decay >= 1:
        raise ConfigError(
            f"LearnedOptimizer lr * weight_decay = {lr:g} * {weight_decay:g} >= 1 would zero "
            "every parameter or flip its sign each step; weight_decay is the fraction removed "
            "per step at lr 1 (AdamW's converts as weight_decay * lr, e.g. 0.01 * 1e-3 = 1e-5)"
        )


def check_grad(p: Tensor) -> None:
    """Refuse what the flat ``[1, N]`` float32 layout cannot hold: sparse/complex gradients."""
    grad = p.grad
    assert grad is not None
    if grad.is_sparse:
        raise ConfigError("LearnedOptimizer does not support sparse gradients")
    if p.is_complex():
        raise ConfigError("LearnedOptimizer does not support complex parameters")


def check_train_loss(value: Any, arch: OptimizerArch) -> Tensor | float | None:
    """The step's training loss: one number, finite if a Python number, present if needed.

    A Python number is checked for free; a tensor is not read back (a device sync per
    step): an arch that reads the loss masks a non-finite one itself (the hierarchical
    arch keeps its previous loss statistics), and the others ignore it.
    """
    if value is None:
        if arch.uses_training_loss:
            raise ConfigError(
                f"the '{arch.name}' learned optimizer conditions on the training loss: "
                "pass step(loss=...) or a closure that returns the loss"
            )
        return None
    value = one_number(value, "the training loss")
    if not isinstance(value, Tensor) and not math.isfinite(value):
        raise ConfigError(f"LearnedOptimizer training loss must be a finite number, got {value!r}")
    return value


def check_val_loss(value: Any) -> float | None:
    """The validation loss of a group as a float (``None``: none observed yet)."""
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = float(value.detach())
    ok = isinstance(value, float | int) and not isinstance(value, bool)
    if not ok or not math.isfinite(value):
        raise ConfigError(
            f"LearnedOptimizer val_loss must be None or a finite number, got {value!r}"
        )
    return float(value)


class GroupChecks:
    """Checks a group's options; remembers the key sets already found free of foreign ones.

    ``step`` checks every group (an LR scheduler or the user may have changed it since
    it was added), so the key check runs only for a key set not seen before, and the
    large-decay warning is given once per optimizer.
    """

    def __init__(self) -> None:
        self._clean_keys: set[tuple[Any, ...]] = set()
        self._warned = False

    def __call__(
        self, group: Mapping[str, Any], defaults: Mapping[str, Any]
    ) -> tuple[float, float]:
        """The group's checked ``(lr, weight_decay)`` (absent keys from ``defaults``)."""
        keys = tuple(group)
        if keys not in self._clean_keys:
            check_group_keys(group)
            self._clean_keys.add(keys)
        lr = check_lr(group.get("lr", defaults["lr"]))
        decay = check_weight_decay(group.get("weight_decay", defaults["weight_decay"]))
        check_rates(lr, decay)
        check_val_loss(group.get("val_loss"))
        if decay > DECAY_WARNING_ABOVE and not self._warned:
            self._warned = True
            warnings.warn(
                f"LearnedOptimizer weight_decay={decay:g} removes {decay * 100:g}% of each "
                "parameter per step at lr 1; it is not AdamW's weight_decay, which AdamW "
                "scales by its lr: use wd_adamw * lr_adamw (AdamW's 0.01 at lr 1e-3 is 1e-5 "
                "here)",
                UserWarning,
                stacklevel=_caller_level(),
            )
        return lr, decay


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this package and ``torch.optim``.

    The checks run from the constructor, ``add_param_group``, ``load_state_dict`` or
    ``step`` (through torch's wrappers), so a fixed level would point into torch.
    """
    inside = (str(Path(__file__).parent), str(Path(torch.optim.__file__).parent))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level  # level 1 is the caller of warnings.warn


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
