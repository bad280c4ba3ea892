"""The per-parameter state of :class:`~metalab.lopt.LearnedOptimizer` and checking saved ones.

An :class:`~metalab.lopt.OptimizerArch` keeps its state batched: ``[P, N, ...]`` per entry
of the flat parameter vector, ``[P, S, ...]`` per tensor, or global. The optimizer keeps
it per parameter, as torch's optimizers do, in the parameter's own layout:

- per-entry state of a parameter of shape ``s`` is ``[*s, ...]`` (the MLP optimizer's
  six momenta of a ``[16, 30]`` weight are ``[16, 30, 6]``), so tools that map state
  along a parameter's dimensions (Net2Net's widening) can index it like the parameter;
- per-tensor state is the tensor's slice without the batch axes (``[...]``);
- global state is stored whole in every parameter's state.

:class:`StateLayout` probes the arch once for these kinds, converts between the two
layouts and checks a saved per-parameter state before ``load_state_dict`` accepts it
(state dicts saved before this layout, with ``[1, n, ...]``/``[1, 1, ...]`` slices, are
read too). :meth:`StateLayout.carry_rules` says how each entry follows a grown parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any, Literal

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.interfaces import OptimizerArch
from metalab.lopt.segments import Segments
from metalab.lopt.systems import State

__all__ = [
    "PREFIX",
    "RECORD",
    "StateLayout",
    "check_form",
    "check_record",
    "saved_ids",
]

Kind = Literal["entry", "tensor", "global"]
PREFIX = "lopt."  # per-parameter state keys are the arch's keys with this prefix
RECORD = "lopt_arch"  # state_dict key of the architecture record (name, θ size)
_DTYPE = torch.float32


class StateLayout:
    """Each arch state tensor's kind and shape, found by probing ``init_state`` once.

    The probe lays out ``N = 5`` entries in ``S = 2`` tensors: a state tensor with ``N``
    in dim 1 is per entry, with ``S`` per tensor, anything else global.
    """

    def __init__(self, arch: OptimizerArch) -> None:
        """Probe ``arch`` (on the CPU, one particle)."""
        self.arch = arch
        probe = Segments.from_shapes([(2,), (3,)], torch.device("cpu"))
        state = arch.init_state(torch.zeros(1, 5, dtype=_DTYPE), probe)
        self.kinds: dict[str, Kind] = {k: _kind(v, 5, 2) for k, v in state.items()}
        self.probes = {k: tuple(v.shape) for k, v in state.items()}

    def shape(self, key: str, param: Tensor) -> tuple[int, ...]:
        """The shape of ``param``'s slice of state tensor ``key``."""
        kind, probe = self.kinds[key], self.probes[key]
        if kind == "entry":
            return (*param.shape, *probe[2:])
        return probe[2:] if kind == "tensor" else probe

    def gather(self, states: list[Mapping[str, Any]], params: list[Tensor]) -> State:
        """The arch's batched state ``[1, N, ...]`` from the parameters' slices."""
        state = {}
        for key, kind in self.kinds.items():
            pieces = [s[PREFIX + key].to(_DTYPE) for s in states]
            trail = self.probes[key][2:]
            if kind == "global":
                state[key] = pieces[0]
                continue
            rows = [p.numel() if kind == "entry" else 1 for p in params]
            flat = [piece.reshape(1, n, *trail) for piece, n in zip(pieces, rows, strict=True)]
            state[key] = torch.cat(flat, dim=1)
        return state

    def split(self, key: str, value: Tensor, params: list[Tensor]) -> list[Tensor]:
        """The parameters' slices (views, in their layout) of batched state tensor ``value``."""
        kind = self.kinds.get(key)
        if kind == "global":
            return [value] * len(params)
        if kind is None:
            raise ConfigError(f"optimizer architecture {self.arch.name!r} changed its state")
        rows = [p.numel() for p in params] if kind == "entry" else [1] * len(params)
        pieces = value.split(rows, dim=1)
        return [piece.reshape(self.shape(key, p)) for piece, p in zip(pieces, params, strict=True)]

    def carry_rules(self) -> dict[str, int | Literal["copy"]]:
        """How each per-parameter state entry follows a grown (e.g. widened) parameter.

        An ``int`` ``k``: the entry is laid out like the parameter (its leading dims are
        the parameter's shape, any further dims are channels) and holds the gradient to
        the power ``k`` (from the arch's ``state_grad_powers``), so a slice copied from
        another unit scales as that unit's gradient would, to the power ``k``. ``"copy"``:
        one value per tensor or shared (step counters, per-tensor LSTM state, loss
        statistics), carried unchanged. Per-entry state whose meaning the arch does not
        declare is left out, so a careful consumer refuses to carry it.
        """
        powers = self.arch.state_grad_powers
        rules: dict[str, int | Literal["copy"]] = {"step": "copy"}
        for key, kind in self.kinds.items():
            if kind != "entry":
                rules[PREFIX + key] = "copy"
            elif key in powers:
                rules[PREFIX + key] = powers[key]
        return rules

    def check_saved(self, param: Tensor, saved: Any) -> dict[str, Any]:
        """``saved`` (one parameter's state) if it is this architecture's state for ``param``.

        Slices in the earlier batched layout (``[1, n, ...]`` per entry, ``[1, 1, ...]``
        per tensor, and ``[1]`` for ``AdamArch``'s former one step counter per group) are
        reshaped to the parameter's layout.
        """
        if isinstance(saved, Mapping) and not saved:
            return {}  # never stepped (torch saves the {} that reading opt.state[p] creates)
        name = self.arch.name
        want = {"step", *(PREFIX + key for key in self.kinds)}
        if not isinstance(saved, Mapping) or set(saved) != want:
            have = sorted(map(str, saved)) if isinstance(saved, Mapping) else type(saved).__name__
            raise ConfigError(
                f"the state_dict is not the state of a {name!r} learned optimizer: "
                f"a parameter's state holds {have}, {name!r} keeps {sorted(want)}"
            )
        state = dict(saved)
        if not isinstance(state["step"], Tensor) or state["step"].numel() != 1:
            raise ConfigError("damaged optimizer state_dict: a parameter's 'step' is not a number")
        for key in self.kinds:
            value, shape = state[PREFIX + key], self.shape(key, param)
            if isinstance(value, Tensor) and tuple(value.shape) in self._legacy(key, param):
                value = state[PREFIX + key] = value.reshape(shape)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ConfigError(
                    f"the state_dict does not fit this {name!r} learned optimizer: "
                    f"{PREFIX}{key} of a parameter of shape {tuple(param.shape)} is {got}, "
                    f"expected {shape}"
                )
        return state

    def _legacy(self, key: str, param: Tensor) -> list[tuple[int, ...]]:
        """Shapes of ``param``'s slice of ``key`` in state dicts of earlier versions."""
        kind, trail = self.kinds[key], self.probes[key][2:]
        if kind == "entry":
            return [(1, param.numel(), *trail)]
        if kind == "tensor":
            return [(1, 1, *trail), *([(1,)] if not trail else [])]
        return []


def check_form(state_dict: Any) -> None:
    """Refuse anything that is not shaped like a torch optimizer state dict."""
    if (
        not isinstance(state_dict, Mapping)
        or not isinstance(state_dict.get("state"), Mapping)
        or not isinstance(state_dict.get("param_groups"), list)
    ):
        raise ConfigError("not an optimizer state_dict (it needs 'state' and 'param_groups')")


def check_record(record: Any, arch: OptimizerArch) -> None:
    """Refuse a state dict whose architecture record is damaged or names another arch."""
    if record is None:
        return
    name, dim = (
        (record.get("name"), record.get("theta_dim"))
        if isinstance(record, Mapping)
        else (None, None)
    )
    if not isinstance(name, str) or not isinstance(dim, int):
        raise ConfigError(f"damaged optimizer state_dict: {RECORD!r} is {record!r}")
    ours = (arch.name, arch.theta_dim)
    if (name, dim) != ours:
        raise ConfigError(
            f"the state_dict is from a {name!r} learned optimizer with {dim} weights; "
            f"this one is {ours[0]!r} with {ours[1]}"
        )


def saved_ids(saved_groups: list[Any], param_groups: list[dict[str, Any]]) -> dict[Any, Tensor]:
    """The saved parameter ids mapped to this optimizer's parameters (as torch maps them)."""
    try:
        saved_lens = [len(group["params"]) for group in saved_groups]
    except (TypeError, KeyError):
        raise ConfigError("damaged optimizer state_dict: a param group has no params") from None
    ours = [len(group["params"]) for group in param_groups]
    if saved_lens != ours:
        raise ConfigError(
            f"the state_dict's parameter groups hold {saved_lens} parameters; "
            f"this optimizer's hold {ours}"
        )
    saved = chain.from_iterable(group["params"] for group in saved_groups)
    params = chain.from_iterable(group["params"] for group in param_groups)
    return dict(zip(saved, params, strict=True))


def _kind(value: Tensor, entries: int, tensors: int) -> Kind:
    if value.dim() >= 2 and value.shape[1] == entries:
        return "entry"
    if value.dim() >= 2 and value.shape[1] == tensors:
        return "tensor"
    return "global"
