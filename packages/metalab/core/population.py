"""Vectorized populations: evaluate one module under P parameter sets in one call.

ES/PES particles, DARTS perturbations and NTK width sweeps all need "the same network,
many parameter vectors". :func:`population_loss` does it with ``torch.func.vmap`` over
``functional_call`` instead of a Python loop over particles. Random noise is drawn here,
outside ``vmap``, from an explicit generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metalab.core.errors import ConfigError

__all__ = [
    "antithetic_perturbations",
    "module_params",
    "population_forward",
    "population_loss",
    "population_size",
    "stack_params",
]

Params = Mapping[str, Tensor]


def module_params(module: nn.Module) -> dict[str, Tensor]:
    """A detached copy-free dict of the module's parameters, the unit a population stacks."""
    return {name: param.detach() for name, param in module.named_parameters()}


def stack_params(members: Sequence[Params]) -> dict[str, Tensor]:
    """Stack P parameter dicts with identical keys and shapes into one dict of ``[P, ...]``."""
    if not members:
        raise ConfigError("stack_params needs at least one parameter set")
    keys = list(members[0])
    for index, member in enumerate(members[1:], start=1):
        if set(member) != set(keys):
            raise ConfigError(
                f"parameter set {index} has keys {sorted(member)}, expected {sorted(keys)}"
            )
    return {key: torch.stack([member[key] for member in members]) for key in keys}


def population_size(stacked: Params) -> int:
    """P, the leading dimension shared by every stacked tensor."""
    sizes = {tensor.shape[0] for tensor in stacked.values()}
    if len(sizes) != 1:
        raise ConfigError(f"stacked parameters disagree on the population size: {sorted(sizes)}")
    return sizes.pop()


def population_forward(
    module: nn.Module,
    stacked: Params,
    *inputs: Tensor,
    buffers: Params | None = None,
    per_member_inputs: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """``module(*inputs)`` for every member: returns ``[P, *output_shape]``.

    Args:
        module: the network; its own parameters are ignored (used only for structure).
        stacked: ``{name: [P, *shape]}`` parameters (see :func:`stack_params`).
        inputs: shared by all members, or with a leading ``P`` dim if ``per_member_inputs``.
        buffers: un-stacked buffers (e.g. BatchNorm statistics), shared by all members.
        per_member_inputs: whether ``inputs`` carry a leading population dimension.
        chunk_size: evaluate this many members at a time to bound memory.

    Raises:
        ConfigError: a batch-norm layer is in train mode and tracks running statistics (see
            :func:`population_loss`).
    """
    _refuse_tracking_norms(module)
    shared_buffers = dict(buffers) if buffers is not None else dict(module.named_buffers())

    def one(member: dict[str, Tensor], *member_inputs: Tensor) -> Tensor:
        return functional_call(module, (member, shared_buffers), member_inputs)

    in_dims = (0, *([0 if per_member_inputs else None] * len(inputs)))
    return vmap(one, in_dims=in_dims, chunk_size=chunk_size)(dict(stacked), *inputs)


def population_loss(
    module: nn.Module,
    stacked: Params,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    buffers: Params | None = None,
    per_member_inputs: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """Loss of every member on ``(inputs, targets)`` in one vectorized call: shape ``[P]``.

    ``loss_fn(outputs, targets)`` must reduce to a scalar (e.g. ``F.cross_entropy``).
    A batch-norm layer in train mode would update its running statistics in place, which
    one shared buffer cannot do for every member: such a module is refused (call
    ``module.eval()``, or ``torch.func.replace_all_batch_norm_modules_(module)`` to normalize
    with batch statistics without tracking them).

    Raises:
        ConfigError: a batch-norm layer of ``module`` is in train mode and tracks statistics.
    """
    _refuse_tracking_norms(module)
    dims = 0 if per_member_inputs else None
    shared_buffers = dict(buffers) if buffers is not None else dict(module.named_buffers())

    def one(member: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(module, (member, shared_buffers), (x,)), y)

    return vmap(one, in_dims=(0, dims, dims), chunk_size=chunk_size)(dict(stacked), inputs, targets)


def _refuse_tracking_norms(module: nn.Module) -> None:
    for name, layer in module.named_modules():
        # _NormBase: batch norms and instance norms that track running statistics
        tracking = isinstance(layer, nn.modules.batchnorm._NormBase) and layer.track_running_stats
        if tracking and layer.training and layer.running_mean is not None:
            raise ConfigError(
                f"{type(layer).__name__} {name or 'module'!r} is in train mode and would update"
                " one shared running mean for every population member; call module.eval() or"
                " torch.func.replace_all_batch_norm_modules_(module)"
            )


def antithetic_perturbations(
    center: Params, *, pairs: int, sigma: float, generator: torch.Generator
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Antithetic population ``center ± σ ε`` for ES-style estimators.

    Returns:
        ``(stacked, noise)``: ``stacked[name]`` has shape ``[2 * pairs, *shape]`` with
        members ``0..pairs-1`` at ``+σε`` and ``pairs..2*pairs-1`` at ``−σε``; ``noise[name]``
        is ``ε`` with shape ``[pairs, *shape]``.
    """
    if pairs < 1 or sigma <= 0:
        raise ConfigError(f"need pairs >= 1 and sigma > 0, got pairs={pairs}, sigma={sigma}")
    noise: dict[str, Tensor] = {}
    stacked: dict[str, Tensor] = {}
    for name, value in center.items():
        eps = torch.randn(
            (pairs, *value.shape), generator=generator, device=value.device, dtype=value.dtype
        )
        noise[name] = eps
        stacked[name] = torch.cat([value + sigma * eps, value - sigma * eps])
    return stacked, noise
