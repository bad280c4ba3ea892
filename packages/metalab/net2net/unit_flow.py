"""What one fx node does to the units of a layer being widened: pass, flatten, or refuse.

:func:`~metalab.net2net.graph.plan_widen` walks from the widened layer to its consumers;
this module answers, node by node, whether the units pass through unchanged (an
elementwise activation, pooling), are flattened into blocks of features (``flatten(1)``,
``x.view(x.size(0), -1)``), are not read at all (the batch size of such a view), or reach
something the Net2WiderNet identities do not cover, and then says what it is in one line.
Kept apart from the graph walk so the reshape idioms and their refusals can grow on their
own.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["describe", "is_flatten", "passes_units", "reads_only_batch_size", "refusal"]

# Activations for which phi(phi(v)) != phi(v), so deepen's identity layer cannot follow them.
NON_IDEMPOTENT_MODULES = (
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Softplus,
)
_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    *NON_IDEMPOTENT_MODULES,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    F.relu,
    F.relu6,
    F.hardtanh,
    torch.tanh,
    torch.sigmoid,
    F.gelu,
    F.silu,
    F.elu,
    F.leaky_relu,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "contiguous"}
# Norms widen cannot rewrite: they normalize across units (GroupNorm, LocalResponseNorm,
# RMSNorm) or are not among the per-unit norms Eq. 7 is implemented for (_NormBase:
# BatchNorm3d, SyncBatchNorm, the InstanceNorms; BatchNorm1d/2d are rewritten before this is
# consulted). nn.RMSNorm arrived in torch 2.4; the package supports torch >= 2.2.
_RMS_NORM: type[nn.Module] | None = getattr(nn, "RMSNorm", None)
_UNSUPPORTED_NORMS: tuple[type[nn.Module], ...] = (
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
    *((_RMS_NORM,) if _RMS_NORM is not None else ()),
)
_REDUCTIONS = ("mean", "sum", "prod", "amax", "amin", "max", "min", "std", "var")
_REDUCTION_FUNCTIONS = {getattr(torch, name): name for name in (*_REDUCTIONS, "logsumexp")}
_REDUCTION_METHODS = {*_REDUCTIONS, "logsumexp"}


def describe(node: fx.Node) -> str:
    """A node as ``op 'target'`` for messages (``the model's output`` for the output)."""
    if node.op == "output":
        return "the model's output"
    target = (
        node.target
        if isinstance(node.target, str)
        else getattr(node.target, "__name__", node.target)
    )
    return f"{node.op} {target!r}"


def passes_units(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` keeps every unit in place, one output per input (Eq. 7 then holds)."""
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def is_flatten(node: fx.Node, modules: dict[str, nn.Module], conv: bool) -> bool:
    """Whether ``node`` flattens everything after the batch axis.

    ``flatten(1)`` / ``nn.Flatten()``, ``flatten(1, 3)`` of a convolution's 4-D output, and
    ``x.view(x.size(0), -1)`` / ``reshape`` (with ``x.size(0)`` or ``x.shape[0]``).
    """
    ends = (-1, 3) if conv else (-1,)
    if node.op == "call_module":
        module = modules[str(node.target)]
        return isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim in ends
    if node.op == "call_method" and node.target in ("view", "reshape"):
        return _is_batch_flat_shape(node)
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    flat = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )
    return bool(flat and start == 1 and end in ends)


def reads_only_batch_size(node: fx.Node) -> bool:
    """Whether ``node`` reads only the batch size of its input, to flatten that same input.

    True for ``x.size(0)`` (``x.shape[0]``, ``x.size()[0]``) when every use of the number
    is ``x.view(n, -1)`` / ``x.reshape(n, -1)`` of the same ``x``: widening keeps that
    number. Used any other way (arithmetic, another tensor's shape) it may be the width
    itself, e.g. ``x.size(0)`` of an unbatched 1-D input, and widening would change it.
    """
    sizes = _batch_sizes(node)
    if sizes is None:
        return False
    return _first_misuse(node, sizes) is None


def _batch_sizes(node: fx.Node) -> list[fx.Node] | None:
    """The nodes holding ``x``'s batch size if ``node`` reads nothing else of ``x``.

    ``x.size(0)`` / ``x.size(dim=0)`` is one; ``x.shape`` or ``x.size()`` counts when it is
    only indexed by ``[0]``, and its indexing nodes are returned. ``None`` otherwise.
    """
    if _is_size_of_dim0(node):
        return [node]
    if not _is_whole_shape(node) or not node.users:
        return None
    users = list(node.users)
    if all(_is_index0(user, node) for user in users):
        return users
    return None


def _is_size_of_dim0(node: fx.Node) -> bool:
    if node.op != "call_method" or node.target != "size":
        return False
    dims = node.args[1:] or ((node.kwargs["dim"],) if "dim" in node.kwargs else ())
    return dims == (0,)


def _is_whole_shape(node: fx.Node) -> bool:
    """``x.shape`` or ``x.size()`` (the whole ``torch.Size``)."""
    if node.op == "call_function" and node.target is getattr:
        return node.args[1:] == ("shape",)
    return node.op == "call_method" and node.target == "size" and _no_dim(node)


def _no_dim(node: fx.Node) -> bool:
    return len(node.args) == 1 and node.kwargs.get("dim") is None


def _is_index0(node: fx.Node, of: fx.Node) -> bool:
    return node.op == "call_function" and node.target is operator.getitem and node.args == (of, 0)


def _is_reshape_of(node: fx.Node, source: object) -> bool:
    return (
        node.op == "call_method"
        and node.target in ("view", "reshape")
        and bool(node.args)
        and node.args[0] is source
    )


def _first_misuse(query: fx.Node, sizes: list[fx.Node]) -> fx.Node | None:
    """The first use of a batch-size number that is not ``x.view(n, -1)`` of ``x`` itself."""
    for size in sizes:
        for user in size.users:
            if not (_is_reshape_of(user, query.args[0]) and _is_batch_flat_shape(user)):
                return user
    return None


def _is_batch_flat_shape(node: fx.Node) -> bool:
    """``x.view(x.size(0), -1)`` or ``x.view(x.shape[0], -1)`` (also as one tuple or list)."""
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if len(shape) != 2 or shape[1] != -1 or not isinstance(shape[0], fx.Node):
        return False
    batch, source = shape[0], node.args[0]
    if _is_size_of_dim0(batch):
        return batch.args[0] is source
    if batch.op == "call_function" and batch.target is operator.getitem:
        whole = batch.args[0]
        return (
            isinstance(whole, fx.Node)
            and _is_index0(batch, whole)
            and _is_whole_shape(whole)
            and whole.args[0] is source
        )
    return False


def refusal(layer: str, node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """Why the units of ``layer`` cannot go through ``node``, in one line."""
    what = describe(node)
    module = modules.get(str(node.target)) if node.op == "call_module" else None
    if node.op == "output":
        return (
            f"layer {layer!r} produces the model's output; widening it would change the "
            "output size (widen a hidden layer instead)"
        )
    if node.target in (operator.add, torch.add, "add", operator.iadd, torch.cat):
        return (
            f"the units of {layer!r} reach {what} (a residual sum or concatenation); the "
            "other branch would have to grow with the same mapping - widen a layer inside "
            "the block instead"
        )
    if isinstance(module, _UNSUPPORTED_NORMS):
        return _norm_refusal(layer, str(node.target), module)
    reduction = _reduction(node)
    if reduction is not None:
        return (
            f"the output of {layer!r} is reduced by {reduction} ({what}, node {node.name!r}); "
            "widen does not follow units through a reduction (it cannot tell whether the "
            "reduced axes hold the units) - for a global average pool over a convolution's "
            "positions write F.adaptive_avg_pool2d(x, 1).flatten(1)"
        )
    sizes = _batch_sizes(node)
    misuse = None if sizes is None else _first_misuse(node, sizes)
    if misuse is not None and not _is_reshape_of(misuse, node.args[0]):
        return (
            f"the units of {layer!r} reach {what} (node {node.name!r}), the size of axis 0, "
            f"and {describe(misuse)} uses it; only x.view(x.size(0), -1) of the same tensor "
            "may read it (for an unbatched input it is the width itself, which widening changes)"
        )
    if misuse is not None:  # the reshape is what reads the width or fixes the shape
        what = describe(misuse)
    return (
        f"the units of {layer!r} reach {what}, which mixes or reshapes units; Net2WiderNet "
        "only passes through elementwise activations, pooling, BatchNorm/LayerNorm and "
        "flatten(start_dim=1) (or x.view(x.size(0), -1))"
    )


def _norm_refusal(layer: str, name: str, module: nn.Module) -> str:
    kind = type(module).__name__
    if isinstance(module, nn.GroupNorm):
        why = (
            f"normalizes groups of {module.num_channels // module.num_groups} channels "
            "together, so replicated channels would change its statistics"
        )
    else:
        why = "is not a norm widen can rewrite"
    return (
        f"{kind} {name!r} between {layer!r} and its consumers cannot be widened: it {why}; "
        "Net2WiderNet rewrites only BatchNorm1d/BatchNorm2d and LayerNorm on the way"
    )


def _reduction(node: fx.Node) -> str | None:
    """``"mean over dims (2, 3)"`` for a reduction node, else ``None``."""
    if node.op == "call_method" and node.target in _REDUCTION_METHODS:
        op = str(node.target)
    elif node.op == "call_function" and node.target in _REDUCTION_FUNCTIONS:
        op = _REDUCTION_FUNCTIONS[node.target]
    else:
        return None
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return f"{op} over all dims" if dims is None else f"{op} over dims {dims}"
