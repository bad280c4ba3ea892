"""Carry an optimizer over to a grown model, or reset it.

After growth the old optimizer holds the old tensors. :func:`transfer_optimizer` builds an
optimizer of the same class and hyper-parameters over the grown model. With
``state="carry"`` every per-parameter buffer is mapped like its parameter: indexed by the
mapping ``g``, and scaled as the gradient of that slice would have been had the student
been trained all along (replicated incoming weights see ``1/count`` of the teacher's
gradient, split outgoing weights see all of it), so first moments scale by ``grad_scale``
and second moments by its square. New layers start with an empty state.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from torch import Tensor, nn

from metalab.core.errors import ConfigError, first_line
from metalab.net2net.report import GrowthReport, ParamChange

__all__ = ["OptimizerState", "transfer_optimizer"]

OptimizerState = Literal["carry", "reset"]
# How a state entry follows growth: the power of the gradient a parameter-shaped buffer
# holds, or "copy" for per-tensor/shared state carried unchanged.
CarryRule = int | Literal["copy"]

# Per-parameter buffers of torch.optim optimizers and the power of the gradient they hold.
_MOMENT_POWER = {
    "momentum_buffer": 1,
    "exp_avg": 1,
    "grad_avg": 1,
    "exp_avg_sq": 2,
    "exp_inf": 1,
    "max_exp_avg_sq": 2,
    "square_avg": 2,
    "sum": 2,
}
# Buffers whose meaning depends on the optimizer: RMSprop's momentum accumulates
# grad / sqrt(square_avg), in which the gradient's scale cancels.
_CLASS_MOMENT_POWER: dict[type[torch.optim.Optimizer], dict[str, int]] = {
    torch.optim.RMSprop: {"momentum_buffer": 0},
}


def _moment_powers(optimizer: torch.optim.Optimizer) -> dict[str, CarryRule]:
    """Each state key's carry rule; an optimizer may declare its own (``state_carry_rules``)."""
    powers: dict[str, CarryRule] = dict(_MOMENT_POWER)
    for cls, overrides in _CLASS_MOMENT_POWER.items():
        if isinstance(optimizer, cls):
            powers.update(overrides)
    powers.update(getattr(optimizer, "state_carry_rules", {}))
    return powers


def transfer_optimizer(
    optimizer: torch.optim.Optimizer,
    old_model: nn.Module,
    new_model: nn.Module,
    report: GrowthReport,
    *,
    state: OptimizerState = "carry",
) -> torch.optim.Optimizer:
    """A new optimizer of ``optimizer``'s class over ``new_model``'s parameters.

    Parameter groups keep their hyper-parameters; parameters of inserted layers join the
    group of the layer they were inserted after (else the first group).

    Args:
        optimizer: the optimizer that trained ``old_model``.
        old_model: the model before growth (its parameters are ``optimizer``'s).
        new_model: the grown model returned with ``report``.
        report: the report of the growth step.
        state: ``"carry"`` maps momentum/Adam buffers onto the grown parameters; ``"reset"``
            starts from an empty state.

    Raises:
        ConfigError: the arguments do not belong together (the optimizer holds none of
            ``old_model``'s tensors, or ``report`` is not of growing ``old_model`` into
            ``new_model``: names or shapes disagree); unknown ``state``; with ``"carry"``, a
            buffer of a grown parameter whose meaning or shape is unknown (use
            ``state="reset"``); an optimizer class whose constructor arguments are not all
            recorded in its ``defaults``.

    An optimizer of your own can take part: a ``with_params(groups)`` method builds its
    copy over the grown parameters, and a ``state_carry_rules`` mapping gives each state
    key its rule (an ``int``: a buffer whose leading dims are the parameter's, holding the
    gradient to that power; ``"copy"``: per-tensor state carried unchanged), as
    :class:`~metalab.lopt.LearnedOptimizer` does.
    """
    if state not in ("carry", "reset"):
        raise ConfigError(f"optimizer state must be 'carry' or 'reset', got {state!r}")
    if state == "carry" and isinstance(optimizer, torch.optim.LBFGS):
        raise ConfigError(
            "LBFGS keeps one history of flat whole-model vectors, which cannot follow the "
            "grown parameters; use state='reset'"
        )
    old_names = {id(p): name for name, p in old_model.named_parameters()}
    new_params = dict(new_model.named_parameters())
    _check_belong_together(optimizer, old_model, new_params, report, old_names)
    sources = {change.source: name for name, change in report.params.items()}
    groups: list[dict[str, Any]] = []
    placed: set[str] = set()
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            if id(p) in old_names:
                name = sources[old_names[id(p)]]
                placed.add(name)
                params.append(new_params[name])
            else:  # trained beside the model (a loss weight, a temperature): kept as it is
                params.append(p)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    fresh = [n for n in new_params if n not in placed and n not in report.params]
    if fresh:
        groups[_group_of(report.layer, optimizer, old_names)]["params"].extend(
            new_params[n] for n in fresh
        )
    new_optimizer = _rebuild(optimizer, groups)
    if state == "carry":
        _carry_state(optimizer, new_optimizer, report, old_names, new_params, placed)
    return new_optimizer


def _carry_state(
    optimizer: torch.optim.Optimizer,
    new_optimizer: torch.optim.Optimizer,
    report: GrowthReport,
    old_names: dict[int, str],
    new_params: dict[str, nn.Parameter],
    placed: set[str],
) -> None:
    """Map the model's state onto the grown parameters; copy the rest's unchanged."""
    by_name = {name: p for p, name in ((p, old_names.get(id(p))) for p in optimizer.state)}
    powers = _moment_powers(optimizer)
    for name, change in report.params.items():
        old_param = by_name.get(change.source)
        if old_param is not None and name in placed:
            new_optimizer.state[new_params[name]] = _map_state(
                optimizer.state[old_param], old_param, change, powers
            )
    for p, entry in optimizer.state.items():
        if id(p) not in old_names:
            new_optimizer.state[p] = {
                k: v.clone() if isinstance(v, Tensor) else v for k, v in entry.items()
            }


def _check_belong_together(
    optimizer: torch.optim.Optimizer,
    old_model: nn.Module,
    new_params: dict[str, nn.Parameter],
    report: GrowthReport,
    old_names: dict[int, str],
) -> None:
    """Refuse mismatched arguments, which would otherwise map state silently wrong.

    Parameters the optimizer trains beside ``old_model`` (a learnable loss weight) are
    carried unchanged; an optimizer holding none of ``old_model``'s would come back with
    nothing grown, and the report of another growth step
    (``m -> s1 -> s2`` with ``s1 -> s2``'s report but ``m``) would index buffers of the
    wrong shapes, failing only inside the next ``step()`` with a raw torch error.
    """
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if held and not any(id(p) in old_names for p in held):
        raise ConfigError(
            "none of the optimizer's parameters is a parameter of old_model; pass the "
            "optimizer that trained old_model"
        )
    old_params = dict(old_model.named_parameters())
    sources = {change.source for change in report.params.values()}
    ours = [old_names[id(p)] for p in held if id(p) in old_names]
    lost = [name for name in ours if name not in sources]
    if lost:
        raise ConfigError(
            f"the report does not say where old_model's parameter {lost[0]!r} went; pass the "
            "report of the growth step that turned old_model into new_model"
        )
    for name, change in report.params.items():
        _check_change(name, change, old_params, new_params)
    inserted = tuple(f"{module}." for module in report.inserted)
    unknown = [n for n in new_params if n not in report.params and not n.startswith(inserted)]
    if unknown:
        raise ConfigError(
            f"new_model's parameter {unknown[0]!r} is neither grown from old_model nor "
            "inserted, by the report; pass the model the growth step returned as new_model"
        )


def _check_change(
    name: str,
    change: ParamChange,
    old_params: dict[str, nn.Parameter],
    new_params: dict[str, nn.Parameter],
) -> None:
    """One entry of the report must lead from a parameter of old_model to one of new_model."""
    hint = "; pass the report of the growth step that turned old_model into new_model"
    if change.source not in old_params:
        raise ConfigError(
            f"the report's source parameter {change.source!r} is not in old_model{hint}"
        )
    if name not in new_params:
        raise ConfigError(f"the report's grown parameter {name!r} is not in new_model{hint}")
    old, new = old_params[change.source].shape, new_params[name].shape
    expected = list(old)
    if change.index is not None:
        if change.dim >= len(old) or (
            change.index.numel() and int(change.index.max()) >= old[change.dim]
        ):
            raise ConfigError(
                f"the report indexes {change.source!r} beyond its shape {list(old)} in "
                f"old_model{hint}"
            )
        expected[change.dim] = change.index.numel()
    if list(new) != expected:
        raise ConfigError(
            f"the report makes {name!r} of shape {expected} from {change.source!r} "
            f"{list(old)}, but new_model's is {list(new)}{hint}"
        )


def _group_of(layer: str, optimizer: torch.optim.Optimizer, old_names: dict[int, str]) -> int:
    for i, group in enumerate(optimizer.param_groups):
        if any(old_names.get(id(p), "").startswith(f"{layer}.") for p in group["params"]):
            return i
    return 0


def _rebuild(
    optimizer: torch.optim.Optimizer, groups: list[dict[str, Any]]
) -> torch.optim.Optimizer:
    """An optimizer of ``optimizer``'s class and settings over ``groups``.

    Each group already carries its hyper-parameters; the constructor gets the defaults it
    accepts by name (``AdamW`` records ``decoupled_weight_decay`` but does not take it). A
    constructor argument that ``optimizer.defaults`` does not record could only be guessed,
    so such a class is refused, unless it rebuilds itself (``with_params``, as metalab's
    learned optimizer does with its arch and θ).
    """
    cls = type(optimizer)
    with_params = getattr(optimizer, "with_params", None)
    if callable(with_params):
        rebuilt = with_params(groups)
        if not isinstance(rebuilt, torch.optim.Optimizer):
            raise ConfigError(f"{cls.__name__}.with_params did not return an optimizer")
        return rebuilt
    arguments = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, params
    named = {a.name for a in arguments if a.kind not in (a.VAR_POSITIONAL, a.VAR_KEYWORD)}
    unknown = sorted(named - set(optimizer.defaults))
    if unknown:
        raise ConfigError(
            f"cannot rebuild {cls.__name__} over the grown model: its constructor argument(s) "
            f"{', '.join(unknown)} are not recorded in optimizer.defaults; build the optimizer "
            "over the grown model yourself"
        )
    any_keyword = any(a.kind is a.VAR_KEYWORD for a in arguments)
    kwargs = {k: v for k, v in optimizer.defaults.items() if any_keyword or k in named}
    try:
        return cls(groups, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot rebuild {cls.__name__} over the grown model ({first_line(exc)})"
        ) from None


def _map_state(
    state: dict[str, Any], param: Tensor, change: ParamChange, powers: dict[str, CarryRule]
) -> dict[str, Any]:
    """The optimizer state of ``param`` moved onto the grown parameter ``change`` describes.

    ``powers``: each known buffer's rule: the power of the gradient it holds (its scaling
    exponent), or ``"copy"``.

    Scalars (step counts) and ``"copy"`` entries are copied; a parameter kept as it was
    keeps every buffer. A grown parameter's other buffers must be moments of known meaning
    whose leading dims are the parameter's (trailing dims, e.g. a learned optimizer's
    several momenta, ride along), mapped by ``g`` and scaled; anything else is refused
    rather than copied unmapped.
    """
    mapped: dict[str, Any] = {}
    for key, value in state.items():
        if change.index is not None and isinstance(value, (list, tuple, dict)):
            raise ConfigError(
                f"cannot carry optimizer state {key!r} of {change.source!r} through growth: "
                f"it is a {type(value).__name__}, which cannot be mapped; use state='reset'"
            )
        copied = powers.get(key) == "copy"
        if copied or not isinstance(value, Tensor) or value.dim() == 0 or change.index is None:
            mapped[key] = value.clone() if isinstance(value, Tensor) else value
            continue
        if value.shape[: param.dim()] != param.shape:
            raise ConfigError(
                f"cannot carry optimizer state {key!r} of {change.source!r} through growth: "
                f"its shape {list(value.shape)} is not the parameter's {list(param.shape)}, so "
                "it cannot be mapped; use state='reset'"
            )
        power = powers.get(key)
        if not isinstance(power, int):
            raise ConfigError(
                f"cannot carry optimizer buffer {key!r} of {change.source!r} through growth; "
                "use state='reset'"
            )
        moved = value.index_select(change.dim, change.index.to(value.device))
        if change.grad_scale is not None and power:
            shape = [1] * value.dim()
            shape[change.dim] = -1
            scale = change.grad_scale.to(value.device, value.dtype).view(shape)
            moved = moved * scale**power
        mapped[key] = moved
    return mapped
