"""A learned optimizer as an ordinary :class:`torch.optim.Optimizer` (Metz et al. 2020).

``LearnedOptimizer(model.parameters())`` drives any ``nn.Module`` with the packaged
default learned optimizer; ``weights=PATH`` (a file from :func:`~metalab.lopt.save_weights`)
or ``weights=θ, arch=...`` selects another. Each step flattens a parameter group's
gradients into one ``[1, N]`` vector (tensor layout in :class:`Segments`), calls the
architecture's batched ``step`` with one particle and writes the result back in place.

Loss features (Metz 2020's hierarchical optimizer reads them; others ignore them): the
training loss is the closure's return value (or ``step(loss=...)``), required by the
hierarchical optimizer; a NaN/inf one is refused as a Python number and masked as a
tensor (no device sync; see :mod:`~metalab.lopt.arch_hierarchical`). The validation loss
is fed with :meth:`LearnedOptimizer.observe_validation_loss` (or ``step(val_loss=...)``)
and is used until the next one — meta-training feeds it at every step, so feed it as
often as you can when using the hierarchical optimizer.

State lives in ``self.state[p]`` in the parameter's own layout (per-entry state of a
parameter of shape ``s`` is ``[*s, ...]``; see :mod:`metalab.lopt.optimizer_state`), plus
the step count ``"step"``, so ``state_dict`` is torch's own plus a record of the
architecture (``"lopt_arch"``: name, ``θ`` size, format) that ``load_state_dict`` checks —
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

Weight decay is decoupled (AdamW, Loshchilov & Hutter 2019) and outside the learned
update: ``p ← p_learned − lr · weight_decay · p_old``, with the group's ``lr`` multiplier,
so ``weight_decay`` is the fraction of ``p`` removed per step at ``lr = 1``. AdamW scales it
by its step size instead: AdamW's ``weight_decay=0.01`` at ``lr=1e-3`` removes ``1e-5`` per
step, i.e. ``weight_decay=1e-5`` here. At 0 (the default) nothing is computed. AdamW's
grouping idiom (``"weight_decay": 0.1``) would remove 10% per step, so a decay above 0.01
warns (once per optimizer) and ``lr · weight_decay >= 1`` is refused (also at ``step``,
for an ``lr`` a scheduler raised). State dicts saved when a group's ``weight_decay`` was
ignored are refused if one sets it, so a resumed run never starts decaying unasked.

Groups may carry any key of the user's (``"name"``, a scheduler's ``initial_lr``); only
options of other torch optimizers that this one cannot honour (``momentum``, ``betas``,
... :data:`~metalab.lopt.optimizer_args.FOREIGN_OPTIONS`) are refused, when a group is
added or loaded, and at the first ``step`` after one is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from metalab.lopt.interfaces import LossFeatures, OptimizerArch
from metalab.lopt.optimizer_args import (
    GroupChecks,
    check_grad,
    check_lr,
    check_rates,
    check_train_loss,
    check_val_loss,
    check_weight_decay,
    one_number,
    resolve,
)
from metalab.lopt.optimizer_state import (
    PREFIX,
    RECORD,
    StateLayout,
    check_form,
    record,
    saved_group_fill,
    saved_ids,
)
from metalab.lopt.weights import LoptWeights

__all__ = ["LearnedOptimizer"]

_DTYPE = torch.float32


class LearnedOptimizer(torch.optim.Optimizer):
    """Any :class:`OptimizerArch` with fixed weights ``θ`` as a torch optimizer.

    Args:
        params: parameters or parameter groups, as for any torch optimizer; a group may
            set ``lr``, ``weight_decay`` and ``val_loss``, and keep keys of the user's;
            options of other torch optimizers (``momentum``, ``betas``, ...) are refused.
        weights: ``None`` (the packaged default, an ``mlp`` optimizer), a weights-file
            path, a :class:`LoptWeights`, or a ``[D]`` tensor ``θ`` (then ``arch`` is
            required).
        arch: an architecture instance or registry name; with a file (or the default) it
            must be the file's architecture (a different arch is refused even when its
            ``θ`` has the same size, since the weights would mean something else).
        arch_options: options for ``arch`` given by name with a ``θ`` tensor (a weights
            file carries its own options, so they are refused there).
        lr: multiplier of every update (default 1.0 = the learned step sizes as
            meta-trained); per group like any torch ``lr``, so LR schedulers work.
        weight_decay: decoupled weight decay, the fraction of each parameter removed per
            step at ``lr = 1`` (see the module docstring; default 0; above 0.01 warns).

    Raises:
        ConfigError: missing/corrupt weights, ``θ`` of the wrong size or not finite, an
            arch that does not match the file (or has no packaged weights), a negative
            or non-finite ``lr``/``weight_decay``, ``lr · weight_decay >= 1``, a
            ``val_loss`` that is not ``None`` or a finite number, another optimizer's
            option in a group, sparse or complex gradients; at ``step``, a loss that is
            not one number or is a non-finite Python number, no loss for an arch that
            reads it (and any of the group checks, for groups changed since).
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
        weight_decay: float = 0.0,
    ) -> None:
        self.arch, theta, self.provenance = resolve(weights, arch, arch_options)
        self._theta = theta.reshape(1, -1).to(_DTYPE)
        self._theta_cache: dict[torch.device, Tensor] = {}
        self._layout: StateLayout | None = None
        self._checks = GroupChecks()
        rate, decay = check_lr(lr), check_weight_decay(weight_decay)
        check_rates(rate, decay)
        super().__init__(params, {"val_loss": None, "lr": rate, "weight_decay": decay})

    @property
    def theta(self) -> Tensor:
        """The optimizer weights ``[D]`` (float32, CPU)."""
        return self._theta[0]

    def with_params(self, params: Iterable[Tensor] | Iterable[dict[str, Any]]) -> LearnedOptimizer:
        """A fresh optimizer with this one's arch, ``θ`` and defaults over other parameters.

        Lets code that rebuilds optimizers (Net2Net's ``transfer_optimizer``) do so without
        knowing this class's constructor.
        """
        rebuilt = LearnedOptimizer(
            params,
            weights=self.theta,
            arch=self.arch,
            lr=self.defaults["lr"],
            weight_decay=self.defaults["weight_decay"],
        )
        rebuilt.provenance = dict(self.provenance)
        return rebuilt

    @property
    def state_carry_rules(self) -> dict[str, int | Literal["copy"]]:
        """How each ``self.state[p]`` entry follows a parameter that grows (Net2Net).

        ``int k``: parameter-shaped (leading dims are the parameter's), holds the gradient
        to the power ``k``; ``"copy"``: per tensor or shared, carried unchanged. Per-entry
        state the arch does not declare is absent (do not carry it). See
        :meth:`metalab.lopt.optimizer_state.StateLayout.carry_rules`.
        """
        return self._state_layout().carry_rules()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Torch's ``add_param_group``, refusing other optimizers' options and bad values."""
        self._checks(param_group, self.defaults)
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        """All but hooks: torch's keeps only groups and state (a copy lost the arch, ``θ``)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Torch's, minus the foreign ``differentiable`` default it adds to ``defaults``.

        Torch runs it in ``load_state_dict`` too; ``add_param_group`` would copy it.
        """
        super().__setstate__(state)
        self.defaults.pop("differentiable", None)

    def observe_validation_loss(self, value: float | Tensor) -> None:
        """Record the latest validation loss; it is fed to every following step."""
        loss = check_val_loss(one_number(value, "the validation loss"))
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
        # refused before any parameter changes
        train = check_train_loss(loss if loss is not None else result, self.arch)
        if val_loss is not None:
            self.observe_validation_loss(val_loss)
        rates = [self._checks(group, self.defaults) for group in self.param_groups]
        with torch.no_grad():
            for group, (lr, decay) in zip(self.param_groups, rates, strict=True):
                active = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
                by_device: dict[torch.device, list[Tensor]] = {}
                for p in active:
                    check_grad(p)
                    by_device.setdefault(p.device, []).append(p)
                time = _group_time(group, self.state)  # one clock for all devices
                for params in by_device.values():
                    self._step_params(params, group, train, (lr, decay), time)
        return result

    def _step_params(
        self,
        params: list[Tensor],
        group: dict[str, Any],
        train: Any,
        rates: tuple[float, float],
        time: Tensor,
    ) -> None:
        """Flatten ``params``, call the arch with one particle, write the update back.

        ``rates``: the group's checked ``lr`` multiplier and weight decay; ``time`` its
        training time.
        """
        device, (lr, decay) = params[0].device, rates
        sizes = [p.numel() for p in params]
        segments = self._state_layout().segments(params)
        flat = torch.cat([p.detach().reshape(-1).to(_DTYPE) for p in params]).unsqueeze(0)
        grads = torch.cat([p.grad.reshape(-1).to(_DTYPE) for p in params])  # type: ignore[union-attr]
        self._init_missing(params, group)
        state = self._state_layout().gather([self.state[p] for p in params], params)
        t = time.reshape(1).to(device)
        losses = _loss_features(train, check_val_loss(group.get("val_loss")), device)
        new_flat, new_state = self.arch.step(
            self._theta_on(device), flat, grads.unsqueeze(0), state, t, segments, losses
        )
        if lr != 1.0:  # skipped at 1.0: the default stays bit-identical to the arch
            new_flat = flat + lr * (new_flat - flat)
        if decay != 0.0:  # decoupled: from the parameters before this step, as AdamW
            new_flat = new_flat - (lr * decay) * flat
        _write_back(params, new_flat[0].split(sizes), flat[0].split(sizes))
        self._scatter(params, new_state, group)
        step = time.reshape(()) + 1
        for p in params:
            self.state[p]["step"] = step

    def _theta_on(self, device: torch.device) -> Tensor:
        if device not in self._theta_cache:
            self._theta_cache[device] = self._theta.to(device)
        return self._theta_cache[device]

    def _state_layout(self) -> StateLayout:
        """The arch's state kinds and per-parameter shapes (probed once)."""
        if self._layout is None:
            self._layout = StateLayout(self.arch)
        return self._layout

    def state_dict(self) -> dict[str, Any]:
        """Torch's state dict plus ``"lopt_arch"``: the arch's name, ``θ`` size and format.

        The per-parameter state means nothing to another architecture (or the same one
        with other options), so :meth:`load_state_dict` refuses a mismatch by this record.
        """
        saved = super().state_dict()
        saved[RECORD] = record(self.arch)
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Torch's ``load_state_dict``, after checking the state fits this architecture.

        With the ``"lopt_arch"`` record its name and ``θ`` size must match; without it
        (state dicts of earlier versions) every parameter's state must hold exactly this
        architecture's state tensors in the right shapes. The saved groups' options are
        checked as a new group's are. Nothing changes when refused.

        State dicts without a format number in the record were saved when a group's
        ``weight_decay`` was kept but ignored: one whose groups set a nonzero
        ``weight_decay`` is refused (it would start decaying the resumed run; set it to
        0 in the dict's groups to resume as it ran), and options such a group lacks take
        the values it ran with (``lr`` 1, ``weight_decay`` 0), not this optimizer's
        defaults, so a resumed run continues as it was.

        Raises:
            ConfigError: not an optimizer state dict, another architecture's state,
                parameter groups that do not match this optimizer's, set another
                optimizer's option (a state dict of another class) or a bad value, or
                a nonzero ``weight_decay`` saved when it was ignored.
        """
        check_form(state_dict)
        fill = saved_group_fill(state_dict, self.arch, self.defaults)
        for saved_group in state_dict["param_groups"]:
            if isinstance(saved_group, Mapping):
                self._checks({**fill, **saved_group}, self.defaults)
        ids = saved_ids(state_dict["param_groups"], self.param_groups)
        layout = self._state_layout()
        state = {}
        for key, value in state_dict["state"].items():
            param = ids.get(key)
            state[key] = value if param is None else layout.check_saved(param, value)
        torch_dict = {k: v for k, v in state_dict.items() if k != RECORD}
        super().load_state_dict({**torch_dict, "state": state})
        for key, param in ids.items():  # torch cast the state to the parameter's dtype
            for name, value in state.get(key, {}).items():
                if name.startswith(PREFIX):
                    self.state[param][name] = value.to(param.device, _DTYPE)
        for group in self.param_groups:  # options added since the state dict was saved
            for key, value in fill.items():
                group.setdefault(key, value)

    def _init_missing(self, params: list[Tensor], group: dict[str, Any]) -> None:
        """Fresh arch state for parameters stepped for the first time (globals are shared)."""
        missing = [p for p in params if "step" not in self.state[p]]
        if not missing:
            return
        device = missing[0].device
        flat = torch.cat([p.detach().reshape(-1).to(_DTYPE) for p in missing]).unsqueeze(0)
        segments = self._state_layout().segments(missing)
        fresh = self.arch.init_state(flat, segments)
        old = [p for p in group["params"] if "step" in self.state.get(p, {}) and p.device == device]
        kinds = self._state_layout().kinds
        for key in [k for k in fresh if kinds[k] == "global" and old]:
            fresh[key] = self.state[old[0]][PREFIX + key]
        self._scatter(missing, fresh, None)
        zero = torch.tensor(0.0, dtype=_DTYPE)
        for p in missing:
            self.state[p]["step"] = zero.clone()

    def _scatter(
        self, params: list[Tensor], state: Mapping[str, Tensor], group: dict[str, Any] | None
    ) -> None:
        """Store every parameter's slice of each state tensor (globals in every one)."""
        layout = self._state_layout()
        for key, value in state.items():
            for p, piece in zip(params, layout.split(key, value, params), strict=True):
                self.state[p][PREFIX + key] = piece
            if group is not None and layout.kinds[key] == "global":
                for p in group["params"]:  # skipped parameters keep the current globals too
                    if "step" in self.state.get(p, {}) and p.device == value.device:
                        self.state[p][PREFIX + key] = value


def _group_time(group: dict[str, Any], state: Mapping[Tensor, Any]) -> Tensor:
    """The group's training time: the largest step count of its parameters, on any device."""
    steps = [state[p]["step"].cpu() for p in group["params"] if "step" in state.get(p, {})]
    return torch.stack(steps).max() if steps else torch.tensor(0.0, dtype=_DTYPE)


def _write_back(params: list[Tensor], new: tuple[Tensor, ...], old: tuple[Tensor, ...]) -> None:
    """Copy float32 results into float32 parameters; add the update to other dtypes."""
    same = [(p, n) for p, n in zip(params, new, strict=True) if p.dtype == _DTYPE]
    if same:
        torch._foreach_copy_([p for p, _ in same], [n.view_as(p) for p, n in same])
    for p, n, o in zip(params, new, old, strict=True):
        if p.dtype != _DTYPE:
            p.add_((n - o).view_as(p).to(p.dtype))


def _loss_features(
    train: Tensor | float | None, val: float | None, device: torch.device
) -> LossFeatures | None:
    """One-particle loss features, or ``None`` when no training loss is known."""
    if train is None:
        return None
    train_t = torch.as_tensor(train).detach().reshape(1).to(device, _DTYPE)
    val_t = None if val is None else torch.tensor([val], dtype=_DTYPE, device=device)
    return LossFeatures(train_t, val_t)
