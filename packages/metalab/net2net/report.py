"""What a Net2Net transformation changed: the report returned with every grown model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from metalab.core.errors import ConfigError, MetalabError, first_line
from metalab.net2net.graph import GrowthRefused

__all__ = ["GrowthReport", "ParamChange", "check_on_example", "eval_mode", "preservation_error"]


@dataclass
class ParamChange:
    """How one parameter of the grown model derives from one of the original model.

    ``new = old.index_select(dim, index)`` (then divided or perturbed); ``grad_scale`` is how
    the gradient of each new slice relates to the old one along ``dim`` (``1/count`` for
    replicated incoming weights, 1 for split outgoing ones), used to carry optimizer state.
    ``index is None`` means the tensor is copied unchanged (possibly under a new name).
    """

    source: str
    dim: int = 0
    index: Tensor | None = None
    grad_scale: Tensor | None = None


@dataclass
class GrowthReport:
    """A record of one Net2WiderNet or Net2DeeperNet step.

    Attributes:
        operation: ``"widen"`` or ``"deepen"``.
        layer: the widened layer, or the layer the new one was inserted after.
        old_width: units of ``layer`` before (for ``deepen``: the width of the new layer).
        new_width: units after.
        mapping: the random mapping ``g`` (Eq. 6), for ``widen``.
        norms: BatchNorm/LayerNorm modules widened with the same mapping.
        consumers: layers whose inputs were widened (Eq. 8).
        inserted: names of new modules (``deepen``).
        wrapped: the module replaced by a ``Sequential`` holding it and the new layer.
        noise: relative noise level asked for; ``noise_norm`` the Frobenius norm added.
        params: for every parameter of the grown model that existed before, its origin.
        parameters_before: parameter count before; ``parameters_after`` after.
    """

    operation: str
    layer: str
    old_width: int
    new_width: int
    mapping: list[int] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    inserted: list[str] = field(default_factory=list)
    wrapped: str | None = None
    noise: float = 0.0
    noise_norm: float = 0.0
    params: dict[str, ParamChange] = field(default_factory=dict)
    parameters_before: int = 0
    parameters_after: int = 0

    def summary(self) -> str:
        """One human-readable line."""
        if self.operation == "widen":
            what = (
                f"widened {self.layer} {self.old_width} -> {self.new_width} units; "
                f"rewired {', '.join(self.consumers)}"
            )
            if self.norms:
                what += f"; norms {', '.join(self.norms)}"
        else:
            what = (
                f"inserted identity {', '.join(self.inserted)} ({self.new_width} units) after "
                f"{self.layer}"
            )
        return (
            f"{what}; parameters {self.parameters_before} -> {self.parameters_after}; "
            f"noise {self.noise:g} (norm {self.noise_norm:.3g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the mapping as a list, parameter provenance by name)."""
        return {
            "operation": self.operation,
            "layer": self.layer,
            "old_width": self.old_width,
            "new_width": self.new_width,
            "mapping": self.mapping,
            "norms": self.norms,
            "consumers": self.consumers,
            "inserted": self.inserted,
            "wrapped": self.wrapped,
            "noise": self.noise,
            "noise_norm": self.noise_norm,
            "renamed": {k: v.source for k, v in self.params.items() if k != v.source},
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
        }


@torch.no_grad()
def preservation_error(before: nn.Module, after: nn.Module, inputs: Tensor) -> float:
    """``max |f_before(x) - f_after(x)|`` over ``inputs``, both models in eval mode.

    Eval mode makes BatchNorm use its running statistics, so this measures the function the
    paper's identities preserve. Outputs may be tensors or (nested) tuples, lists and dicts
    of them; the maximum is over every tensor (NaN if any difference is NaN). Every
    submodule's train/eval mode is restored afterwards (a frozen ``eval()`` BatchNorm
    inside a model in train mode stays frozen).

    Raises:
        MetalabError: the two models return differently structured or shaped outputs, or
            no tensor at all.
    """
    with eval_mode(before, after):
        return _max_difference(before(inputs), after(inputs))


@torch.no_grad()
def check_on_example(
    before: nn.Module,
    after: nn.Module,
    example: Tensor,
    *,
    what: str,
    exact: bool,
    hint: str = "",
    called: str = "the example input",
) -> float:
    """Refuse a growth whose model fails, or disagrees with the original, on ``example``.

    The traced graph has no shapes, so a reshape it mistakes for a flatten of the batch
    (``x.view(x.size(0), -1)`` of an unbatched input) is only caught by running a real
    input. Both models run in eval mode (as in :func:`preservation_error`); with ``exact``
    the outputs must agree up to ``sqrt(eps)`` of their dtype times ``1 + max |f(x)|``, else
    only their structure and shapes must. ``what`` names the growth and ``hint`` says what
    may have gone wrong, ``called`` the input, in the messages. Returns ``max |f(x) - f'(x)|``.

    Raises:
        ConfigError: ``example`` does not run through ``before``.
        GrowthRefused: ``after`` fails on it, or its outputs differ as described above.
    """
    with eval_mode(before, after):
        try:
            reference = before(example)
        except Exception as exc:  # whatever the user's forward raises on a wrong input
            raise ConfigError(
                f"{called} does not run through the model ({first_line(exc)}); "
                "give an input the model accepts"
            ) from None
        try:
            output = after(example)
            error = _max_difference(reference, output)
        except Exception as exc:  # the grown model's own failure is the finding
            raise GrowthRefused(
                f"{what} breaks the model on {called} ({first_line(exc)}){hint}"
            ) from None
    tolerance = _rounding(reference)
    if exact and not error <= tolerance:
        raise GrowthRefused(
            f"{what} changes the model's output on {called} by {error:.3g} (rounding "
            f"allows {tolerance:.3g}){hint}"
        )
    return error


def _rounding(output: Any) -> float:
    """What rounding may change in ``output``: ``sqrt(eps) * (1 + max |output|)``."""
    tensors = [
        t for t in tree_flatten(output)[0] if isinstance(t, Tensor) and t.is_floating_point()
    ]
    if not tensors:
        return 0.0
    largest = max(float(t.detach().abs().max()) if t.numel() else 0.0 for t in tensors)
    eps = max(torch.finfo(t.dtype).eps for t in tensors)
    return eps**0.5 * (1.0 + largest)


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every model in eval mode inside, each submodule's own flag restored after."""
    modes = [_modes(model) for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for saved in modes:
            _restore(saved)


def _modes(model: nn.Module) -> dict[nn.Module, bool]:
    """Each submodule's ``training`` flag: ``model.train(mode)`` alone would overwrite them."""
    return {module: module.training for module in model.modules()}


def _restore(modes: dict[nn.Module, bool]) -> None:
    """Put every flag back one by one (not via ``train()``, which recurses over children)."""
    for module, training in modes.items():
        module.training = training


def _max_difference(first: Any, second: Any) -> float:
    """The largest absolute difference over every tensor of two like-structured outputs."""
    leaves, spec = tree_flatten(first)
    other, other_spec = tree_flatten(second)
    if spec != other_spec:
        raise MetalabError(
            f"the models' outputs differ in structure ({_kind(first)} vs {_kind(second)}); "
            "cannot compare them"
        )
    pairs = [
        (a, b)
        for a, b in zip(leaves, other, strict=True)
        if isinstance(a, Tensor) or isinstance(b, Tensor)
    ]
    if not pairs:
        raise MetalabError(f"the models return no tensor ({_kind(first)}); nothing to compare")
    worst = [0.0]
    for a, b in pairs:
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape:
            raise MetalabError(
                f"the models' outputs differ in shape ({_shape(a)} vs {_shape(b)}); "
                "cannot compare them"
            )
        if a.numel():
            worst.append(float((a - b).abs().max()))
    return float(torch.tensor(worst, dtype=torch.float64).max())  # keeps a NaN, unlike max()


def _kind(output: Any) -> str:
    """The output's type name, for a one-line message (never the values themselves)."""
    return type(output).__name__


def _shape(output: Any) -> str:
    """A tensor's shape, or the type of a non-tensor leaf, for a one-line message."""
    return str(list(output.shape)) if isinstance(output, Tensor) else _kind(output)
