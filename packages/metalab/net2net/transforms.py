"""The model-level API: ``widen`` and ``deepen`` a user's network, keeping its function.

Chen, Goodfellow & Shlens (2016): Net2WiderNet (Sec. 3.1, Eqs. 6-8) and Net2DeeperNet
(Sec. 3.2). Both work on a deep copy of the model, rewrite only the modules involved (so
the grown model keeps the user's classes and forward code) and return a
:class:`~metalab.net2net.report.GrowthReport`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from metalab.core.errors import ConfigError
from metalab.net2net.graph import GrowthRefused, NormSite, plan_deepen, plan_widen
from metalab.net2net.insertion import estimate_statistics, replace_module
from metalab.net2net.ops import (
    NoiseKind,
    identity_batchnorm,
    identity_conv2d,
    identity_linear,
    perturb_identity,
    replica_counts,
    split_incoming,
    wider_mapping,
)
from metalab.net2net.report import GrowthReport, ParamChange, check_on_example

__all__ = ["deepen", "widen"]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _set(module: nn.Module, name: str, value: Tensor) -> None:
    """Replace a parameter (keeping requires_grad) or a buffer of ``module``."""
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.detach(), requires_grad=old.requires_grad))
    else:
        setattr(module, name, value.detach())


def widen(
    model: nn.Module,
    layer: str,
    new_width: int,
    *,
    noise: float = 0.0,
    noise_kind: NoiseKind = "gaussian",
    generator: torch.Generator,
    example: Tensor | None = None,
) -> tuple[nn.Module, GrowthReport]:
    """Net2WiderNet: give ``layer`` ``new_width`` units without changing the function.

    The units are replicated by the random mapping ``g`` (Eq. 6): incoming weights, bias and
    every BatchNorm/LayerNorm parameter and running statistic on the way are copied along
    ``g`` (Eq. 7); each consumer's weights for a replicated unit are divided by its
    replication count (Eq. 8), per spatial position after a ``flatten`` and per kernel tap
    for a convolution. A norm after a ``flatten`` holds one entry per channel and position
    and is replicated block by block; a LayerNorm within each channel (over ``[H, W]`` or
    ``[W]``) is left alone.

    The model is traced without an example input, so a norm is matched to the units by its
    size: a ``BatchNorm1d`` applied to a Linear's 3-D output ``(N, S, F)`` normalizes axis
    ``S``, and is mistaken for a norm over the units when ``S == F`` (a smaller ``S`` is
    refused). Nor can it see the batch axis: ``flatten(1)`` or ``x.view(x.size(0), -1)`` of
    an *unbatched* convolution output ``(C, H, W)`` flattens the channels' positions, not
    the channels, and the grown model fails or computes something else. Pass ``example``
    (a real input) to have both models run on it and the growth refused if they disagree,
    or check with :func:`~metalab.net2net.report.preservation_error`.

    Names are kept, but the rewritten parameters are new tensors of the new size: anything
    that held the old ones (an optimizer, your own references) still sees the teacher's, so
    re-fetch them from the grown model and use
    :func:`~metalab.net2net.optim.transfer_optimizer`.

    Args:
        model: the trained network (not modified).
        layer: qualified name of a ``Linear`` or ``Conv2d`` (as in ``model.named_modules()``).
        new_width: units (features or channels) after widening, ``>=`` the current width.
        noise: standard deviation of symmetry-breaking noise relative to the std of each
            consumer's weights, added to the outgoing weights of replicated units (the paper
            and the Keras example use a few percent). 0 preserves the function exactly.
        noise_kind: ``"gaussian"`` (the paper's; the function changes by O(noise)) or
            ``"zero_sum"`` (noise centred within each replica group: exact preservation,
            symmetry still broken).
        generator: random stream for the mapping and the noise.
        example: an input of ``model``; when given, both models run on it in eval mode and
            the growth is refused unless the grown model runs and its outputs have the same
            shapes (and, without Gaussian noise, the same values up to rounding).

    Returns:
        ``(grown_model, report)``.

    Raises:
        UnknownNameError: ``layer`` does not exist.
        GrowthRefused: the units reach an operation the identity does not cover, or the
            grown model fails or disagrees on ``example``.
        ConfigError: an impossible width or noise, or an ``example`` ``model`` cannot run.
    """
    if not isinstance(new_width, int) or isinstance(new_width, bool):
        raise ConfigError(f"new_width must be an int, got {new_width!r}")
    plan = plan_widen(model, layer)
    if not plan.consumers:
        raise GrowthRefused(
            f"the units of {layer!r} reach no Linear/Conv2d layer; nothing to rewire"
        )
    grown = copy.deepcopy(model)
    producer = _layer(grown, layer)
    old = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
    mapping = wider_mapping(old, new_width, generator=generator, balanced=plan.needs_balanced)
    report = GrowthReport(
        "widen",
        layer,
        old,
        new_width,
        mapping.tolist(),
        list(plan.norms),
        plan.consumers,
        noise=noise,
        parameters_before=_count(model),
    )
    counts = replica_counts(mapping, old).to(torch.float64)
    for name, site in [(layer, NormSite()), *plan.norms.items()]:
        _widen_outputs(grown.get_submodule(name), name, mapping, counts, site, report)
    squared = 0.0
    for name in plan.consumers:
        squared += _widen_inputs(
            _layer(grown, name),
            name,
            mapping,
            old,
            report,
            noise=noise,
            noise_kind=noise_kind,
            generator=generator,
        )
    report.noise_norm = squared**0.5
    _record_unchanged(grown, report)
    report.parameters_after = _count(grown)
    if example is not None:
        exact = noise == 0 or noise_kind == "zero_sum"
        check_on_example(
            model, grown, example, what=f"widening {layer!r}", exact=exact, hint=_SHAPELESS
        )
    return grown, report


_SHAPELESS = (
    "; the traced graph has no shapes, so widen could not see why (e.g. flatten(1) or "
    "x.view(x.size(0), -1) of an unbatched input, whose axis 0 is the channels, or a "
    "BatchNorm1d over another axis of the same size)"
)


def _layer(model: nn.Module, name: str) -> nn.Linear | nn.Conv2d:
    module = model.get_submodule(name)
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise GrowthRefused(f"{name!r} is a {type(module).__name__}, not a Linear or Conv2d")
    return module


def _unit_index(mapping: Tensor, block: int, device: torch.device) -> Tensor:
    """``g`` expanded to blocks of ``block`` consecutive entries per unit (a flattened channel)."""
    offsets = torch.arange(block, device=device)
    return (mapping.to(device)[:, None] * block + offsets).reshape(-1)


def _widen_outputs(
    module: nn.Module,
    name: str,
    mapping: Tensor,
    counts: Tensor,
    site: NormSite,
    report: GrowthReport,
) -> None:
    """Eq. 7 on a producer or a norm: every per-unit tensor is indexed by ``g`` along the units.

    After a flatten a norm holds one entry per unit and spatial position, so it is indexed
    by the block-expanded ``g``; each entry is per feature, which keeps the function exact.
    """
    for attr in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(module, attr, None)
        if value is None:
            continue
        index = _unit_index(mapping, site.block, value.device)
        _set(module, attr, value.index_select(site.axis, index))
        if isinstance(value, nn.Parameter):
            scale = (1.0 / counts).repeat_interleave(site.block).to(value.device, value.dtype)
            report.params[f"{name}.{attr}"] = ParamChange(f"{name}.{attr}", site.axis, index, scale)
    _set_width(module, len(mapping), site)


def _set_width(module: nn.Module, width: int, site: NormSite) -> None:
    """Record the new size, so the module's repr, checks and ``describe_model`` agree with it."""
    if isinstance(module, nn.Linear):
        module.out_features = width
    elif isinstance(module, nn.Conv2d):
        module.out_channels = width
    elif isinstance(module, nn.LayerNorm):
        shape = list(module.normalized_shape)
        shape[site.axis] = width * site.block
        module.normalized_shape = tuple(shape)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        module.num_features = width * site.block


def _widen_inputs(
    module: nn.Linear | nn.Conv2d,
    name: str,
    mapping: Tensor,
    old: int,
    report: GrowthReport,
    *,
    noise: float,
    noise_kind: NoiseKind,
    generator: torch.Generator,
) -> float:
    """Eq. 8 on a consumer; returns the squared norm of the noise it added."""
    weight: Tensor = module.weight
    if isinstance(module, nn.Conv2d):
        if module.in_channels != old:
            raise GrowthRefused(f"{name!r} expects {module.in_channels} channels, not {old}")
        blocks = weight
    else:
        if module.in_features % old:
            raise GrowthRefused(
                f"{name!r} has {module.in_features} inputs, not a multiple of the {old} units "
                f"of {report.layer!r}; the units reach it through an unsupported reshape"
            )
        blocks = weight.view(weight.shape[0], old, module.in_features // old)
    widened, perturbation = split_incoming(
        blocks.detach(), mapping, noise=noise, noise_kind=noise_kind, generator=generator
    )
    block = blocks[0, 0].numel()
    if isinstance(module, nn.Conv2d):
        module.in_channels = len(mapping)
        index = mapping.to(weight.device)
    else:
        widened = widened.reshape(weight.shape[0], -1)
        module.in_features = widened.shape[1]
        index = _unit_index(mapping, block, weight.device)
    _set(module, "weight", widened)
    ones = torch.ones(index.numel(), dtype=weight.dtype, device=weight.device)
    report.params[f"{name}.weight"] = ParamChange(f"{name}.weight", 1, index, ones)
    return float(perturbation.pow(2).sum())


def _record_unchanged(grown: nn.Module, report: GrowthReport) -> None:
    for name, _ in grown.named_parameters():
        report.params.setdefault(name, ParamChange(name))


def deepen(
    model: nn.Module,
    after: str,
    *,
    kernel_size: int = 3,
    batchnorm: bool | None = None,
    data: Tensor | None = None,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    example: Tensor | None = None,
) -> tuple[nn.Module, GrowthReport]:
    """Net2DeeperNet: insert an identity layer after ``after``'s activation (Sec. 3.2).

    ``h = phi(W h_prev)`` becomes ``phi(U phi(W h_prev))`` with ``U = I`` (a Linear, or a
    Conv2d with a centred identity kernel and size-preserving padding), which equals the
    original for idempotent activations (ReLU, ReLU6, Hardtanh).

    Module names change. The module ``report.wrapped`` becomes an ``nn.Sequential`` holding
    it and the new layer(s): the activation module after ``after`` when there is one
    (``act1`` becomes ``Sequential(act1, new, [bn], act1)``; the new parameters are
    ``act1.1.*``), else the module just before a functional activation, which may be
    ``after`` itself. That module's tensors then move one level down: ``model.bn1`` becomes
    ``Sequential(bn1, relu, new, [bn])``, so ``model.bn1.running_mean`` is now
    ``model.bn1[0].running_mean`` and the state_dict key ``fc1.weight`` of a wrapped
    ``fc1`` becomes ``fc1.0.weight``. ``report.params`` maps every new parameter name to
    its old one; re-fetch modules and tensors from the grown model, and note that hooks on
    the wrapped module now see the whole block.

    The new layer takes ``after``'s train/eval mode; an inserted BatchNorm takes that of the
    BatchNorm already between ``after`` and its activation (else ``after``'s). In eval mode
    it normalizes by running statistics it undoes exactly, so the function is preserved for
    every input: in a model left in eval mode, and in one fine-tuned with frozen (eval)
    BatchNorms. In train mode it normalizes by each batch's statistics, so it is the
    identity only on batches with the statistics it was fitted to: pass ``data``.

    Args:
        model: the trained network (not modified).
        after: qualified name of a ``Linear`` or ``Conv2d`` followed (possibly through
            BatchNorm, LayerNorm, dropout or pooling) by its activation.
        kernel_size: odd kernel size of an inserted convolution.
        batchnorm: add a BatchNorm after the new layer, set to undo its normalization; the
            default adds one when the chain after ``after`` already has a BatchNorm.
        data: a batch of model inputs; when given, the new BatchNorm's statistics, scale and
            shift are estimated on the features it receives from them, every module in its
            current mode (so it is the identity in train mode too, on batches like ``data``).
        noise: Gaussian noise added to the identity weights, relative to the std of
            ``after``'s weights (0: exact preservation).
        generator: random stream for the noise (required when ``noise > 0``).
        example: an input of ``model`` (default: ``data``); when given, both models run on
            it in eval mode and the growth is refused unless the grown model runs and (without
            noise) computes the same outputs up to rounding. The forward is the user's code,
            so a read of the wrapped module (``self.fc1.out_features``) only fails here.

    Raises:
        UnknownNameError: ``after`` does not exist.
        GrowthRefused: no activation, a non-idempotent one, a branching chain, a forward
            that reads the wrapped module's tensors, or a grown model that fails or
            disagrees on ``example``.
        ConfigError: an even ``kernel_size``, negative noise, noise without a generator, or
            an ``example`` ``model`` cannot run.
    """
    site = plan_deepen(model, after)
    grown = copy.deepcopy(model)
    layer = _layer(grown, after)
    new: nn.Linear | nn.Conv2d
    if isinstance(layer, nn.Linear):
        width, new = layer.out_features, identity_linear(layer.out_features, like=layer)
    else:
        width = layer.out_channels
        new = identity_conv2d(width, kernel_size=kernel_size, like=layer)
    noise_norm = perturb_identity(new, reference=layer.weight, noise=noise, generator=generator)
    use_bn = site.chain_has_batchnorm if batchnorm is None else batchnorm
    norm = (
        identity_batchnorm(width, conv=isinstance(new, nn.Conv2d), like=new.weight)
        if use_bn
        else None
    )
    wrapped = grown.get_submodule(site.wrap)
    extra = [new] + ([norm] if norm is not None else [])
    new.train(layer.training)  # new modules start in train mode; an eval-mode model must stay so
    if norm is not None:
        norm.train(site.norm_training)
    if site.wrap_is_activation:
        block = nn.Sequential(wrapped, *extra, copy.deepcopy(wrapped))
    else:
        activation = copy.deepcopy(site.activation).train(layer.training)
        block = nn.Sequential(wrapped, activation, *extra)
    block.training = wrapped.training  # the container stands where ``wrapped`` stood
    replace_module(grown, site.wrap, block)
    first = 1 if site.wrap_is_activation else 2
    inserted = [f"{site.wrap}.{first + i}" for i in range(len(extra))]
    if norm is not None and data is not None:
        estimate_statistics(grown, inserted[-1], data)
    report = GrowthReport(
        "deepen",
        after,
        width,
        width,
        inserted=inserted,
        wrapped=site.wrap,
        noise=noise,
        noise_norm=noise_norm,
        parameters_before=_count(model),
    )
    old_names = {name for name, _ in model.named_parameters()}
    for name, _ in grown.named_parameters():
        source = (
            name.replace(f"{site.wrap}.0.", f"{site.wrap}.", 1)
            if name.startswith(f"{site.wrap}.0.")
            else name
        )
        if source in old_names:
            report.params[name] = ParamChange(source)
    report.parameters_after = _count(grown)
    example = data if example is None else example
    if example is not None:
        what = f"deepening after {after!r} (wrapping {site.wrap!r} in a Sequential)"
        check_on_example(model, grown, example, what=what, exact=noise == 0)
    return grown, report
