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
plus the step count ``"step"``), so ``state_dict``/``load_state_dict`` are torch's own.
The time features use the largest step count among the parameters being updated;
per-tensor/global state slices of parameters skipped in a step (``grad is None``) are kept.
The optimizer computes in float32 whatever the parameters' dtype (float64 parameters
receive the float32 update added in float64). Devices follow the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.arch_registry import make_arch
from metalab.lopt.interfaces import LossFeatures, OptimizerArch
from metalab.lopt.mlp_lopt import Segments
from metalab.lopt.systems import State
from metalab.lopt.weights import LoptWeights, load_weights

__all__ = ["LearnedOptimizer"]

_Kind = Literal["entry", "tensor", "global"]
_DTYPE = torch.float32
_PREFIX = "lopt."


class LearnedOptimizer(torch.optim.Optimizer):
    """Any :class:`OptimizerArch` with fixed weights ``θ`` as a torch optimizer.

    Args:
        params: parameters or parameter groups, as for any torch optimizer.
        weights: ``None`` (the packaged default), a weights-file path, a
            :class:`LoptWeights`, or a ``[D]`` tensor ``θ`` (then ``arch`` is required).
        arch: an architecture instance or registry name; with a file it must match it.
        arch_options: options for ``arch`` given by name.

    Raises:
        ConfigError: missing/corrupt weights, ``θ`` of the wrong size, an arch that does
            not match the file, sparse or complex gradients.

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
    ) -> None:
        self.arch, theta, self.provenance = _resolve(weights, arch, arch_options)
        self._theta = theta.reshape(1, -1).to(_DTYPE)
        self._theta_cache: dict[torch.device, Tensor] = {}
        self._kinds: dict[str, _Kind] | None = None
        super().__init__(params, {"val_loss": None})

    @property
    def theta(self) -> Tensor:
        """The optimizer weights ``[D]`` (float32, CPU)."""
        return self._theta[0]

    def observe_validation_loss(self, value: float | Tensor) -> None:
        """Record the latest validation loss; it is fed to every following step."""
        loss = float(value.detach().reshape(-1)[0]) if isinstance(value, Tensor) else float(value)
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
        if val_loss is not None:
            self.observe_validation_loss(val_loss)
        with torch.no_grad():
            for group in self.param_groups:
                active = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
                by_device: dict[torch.device, list[Tensor]] = {}
                for p in active:
                    _check_grad(p)
                    by_device.setdefault(p.device, []).append(p)
                for params in by_device.values():
                    self._step_params(params, group, train)
        return result

    def _step_params(self, params: list[Tensor], group: dict[str, Any], train: Any) -> None:
        """Flatten ``params``, call the arch with one particle, write the update back."""
        device = params[0].device
        sizes = [p.numel() for p in params]
        segments = Segments.from_shapes([tuple(p.shape) for p in params], device)
        flat = torch.cat([p.detach().reshape(-1).to(_DTYPE) for p in params]).unsqueeze(0)
        grads = torch.cat([p.grad.reshape(-1).to(_DTYPE) for p in params])  # type: ignore[union-attr]
        self._init_missing(params, group)
        state = self._gather(params)
        t = torch.stack([self.state[p]["step"] for p in params]).max().reshape(1).to(device)
        losses = _loss_features(train, group["val_loss"], device)
        new_flat, new_state = self.arch.step(
            self._theta_on(device), flat, grads.unsqueeze(0), state, t, segments, losses
        )
        _write_back(params, new_flat[0].split(sizes), flat[0].split(sizes))
        self._scatter(params, new_state, group)
        step = (t[0] + 1).to("cpu")
        for p in params:
            self.state[p]["step"] = step

    def _theta_on(self, device: torch.device) -> Tensor:
        if device not in self._theta_cache:
            self._theta_cache[device] = self._theta.to(device)
        return self._theta_cache[device]

    def _state_kinds(self) -> dict[str, _Kind]:
        """Which state tensors are per entry ``[P, N, ...]``, per tensor ``[P, S, ...]``, global.

        Found once by probing ``init_state`` on a layout with ``N = 5`` and ``S = 2``.
        """
        if self._kinds is None:
            probe = Segments.from_shapes([(2,), (3,)], torch.device("cpu"))
            state = self.arch.init_state(torch.zeros(1, 5, dtype=_DTYPE), probe)
            self._kinds = {key: _kind(value, 5, 2) for key, value in state.items()}
        return self._kinds

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


def _loss_features(train: Any, val: float | None, device: torch.device) -> LossFeatures | None:
    """One-particle loss features, or ``None`` when no training loss is known."""
    if train is None:
        return None
    if not isinstance(train, Tensor | float | int):
        raise ConfigError(f"the closure must return the loss (a number), got {type(train)}")
    train_t = torch.as_tensor(train).detach().reshape(-1)[:1].to(device, _DTYPE)
    val_t = None if val is None else torch.tensor([val], dtype=_DTYPE, device=device)
    return LossFeatures(train_t, val_t)


def _resolve(
    weights: str | Path | Tensor | LoptWeights | None,
    arch: OptimizerArch | str | None,
    options: Mapping[str, Any] | None,
) -> tuple[OptimizerArch, Tensor, dict[str, Any]]:
    """The architecture, ``θ`` and provenance from the constructor's arguments."""
    if isinstance(weights, Tensor):
        if arch is None:
            raise ConfigError("LearnedOptimizer(weights=<tensor>) needs arch= (name or object)")
        built = arch if isinstance(arch, OptimizerArch) else make_arch(arch, **(options or {}))
        theta, provenance = weights.detach().reshape(-1).to("cpu", _DTYPE), {}
    else:
        loaded = weights if isinstance(weights, LoptWeights) else load_weights(weights)
        if isinstance(arch, str) and arch != loaded.arch:
            raise ConfigError(f"the weights are for arch {loaded.arch!r}, not {arch!r}")
        built = arch if isinstance(arch, OptimizerArch) else loaded.build_arch()
        theta, provenance = loaded.theta, dict(loaded.provenance)
    if theta.numel() != built.theta_dim:
        raise ConfigError(
            f"weights have {theta.numel()} entries but arch {built.name!r} needs {built.theta_dim}"
        )
    return built, theta, provenance
