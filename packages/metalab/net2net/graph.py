"""Where a layer's output goes: the data-flow analysis behind ``widen`` and ``deepen``.

The model is traced with :mod:`torch.fx` (only to read its graph; the grown model keeps the
user's own classes). Widening a layer must also rewrite every layer that consumes its
units, and every per-unit module in between (BatchNorm, LayerNorm); deepening needs the
activation that follows the layer. Anything the Net2Net identities do not cover (a residual
addition, a concatenation, a reshape, a non-idempotent activation) is refused with a
:class:`~metalab.core.errors.MetalabError` naming the operation; what one node does to the
units (pass, flatten, read only the batch size, or refuse and why) is decided in
:mod:`metalab.net2net.unit_flow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from metalab.core.errors import MetalabError, UnknownNameError, first_line
from metalab.net2net.unit_flow import (
    NON_IDEMPOTENT_MODULES,
    describe,
    is_flatten,
    passes_units,
    reads_only_batch_size,
    refusal,
)

__all__ = [
    "DeepenSite",
    "GrowthRefused",
    "NormSite",
    "WidenPlan",
    "plan_deepen",
    "plan_widen",
    "trace",
]

_IDEMPOTENT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_IDEMPOTENT_FUNCTIONS = {torch.relu: nn.ReLU, F.relu: nn.ReLU, F.relu6: nn.ReLU6}
_CHAIN_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
_NON_IDEMPOTENT_FUNCTIONS = {torch.tanh, torch.sigmoid, F.gelu, F.silu, F.elu, F.leaky_relu}


class GrowthRefused(MetalabError):
    """The requested transformation would not preserve the network's function."""


@dataclass(frozen=True)
class NormSite:
    """Where a norm after the widened layer holds one entry per unit, so Eq. 7 can copy it.

    ``axis`` is the axis of its weight (and running statistics) that runs over the units;
    ``block`` the entries per unit along it: 1, or the spatial positions of a channel when
    the norm follows a ``flatten`` (the same blocks the consuming Linear is split by).
    """

    axis: int = 0
    block: int = 1


@dataclass
class WidenPlan:
    """The modules a widening rewrites: the layer, norms on the way, and the consumers."""

    layer: str
    norms: dict[str, NormSite] = field(default_factory=dict)
    consumers: list[str] = field(default_factory=list)
    needs_balanced: bool = False


@dataclass(frozen=True)
class _Layout:
    """How the widened layer's units lie in a tensor on their way to the consumers.

    A convolution's units are the channel axis (third from last) until a ``flatten`` turns
    each channel into a block of features on the last axis; a Linear's are the last axis.
    """

    layer: str
    units: int
    conv: bool
    flat: bool = False

    @property
    def channel_axis(self) -> bool:
        """The units are a convolution's channel axis (not yet flattened into features)."""
        return self.conv and not self.flat


@dataclass
class DeepenSite:
    """Where Net2DeeperNet inserts its identity layer.

    ``wrap`` is the module replaced by a ``Sequential``; when ``wrap_is_activation`` the new
    module is ``Sequential(act, new, [bn], act)``, otherwise ``Sequential(m, act, new, [bn])``
    (the activation applied after ``m`` in the original graph then acts on the new layer).
    ``chain_batchnorm`` is the BatchNorm between ``after`` and its activation (the last one),
    if any; ``norm_training`` the mode an inserted BatchNorm takes: that BatchNorm's, so a
    model fine-tuned with frozen (eval-mode) BatchNorms gets a frozen one too, else
    ``after``'s.
    """

    after: str
    wrap: str
    wrap_is_activation: bool
    activation: nn.Module
    chain_batchnorm: str | None
    norm_training: bool

    @property
    def chain_has_batchnorm(self) -> bool:
        """Whether a BatchNorm lies between ``after`` and its activation."""
        return self.chain_batchnorm is not None


def trace(model: nn.Module) -> fx.Graph:
    """The model's fx graph (leaf modules are torch.nn's built-in layers)."""
    try:
        return fx.Tracer().trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        first = first_line(exc)
        raise GrowthRefused(
            f"cannot trace {type(model).__name__} with torch.fx ({first}); Net2Net needs a "
            "static graph to find the layers that consume the grown one"
        ) from None


def _module_node(graph: fx.Graph, model: nn.Module, name: str, kinds: tuple[type, ...]) -> fx.Node:
    modules = dict(model.named_modules())
    layers = [n for n, m in modules.items() if isinstance(m, kinds)]
    if name not in modules:
        raise UnknownNameError("layer", name, layers)
    if not isinstance(modules[name], kinds):
        allowed = " or ".join(k.__name__ for k in kinds)
        choices = f"choose one of: {', '.join(layers)}" if layers else f"the model has no {allowed}"
        raise GrowthRefused(
            f"layer {name!r} is a {type(modules[name]).__name__}, not a {allowed}; {choices}"
        )
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == name]
    if len(calls) != 1:
        raise GrowthRefused(
            f"layer {name!r} is called {len(calls)} times in the forward pass; Net2Net needs a "
            "layer used exactly once (shared weights would grow in two places)"
        )
    return calls[0]


def plan_widen(model: nn.Module, layer: str) -> WidenPlan:
    """Follow the units of ``layer`` to the layers that consume them.

    Raises:
        UnknownNameError: no such layer.
        GrowthRefused: the units reach the output, a residual addition, a concatenation,
            a reshape, any operation that mixes units (the identity would not hold), or a
            norm or consumer whose size does not match them.
    """
    graph = trace(model)
    modules = dict(model.named_modules())
    start = _module_node(graph, model, layer, (nn.Linear, nn.Conv2d))
    producer = modules[layer]
    if isinstance(producer, nn.Conv2d) and producer.groups != 1:
        raise GrowthRefused(f"layer {layer!r} is a grouped convolution; only groups=1 is supported")
    conv = isinstance(producer, nn.Conv2d)
    units = producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features
    plan, seen = WidenPlan(layer), {start}
    frontier = [(user, _Layout(layer, units, conv)) for user in start.users]
    while frontier:
        node, layout = frontier.pop(0)
        if node in seen:
            continue
        seen.add(node)
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            _check_consumer(node, module, layout, seen)
            plan.consumers.append(str(node.target))
            continue
        if isinstance(module, _NORMS):
            _check_single_call(graph, str(node.target), layer)
            site = _norm_site(str(node.target), module, layout)
            if site is not None:
                plan.norms[str(node.target)] = site
                plan.needs_balanced |= isinstance(module, nn.LayerNorm)
        elif reads_only_batch_size(node):
            continue  # an int, not the units (the batch size does not change)
        elif is_flatten(node, modules, layout.channel_axis):
            layout = _Layout(layer, units, conv, flat=True)
        elif not passes_units(node, modules):
            raise GrowthRefused(refusal(layer, node, modules))
        frontier.extend((user, layout) for user in node.users)
    return plan


def _norm_site(name: str, module: nn.Module, layout: _Layout) -> NormSite | None:
    """Where ``module`` holds the units, or ``None`` for a LayerNorm within each channel.

    A LayerNorm over the trailing spatial axes of a convolution's output (``[W]``, ``[H, W]``)
    normalizes every channel on its own, so replicated channels stay replicas and it needs
    no change. Any other norm must have one entry per unit (or per unit and position after
    a flatten) on the axis that runs over them, else widening would break it.
    """
    if isinstance(module, nn.LayerNorm):
        shape = tuple(module.normalized_shape)
        axis = len(shape) - (3 if layout.channel_axis else 1)
        if axis < 0:
            return None
        size, what = shape[axis], f"normalized_shape {list(shape)}"
    else:
        assert isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))
        axis, size, what = 0, module.num_features, f"{module.num_features} features"
    blocks = layout.conv and layout.flat
    if size == layout.units or (blocks and size % layout.units == 0 and size > 0):
        return NormSite(axis, size // layout.units)
    per = "a multiple of the" if blocks else "one entry per"
    raise GrowthRefused(
        f"{type(module).__name__} {name!r} after {layout.layer!r} has {what}, not {per} "
        f"{layout.units} units of {layout.layer!r} on its unit axis; it cannot be widened"
    )


def _check_consumer(node: fx.Node, module: nn.Module, layout: _Layout, seen: set[fx.Node]) -> None:
    """Refuse a consumer that does not read the units on its input-feature/channel axis."""
    layer, name = layout.layer, node.target
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise GrowthRefused(f"{layer!r} feeds the grouped convolution {name!r}; unsupported")
    if node.args and node.args[0] not in seen:
        raise GrowthRefused(f"{layer!r} reaches {name!r} through an unsupported argument")
    if isinstance(module, nn.Conv2d) and not layout.channel_axis:
        raise GrowthRefused(
            f"the units of {layer!r} reach the Conv2d {name!r} on an axis other than its "
            "input channels; widening would not rewire it"
        )
    if isinstance(module, nn.Linear) and layout.channel_axis:
        raise GrowthRefused(
            f"the Linear {name!r} acts on the last (width) axis of {layer!r}'s output, not on "
            "its channels; only a flatten(start_dim=1) into a Linear can be rewired"
        )
    if isinstance(module, nn.Linear) and not layout.conv and module.in_features != layout.units:
        raise GrowthRefused(
            f"the Linear {name!r} has {module.in_features} inputs, not the {layout.units} "
            f"units of {layer!r}; they reach it through an unsupported reshape"
        )


def _check_single_call(graph: fx.Graph, name: str, layer: str) -> None:
    calls = sum(1 for n in graph.nodes if n.op == "call_module" and n.target == name)
    if calls != 1:
        raise GrowthRefused(f"norm {name!r} after {layer!r} is shared ({calls} calls); unsupported")


def plan_deepen(model: nn.Module, after: str) -> DeepenSite:
    """Find the activation after ``after`` and where to insert the identity layer.

    Raises:
        UnknownNameError: no such layer.
        GrowthRefused: no activation follows, the activation is not idempotent
            (``phi(I phi(v)) != phi(v)``, e.g. tanh, sigmoid, GELU, leaky ReLU), the
            output of the layer branches before its activation, or the forward reads a
            tensor of the module that would be wrapped.
    """
    graph = trace(model)
    modules = dict(model.named_modules())
    node = _module_node(graph, model, after, (nn.Linear, nn.Conv2d))
    batchnorm: str | None = None
    while True:
        users = list(node.users)
        if len(users) != 1:
            raise GrowthRefused(
                f"the output of {describe(node)} after {after!r} is used in {len(users)} places "
                "before any activation; Net2DeeperNet needs a single chain to the activation"
            )
        (user,) = users
        module = modules.get(str(user.target)) if user.op == "call_module" else None
        activation = _activation_of(user, module, after)
        if activation is not None:
            site = _site(graph, modules, after, user, module, activation, batchnorm)
            _check_no_attribute_reads(graph, site.wrap)
            return site
        if not isinstance(module, _CHAIN_MODULES):
            raise GrowthRefused(
                f"{after!r} reaches {describe(user)} before any activation; Net2DeeperNet "
                "inserts U = I after an activation phi with phi(I phi(v)) = phi(v) (ReLU)"
            )
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            batchnorm = str(user.target)
        node = user


def _check_no_attribute_reads(graph: fx.Graph, wrap: str) -> None:
    """Refuse to wrap a module whose tensors the forward reads directly (tied weights).

    ``self.c1.weight`` in the forward would meet the ``Sequential`` that replaces ``c1``,
    which has no ``weight``, and the grown model would fail with an AttributeError.
    """
    for node in graph.nodes:
        if node.op == "get_attr" and str(node.target).startswith(f"{wrap}."):
            raise GrowthRefused(
                f"the forward reads {node.target!r} directly, but Net2DeeperNet replaces "
                f"{wrap!r} by a Sequential holding it and the new layer, which has no such "
                f"attribute; follow {wrap!r} with an activation module (nn.ReLU), which is then "
                "wrapped instead"
            )


def _activation_of(user: fx.Node, module: nn.Module | None, after: str) -> nn.Module | None:
    if isinstance(module, _IDEMPOTENT_MODULES):
        return module
    if user.op == "call_function" and user.target in _IDEMPOTENT_FUNCTIONS:
        return _IDEMPOTENT_FUNCTIONS[user.target]()
    if user.op == "call_method" and user.target == "relu":
        return nn.ReLU()
    refused = (
        isinstance(module, NON_IDEMPOTENT_MODULES)
        or (user.op == "call_function" and user.target in _NON_IDEMPOTENT_FUNCTIONS)
        or (user.op == "call_method" and user.target in ("tanh", "sigmoid"))
    )
    if refused:
        name = type(module).__name__ if module is not None else describe(user)
        raise GrowthRefused(
            f"{after!r} is followed by the activation {name}, for which phi(I phi(v)) != phi(v); "
            "Net2DeeperNet's identity only holds for idempotent activations (ReLU, ReLU6, "
            "Hardtanh)"
        )
    return None


def _site(
    graph: fx.Graph,
    modules: dict[str, nn.Module],
    after: str,
    act_node: fx.Node,
    act_module: nn.Module | None,
    activation: nn.Module,
    batchnorm: str | None,
) -> DeepenSite:
    def calls(name: str) -> int:
        return sum(1 for n in graph.nodes if n.op == "call_module" and n.target == name)

    training = modules[batchnorm if batchnorm is not None else after].training
    if act_module is not None and calls(str(act_node.target)) == 1:
        return DeepenSite(after, str(act_node.target), True, activation, batchnorm, training)
    source = act_node.args[0] if act_node.args else None
    if (
        isinstance(source, fx.Node)
        and source.op == "call_module"
        and calls(str(source.target)) == 1
    ):
        return DeepenSite(after, str(source.target), False, activation, batchnorm, training)
    raise GrowthRefused(
        f"cannot find a module to extend after {after!r}: its activation is shared and is not "
        "directly preceded by a module used once"
    )
