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
layouts (caching the :class:`Segments` of each set of parameter shapes) and checks a
saved per-parameter state before ``load_state_dict`` accepts it (state dicts saved
before this layout, with ``[1, n, ...]``/``[1, 1, ...]`` slices, are read too).
:meth:`StateLayout.carry_rules` says how each entry follows a grown parameter.

The ``"lopt_arch"`` record carries a format number (:data:`FORMAT`). Format 2 applies a
group's ``weight_decay``; state dicts without the number (format 1) were saved when it
was ignored, so :func:`check_format1_groups` refuses one whose groups set a nonzero
``weight_decay`` (loading it would start decaying a resumed run), and their missing
options are filled with the values they ran with (:data:`FORMAT1_OPTIONS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any, Literal

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.interfaces import OptimizerArch
from metalab.lopt.optimizer_args import check_group_keys
from metalab.lopt.segments import Segments
from metalab.lopt.systems import State

__all__ = [
    "FORMAT",
    "FORMAT1_OPTIONS",
    "PREFIX",
    "RECORD",
    "StateLayout",
    "check_form",
    "check_format1_groups",
    "check_record",
    "record",
    "saved_group_fill",
    "saved_ids",
]

Kind = Literal["entry", "tensor", "global"]
PREFIX = "lopt."  # per-parameter state keys are the arch's keys with this prefix
RECORD = "lopt_arch"  # state_dict key of the architecture record (name, θ size, format)
FORMAT = 2  # 2: groups' weight_decay is applied; 1 (no number): it was ignored
# What a format-1 group ran with when it lacks the option (lr was added at 1.0).
FORMAT1_OPTIONS: dict[str, Any] = {"lr": 1.0, "weight_decay": 0.0, "val_loss": None}
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
        self._segments: dict[tuple[Any, torch.device], Segments] = {}

    def segments(self, params: list[Tensor]) -> Segments:
        """The layout of ``params`` flattened (on their device), built once per shapes.

        Rebuilding it every step cost more than the rest of a small model's bookkeeping
        (and is a blocking host-to-device copy on a GPU).
        """
        key = (tuple(p.shape for p in params), params[0].device)
        segments = self._segments.get(key)
        if segments is None:
            if len(self._segments) >= 64:  # the set of stepped parameters keeps changing
                self._segments.clear()
            segments = self._segments[key] = Segments.from_shapes(list(key[0]), key[1])
        return segments

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


def record(arch: OptimizerArch) -> dict[str, Any]:
    """The ``"lopt_arch"`` record of a state dict saved now."""
    return {"name": arch.name, "theta_dim": arch.theta_dim, "format": FORMAT}


def check_record(saved: Any, arch: OptimizerArch) -> int:
    """The state dict's format; refuse a damaged record or one that names another arch.

    No record (the earliest state dicts) or no ``"format"`` in it means format 1.
    """
    if saved is None:
        return 1
    name, dim, version = (
        (saved.get("name"), saved.get("theta_dim"), saved.get("format", 1))
        if isinstance(saved, Mapping)
        else (None, None, None)
    )
    numbers = [v for v in (dim, version) if isinstance(v, int) and not isinstance(v, bool)]
    if not isinstance(name, str) or len(numbers) != 2 or numbers[1] < 1:
        raise ConfigError(f"damaged optimizer state_dict: {RECORD!r} is {saved!r}")
    dim, version = numbers
    if version > FORMAT:
        raise ConfigError(
            f"the state_dict has format {version}, from a newer metalab; this one reads "
            f"formats up to {FORMAT} (upgrade metalab to load it)"
        )
    ours = (arch.name, arch.theta_dim)
    if (name, dim) != ours:
        raise ConfigError(
            f"the state_dict is from a {name!r} learned optimizer with {dim} weights; "
            f"this one is {ours[0]!r} with {ours[1]}"
        )
    return version


def saved_group_fill(
    state_dict: Mapping[str, Any], arch: OptimizerArch, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The options for loaded groups that lack them, after checking the record.

    A format-1 group ran with :data:`FORMAT1_OPTIONS` (and is refused if it would now
    decay); a current one lacks only options added later, which take ``defaults``.
    Another optimizer's options are refused first: its state dict has no record either.
    """
    for group in state_dict["param_groups"]:
        if isinstance(group, Mapping):
            check_group_keys(group)
    if check_record(state_dict.get(RECORD), arch) == 1:
        check_format1_groups(state_dict["param_groups"])
        return dict(FORMAT1_OPTIONS)
    return {key: defaults[key] for key in FORMAT1_OPTIONS}


def check_format1_groups(groups: list[Any]) -> None:
    """Refuse a format-1 state dict whose groups set a nonzero ``weight_decay``.

    Format 1 kept a group's ``weight_decay`` but ignored it, so the saved run never
    decayed; loading it as is would start removing that fraction of every parameter
    each step. Refusing (rather than zeroing it quietly) lets the user choose.
    """
    for i, group in enumerate(groups):
        value = group.get("weight_decay", 0.0) if isinstance(group, Mapping) else 0.0
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
            continue
        raise ConfigError(
            f"this state_dict was saved when LearnedOptimizer ignored weight_decay, and its "
            f"param group {i} has weight_decay={value!r}, which would now remove that "
            "fraction of each parameter every step; to resume the run as it ran, set "
            "state_dict['param_groups'][i]['weight_decay'] = 0 in every group and load "
            "again (then set the optimizer's param_groups' weight_decay to the decay you "
            "want from here on)"
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
