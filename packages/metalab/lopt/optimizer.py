"""A learned optimizer as an ordinary :class:`torch.optim.Optimizer` (Metz et al. 2020).

``LearnedOptimizer(model.parameters())`` drives any ``nn.Module`` with the packaged
default learned optimizer; ``weights=PATH`` (a file from :func:`~metalab.lopt.save_weights`)
or ``weights=θ, arch=...`` selects another. Each step flattens a parameter group's
gradients into one ``[1, N]`` vector (tensor layout in :class:`Segments`), calls the
architecture's batched ``step`` with one particle and writes the result back in place.

Loss features (Metz 2020's hierarchical optimizer reads them; others ignore them): the
training loss is the closure's return value (or ``step(loss=...)``); the validation loss
is fed with :meth:`LearnedOptimizer.observe_validation_loss` (or ``step(val_loss=...)``)
and is used until the next one — meta-training feeds it at every step, so feed it as
often as you can when using the hierarchical optimizer.

State lives in ``self.state[p]`` (one slice of every optimizer-state tensor per parameter,
plus the step count ``"step"``), so ``state_dict`` is torch's own plus a record of the
architecture (``"lopt_arch"``: name and ``θ`` size) that ``load_state_dict`` checks —
the state of another architecture would otherwise fail mid-``step`` or, worse, be used.
The time features use the group's training time: the largest step count among the
group's parameters stepped so far (so a parameter that first gets a gradient late, or is
stepped alone, continues the group's schedule instead of restarting it);
per-tensor/global state slices of parameters skipped in a step (``grad is None``) are kept.
The optimizer computes in float32 whatever the parameters' dtype (float64 parameters
receive the float32 update added in float64). Devices follow the parameters: a group
spread over devices is stepped per device, on one training time for the whole group.

Learning-rate schedulers: a learned optimizer chooses its own step sizes, so a param
group's ``lr`` is a *multiplier* of the learned update (default 1.0, the optimizer as
meta-trained); ``torch.optim.lr_scheduler`` schedulers drive it like any ``lr``. At exactly
1.0 no multiplication happens, so the default is bit-identical to the architecture itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.arch_registry import arch_class, make_arch
from metalab.lopt.interfaces import LossFeatures, OptimizerArch
from metalab.lopt.mlp_lopt import Segments
from metalab.lopt.systems import State
from metalab.lopt.weights import LoptWeights, load_weights

__all__ = ["LearnedOptimizer"]

_Kind = Literal["entry", "tensor", "global"]
_DTYPE = torch.float32
_PREFIX = "lopt."
_RECORD = "lopt_arch"  # state_dict key of the architecture record (name, θ size)


class LearnedOptimizer(torch.optim.Optimizer):
    """Any :class:`OptimizerArch` with fixed weights ``θ`` as a torch optimizer.

    Args:
        params: parameters or parameter groups, as for any torch optimizer.
        weights: ``None`` (the packaged default), a weights-file path, a
            :class:`LoptWeights`, or a ``[D]`` tensor ``θ`` (then ``arch`` is required).
        arch: an architecture instance or registry name; with a file (or the default) it
            must be the file's architecture (a different arch is refused even when its
            ``θ`` has the same size, since the weights would mean something else).
        arch_options: options for ``arch`` given by name with a ``θ`` tensor (a weights
            file carries its own options, so they are refused there).
        lr: multiplier of every update (default 1.0 = the learned step sizes as
            meta-trained); per group like any torch ``lr``, so LR schedulers work.

    Raises:
        ConfigError: missing/corrupt weights, ``θ`` of the wrong size or not finite, an
            arch that does not match the file, a negative or non-finite ``lr``, sparse or
            complex gradients; at ``step``, a loss that is not one number.
        UnknownNameError: an ``arch`` name that is not registered (with suggestions).

    A NaN/inf in one gradient entry makes the whole tensor's update NaN, not only that
    entry's: the learned archs normalize their inputs by the tensor's RMS, which the bad
    entry poisons (guard with e.g. ``torch.nan_to_num_`` or skip such steps).

    Example:
        >>> opt = LearnedOptimizer(model.parameters(), weights="lopt.pt")  # doctest: +SKIP
        >>> loss = opt.step(closure)  # doctest: +SKIP
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        weights: str | Path | Tensor | LoptWeights | None = None,
        arch: OptimizerArch | str | None = None,
        *,
        arch_options: Mapping[str, Any] | None = None,
        lr: float = 1.0,
    ) -> None:
        self.arch, theta, self.provenance = _resolve(weights, arch, arch_options)
        self._theta = theta.reshape(1, -1).to(_DTYPE)
        self._theta_cache: dict[torch.device, Tensor] = {}
        self._layout: dict[str, tuple[_Kind, tuple[int, ...]]] | None = None
        self._kinds: dict[str, _Kind] | None = None
        super().__init__(params, {"val_loss": None, "lr": _check_lr(lr)})

    @property
    def theta(self) -> Tensor:
        """The optimizer weights ``[D]`` (float32, CPU)."""
        return self._theta[0]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Torch's ``add_param_group``, refusing a group ``lr`` that is not a multiplier."""
        _check_lr(param_group.get("lr", self.defaults["lr"]))
        super().add_param_group(param_group)

    def observe_validation_loss(self, value: float | Tensor) -> None:
        """Record the latest validation loss; it is fed to every following step."""
        loss = float(_one_number(value, "the validation loss"))
        for group in self.param_groups:
            group["val_loss"] = loss

    def step(
        self,
        closure: Callable[[], Any] | None = None,
        *,
        loss: float | Tensor | None = None,
        val_loss: float | Tensor | None = None,
    ) -> Any:
        """One learned-optimizer update of every parameter that has a gradient.

        Args:
            closure: re-evaluates the model and returns the training loss (optional).
            loss: the training loss, when there is no closure (a loss feature).
            val_loss: a new validation loss (as :meth:`observe_validation_loss`).

        Returns:
            The closure's return value (``None`` without a closure).
        """
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        train = loss if loss is not None else result
        if train is not None:  # refused before any parameter changes
            train = _one_number(train, "the training loss")
        if val_loss is not None:
            self.observe_validation_loss(val_loss)
        rates = [_check_lr(group.get("lr", 1.0)) for group in self.param_groups]
        with torch.no_grad():
            for group, lr in zip(self.param_groups, rates, strict=True):
                active = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
                by_device: dict[torch.device, list[Tensor]] = {}
                for p in active:
                    _check_grad(p)
                    by_device.setdefault(p.device, []).append(p)
                time = _group_time(group, self.state)  # one clock for all devices
                for params in by_device.values():
                    self._step_params(params, group, train, lr, time)
        return result

    def _step_params(
        self, params: list[Tensor], group: dict[str, Any], train: Any, lr: float, time: Tensor
    ) -> None:
        """Flatten ``params``, call the arch with one particle, write the update back.

        ``lr`` is the group's checked update multiplier; ``time`` its training time.
        """
        device = params[0].device
        sizes = [p.numel() for p in params]
        segments = Segments.from_shapes([tuple(p.shape) for p in params], device)
        flat = torch.cat([p.detach().reshape(-1).to(_DTYPE) for p in params]).unsqueeze(0)
        grads = torch.cat([p.grad.reshape(-1).to(_DTYPE) for p in params])  # type: ignore[union-attr]
        self._init_missing(params, group)
        state = self._gather(params)
        t = time.reshape(1).to(device)
        losses = _loss_features(train, group["val_loss"], device)
        new_flat, new_state = self.arch.step(
            self._theta_on(device), flat, grads.unsqueeze(0), state, t, segments, losses
        )
        if lr != 1.0:  # skipped at 1.0: the default stays bit-identical to the arch
            new_flat = flat + lr * (new_flat - flat)
        _write_back(params, new_flat[0].split(sizes), flat[0].split(sizes))
        self._scatter(params, new_state, group)
        step = time.reshape(()) + 1
        for p in params:
            self.state[p]["step"] = step

    def _theta_on(self, device: torch.device) -> Tensor:
        if device not in self._theta_cache:
            self._theta_cache[device] = self._theta.to(device)
        return self._theta_cache[device]

    def _state_layout(self) -> dict[str, tuple[_Kind, tuple[int, ...]]]:
        """Each state tensor's kind and its shape for the probe layout ``N = 5``, ``S = 2``.

        Kinds: per entry ``[P, N, ...]``, per tensor ``[P, S, ...]`` or global. Found once
        by probing ``init_state``; the shapes let :meth:`load_state_dict` check a state.
        """
        if self._layout is None:
            probe = Segments.from_shapes([(2,), (3,)], torch.device("cpu"))
            state = self.arch.init_state(torch.zeros(1, 5, dtype=_DTYPE), probe)
            self._layout = {k: (_kind(v, 5, 2), tuple(v.shape)) for k, v in state.items()}
        return self._layout

    def _state_kinds(self) -> dict[str, _Kind]:
        if self._kinds is None:
            self._kinds = {key: kind for key, (kind, _) in self._state_layout().items()}
        return self._kinds

    def state_dict(self) -> dict[str, Any]:
        """The state dict of torch plus ``"lopt_arch"``: the architecture's name and ``θ`` size.

        The per-parameter state means nothing to another architecture (or the same one
        with other options), so :meth:`load_state_dict` refuses a mismatch by this record.
        """
        saved = super().state_dict()
        saved[_RECORD] = {"name": self.arch.name, "theta_dim": self.arch.theta_dim}
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Torch's ``load_state_dict``, after checking the state fits this architecture.

        With the ``"lopt_arch"`` record its name and ``θ`` size must match; without it
        (state dicts of earlier versions) every parameter's state must hold exactly this
        architecture's state tensors in the right shapes. Nothing changes when refused.

        Raises:
            ConfigError: not an optimizer state dict, another architecture's state, or
                parameter groups that do not match this optimizer's.
        """
        if (
            not isinstance(state_dict, Mapping)
            or not isinstance(state_dict.get("state"), Mapping)
            or not isinstance(state_dict.get("param_groups"), list)
        ):
            raise ConfigError("not an optimizer state_dict (it needs 'state' and 'param_groups')")
        self._check_record(state_dict.get(_RECORD))
        ids = self._saved_ids(state_dict["param_groups"])
        state = {}
        for key, value in state_dict["state"].items():
            param = ids.get(key)
            state[key] = value if param is None else self._checked_state(param, value)
        torch_dict = {k: v for k, v in state_dict.items() if k != _RECORD}
        super().load_state_dict({**torch_dict, "state": state})
        for key, param in ids.items():  # torch cast the state to the parameter's dtype
            for name, value in state.get(key, {}).items():
                if name.startswith(_PREFIX):
                    self.state[param][name] = value.to(param.device, _DTYPE)
        for group in self.param_groups:  # keys added since the state dict was saved
            for key, default in self.defaults.items():
                group.setdefault(key, default)

    def _check_record(self, record: Any) -> None:
        if record is None:
            return
        name, dim = (
            (record.get("name"), record.get("theta_dim"))
            if isinstance(record, Mapping)
            else (None, None)
        )
        if not isinstance(name, str) or not isinstance(dim, int):
            raise ConfigError(f"damaged optimizer state_dict: {_RECORD!r} is {record!r}")
        ours = (self.arch.name, self.arch.theta_dim)
        if (name, dim) != ours:
            raise ConfigError(
                f"the state_dict is from a {name!r} learned optimizer with {dim} weights; "
                f"this one is {ours[0]!r} with {ours[1]}"
            )

    def _saved_ids(self, saved_groups: list[Any]) -> dict[Any, Tensor]:
        """The saved parameter ids mapped to this optimizer's parameters (as torch maps them)."""
        try:
            saved_lens = [len(group["params"]) for group in saved_groups]
        except (TypeError, KeyError):
            raise ConfigError("damaged optimizer state_dict: a param group has no params") from None
        ours = [len(group["params"]) for group in self.param_groups]
        if saved_lens != ours:
            raise ConfigError(
                f"the state_dict's parameter groups hold {saved_lens} parameters; "
                f"this optimizer's hold {ours}"
            )
        saved = chain.from_iterable(group["params"] for group in saved_groups)
        params = chain.from_iterable(group["params"] for group in self.param_groups)
        return dict(zip(saved, params, strict=True))

    def _checked_state(self, param: Tensor, saved: Any) -> dict[str, Any]:
        """``saved`` (one parameter's state) if it is this architecture's state for ``param``.

        A ``[1]`` per-tensor value is read as ``[1, 1]``: ``AdamArch`` kept one step
        counter per group before it counted per tensor.
        """
        if isinstance(saved, Mapping) and not saved:
            return {}  # never stepped (torch saves the {} that reading opt.state[p] creates)
        layout = self._state_layout()
        want = {"step", *(_PREFIX + key for key in layout)}
        if not isinstance(saved, Mapping) or set(saved) != want:
            have = sorted(map(str, saved)) if isinstance(saved, Mapping) else type(saved).__name__
            raise ConfigError(
                f"the state_dict is not the state of a {self.arch.name!r} learned optimizer: "
                f"a parameter's state holds {have}, {self.arch.name!r} keeps {sorted(want)}"
            )
        state = dict(saved)
        if not isinstance(state["step"], Tensor) or state["step"].numel() != 1:
            raise ConfigError("damaged optimizer state_dict: a parameter's 'step' is not a number")
        for key, (kind, probe) in layout.items():
            value = state[_PREFIX + key]
            if kind == "entry":
                shape = (1, param.numel(), *probe[2:])
            elif kind == "tensor":
                shape = (1, 1, *probe[2:])
            else:
                shape = probe
            legacy = isinstance(value, Tensor) and tuple(value.shape) == (1,)
            if legacy and kind == "tensor" and shape == (1, 1):
                value = state[_PREFIX + key] = value.reshape(shape)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ConfigError(
                    f"the state_dict does not fit this {self.arch.name!r} learned optimizer: "
                    f"{_PREFIX}{key} of a parameter of shape {tuple(param.shape)} is {got}, "
                    f"expected {shape}"
                )
        return state

    def _init_missing(self, params: list[Tensor], group: dict[str, Any]) -> None:
        """Fresh arch state for parameters stepped for the first time (globals are shared)."""
        missing = [p for p in params if "step" not in self.state[p]]
        if not missing:
            return
        device = missing[0].device
        flat = torch.cat([p.detach().reshape(-1).to(_DTYPE) for p in missing]).unsqueeze(0)
        segments = Segments.from_shapes([tuple(p.shape) for p in missing], device)
        fresh = self.arch.init_state(flat, segments)
        old = [p for p in group["params"] if "step" in self.state.get(p, {}) and p.device == device]
        kinds = self._state_kinds()
        for key in [k for k in fresh if kinds[k] == "global" and old]:
            fresh[key] = self.state[old[0]][_PREFIX + key]
        self._scatter(missing, fresh, None)
        zero = torch.tensor(0.0, dtype=_DTYPE)
        for p in missing:
            self.state[p]["step"] = zero.clone()

    def _gather(self, params: list[Tensor]) -> State:
        """The arch state of ``params`` concatenated from their per-parameter slices."""
        state = {}
        for key, kind in self._state_kinds().items():
            pieces = [self.state[p][_PREFIX + key].to(_DTYPE) for p in params]
            state[key] = pieces[0] if kind == "global" else torch.cat(pieces, dim=1)
        return state

    def _scatter(self, params: list[Tensor], state: State, group: dict[str, Any] | None) -> None:
        """Store one slice of every state tensor per parameter (globals in every one)."""
        sizes = [p.numel() for p in params]
        kinds = self._state_kinds()
        for key, value in state.items():
            kind = kinds.get(key)
            if kind == "entry":
                pieces = list(value.split(sizes, dim=1))
            elif kind == "tensor":
                pieces = list(value.split(1, dim=1))
            elif kind == "global":
                pieces = [value] * len(params)
                if group is not None:  # skipped parameters keep the current globals too
                    for p in group["params"]:
                        if "step" in self.state.get(p, {}) and p.device == value.device:
                            self.state[p][_PREFIX + key] = value
            else:
                raise ConfigError(f"optimizer architecture {self.arch.name!r} changed its state")
            for p, piece in zip(params, pieces, strict=True):
                self.state[p][_PREFIX + key] = piece


def _group_time(group: dict[str, Any], state: Mapping[Tensor, Any]) -> Tensor:
    """The group's training time: the largest step count of its parameters, on any device."""
    steps = [state[p]["step"].cpu() for p in group["params"] if "step" in state.get(p, {})]
    return torch.stack(steps).max() if steps else torch.tensor(0.0, dtype=_DTYPE)


def _kind(value: Tensor, entries: int, tensors: int) -> _Kind:
    if value.dim() >= 2 and value.shape[1] == entries:
        return "entry"
    if value.dim() >= 2 and value.shape[1] == tensors:
        return "tensor"
    return "global"


def _check_grad(p: Tensor) -> None:
    grad = p.grad
    assert grad is not None
    if grad.is_sparse:
        raise ConfigError("LearnedOptimizer does not support sparse gradients")
    if p.is_complex():
        raise ConfigError("LearnedOptimizer does not support complex parameters")


def _write_back(params: list[Tensor], new: tuple[Tensor, ...], old: tuple[Tensor, ...]) -> None:
    """Copy float32 results into float32 parameters; add the update to other dtypes."""
    same = [(p, n) for p, n in zip(params, new, strict=True) if p.dtype == _DTYPE]
    if same:
        torch._foreach_copy_([p for p, _ in same], [n.view_as(p) for p, n in same])
    for p, n, o in zip(params, new, old, strict=True):
        if p.dtype != _DTYPE:
            p.add_((n - o).view_as(p).to(p.dtype))


def _one_number(value: Any, what: str) -> Tensor | float:
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


def _check_lr(value: Any) -> float:
    """The update multiplier ``lr`` as a float, if it is a finite number ``>= 0``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = float(value)
    ok = isinstance(value, float | int) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"LearnedOptimizer lr (a multiplier of the learned update) must be a finite "
            f"number >= 0, got {value!r}"
        )
    return float(value)


def _loss_features(
    train: Tensor | float | None, val: float | None, device: torch.device
) -> LossFeatures | None:
    """One-particle loss features, or ``None`` when no training loss is known."""
    if train is None:
        return None
    train_t = torch.as_tensor(train).detach().reshape(1).to(device, _DTYPE)
    val_t = None if val is None else torch.tensor([val], dtype=_DTYPE, device=device)
    return LossFeatures(train_t, val_t)


def _resolve(
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
        theta, provenance = weights.detach().reshape(-1).to("cpu", _DTYPE), {}
    else:
        loaded = weights if isinstance(weights, LoptWeights) else load_weights(weights)
        name = arch.name if isinstance(arch, OptimizerArch) else arch
        if name is not None and name != loaded.arch:
            raise ConfigError(f"the weights are for arch {loaded.arch!r}, not {name!r}")
        built = arch if isinstance(arch, OptimizerArch) else loaded.build_arch()
        theta = loaded.theta.detach().reshape(-1).to("cpu", _DTYPE)
        provenance = dict(loaded.provenance)
    if theta.numel() != built.theta_dim:
        raise ConfigError(
            f"weights have {theta.numel()} entries but arch {built.name!r} needs {built.theta_dim}"
        )
    if not bool(torch.isfinite(theta).all()):
        raise ConfigError("the optimizer weights θ contain non-finite values (NaN or inf)")
    return built, theta, provenance


def _check_arguments(weights: Any, arch: Any, options: Mapping[str, Any] | None) -> None:
    """Refuse argument types and combinations that ``_resolve`` cannot honour.

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
