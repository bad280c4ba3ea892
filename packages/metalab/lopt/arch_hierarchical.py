"""The hierarchical learned optimizer of Metz et al. 2020 (arXiv 2009.11243, Sec. 3).

Two levels, batched over particles ``P``:

* a **per-tensor LSTM** (one cell per parameter tensor, shared weights) reads tensor-level
  statistics — the log RMS of the parameter, gradient and 6 momenta over the tensor, the
  log tensor size — plus **loss features** (training loss relative to its first and its
  running value, validation loss relative to the training loss and to its first value,
  availability flags) and 11 time features, and emits a per-tensor context;
* the **per-parameter MLP** of Metz et al. 2019 (19 features → H → H → 2, see
  :mod:`metalab.lopt.mlp_lopt`) gets that context as ``C`` extra first-layer inputs and a
  per-tensor log step-scale: ``p ← p − d · exp(0.001 m) · 0.001 · exp(s_tensor)``.

Feeding the validation loss lets the optimizer regularize (Metz 2020, Sec. 4.3); the
meta-training system feeds the real validation loss through
:class:`~metalab.lopt.interfaces.LossFeatures`. When ``losses.val`` is ``None`` (e.g. a
user's training loop without validation) the validation features are 0 and the "val
available" flag is 0; when ``losses`` is ``None`` the training-loss features are 0 too
(an input meta-training never shows, so ``LearnedOptimizer`` refuses a step without a
loss for this arch: :attr:`HierarchicalArch.uses_training_loss`).

Non-finite losses never reach the LSTM, without reading them back (no device sync): a
particle's NaN/inf training loss is replaced by its running loss, so that step sees the
previous loss statistics and leaves them unchanged (before any finite loss: the features
of a first step); a NaN/inf validation loss counts as "no validation loss" for that step.

All per-tensor reductions are segment ops (``index_add`` / ``index_select``): no Python
loop over tensors, parameters or particles. The context head starts small
(``context_scale``), so a fresh hierarchical optimizer behaves like a fresh MLP
optimizer, and :meth:`HierarchicalArch.theta_from_mlp` embeds an MLP θ exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from metalab.lopt.interfaces import (
    LossFeatures,
    OptimizerArch,
    check_arch_scales,
    check_arch_sizes,
)
from metalab.lopt.mlp_lopt import (
    BETAS,
    TIMESCALES,
    FlatLayout,
    MLPLOptShapes,
    Segments,
    init_mlp_lopt,
)
from metalab.lopt.systems import State

__all__ = ["NUM_LOSS_FEATURES", "NUM_TENSOR_FEATURES", "HierarchicalArch", "HierarchicalShapes"]

NUM_PARAM_FEATURES = 2 + len(BETAS)  # parameter, gradient, 6 momenta
NUM_LOSS_FEATURES = 6
NUM_TENSOR_FEATURES = NUM_PARAM_FEATURES + 1 + NUM_LOSS_FEATURES + len(TIMESCALES)
_EPS = 1e-8
_LOSS_CLIP = 10.0
_EMA = 0.9


@dataclass(frozen=True)
class HierarchicalShapes(FlatLayout):
    """Layout of ``θ``: the per-parameter MLP's weights first, then the per-tensor part.

    Attributes:
        hidden: width ``H`` of the per-parameter MLP.
        lstm: units ``L`` of the per-tensor LSTM.
        context: number ``C`` of per-tensor context inputs to the MLP's first layer.
    """

    hidden: int = 32
    lstm: int = 32
    context: int = 8

    @property
    def mlp(self) -> MLPLOptShapes:
        """The per-parameter MLP block (same layout as :class:`MLPLOptShapes`)."""
        return MLPLOptShapes(self.hidden)

    @property
    def parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of each weight, in their order within ``θ``."""
        h, lstm, c = self.hidden, self.lstm, self.context
        return [
            *self.mlp.parts,
            ("w1c", (c, h)),
            ("lstm_wi", (NUM_TENSOR_FEATURES, 4 * lstm)),
            ("lstm_wh", (lstm, 4 * lstm)),
            ("lstm_b", (4 * lstm,)),
            ("head_w", (lstm, c + 1)),
            ("head_b", (c + 1,)),
        ]


class HierarchicalArch(OptimizerArch):
    """Per-tensor LSTM conditioning a per-parameter MLP (Metz et al. 2020, Sec. 3).

    Args:
        hidden: width of the per-parameter MLP's two hidden layers (32 as in Metz 2019).
        lstm: units of the per-tensor LSTM (Metz 2020 uses ≈64; 32 keeps CPU runs cheap).
        context: number of per-tensor context inputs to the MLP's first layer.
        init_scale: output-layer scale of the random initial per-parameter MLP.
        context_scale: scale of the initial context head (small: starts like the MLP).
    """

    name = "hierarchical"
    uses_training_loss = True
    state_grad_powers = MappingProxyType({"moments": 1})

    def __init__(
        self,
        hidden: int = 32,
        lstm: int = 32,
        context: int = 8,
        init_scale: float = 1.0,
        context_scale: float = 0.1,
    ) -> None:
        check_arch_sizes("hierarchical", hidden=hidden, lstm=lstm, context=context)
        check_arch_scales("hierarchical", init_scale=init_scale, context_scale=context_scale)
        self.shapes = HierarchicalShapes(hidden, lstm, context)
        self.init_scale = init_scale
        self.context_scale = context_scale

    @property
    def theta_dim(self) -> int:
        """Size of ``θ`` (9 867 with the defaults)."""
        return self.shapes.size

    def init_theta(self, *, generator: torch.Generator) -> Tensor:
        """Random MLP as :func:`init_mlp_lopt`; LeCun LSTM, forget bias 1, small head."""
        mlp = init_mlp_lopt(self.shapes.mlp, generator=generator, scale=self.init_scale)
        pieces = [mlp]
        for name, shape in self.shapes.parts[len(self.shapes.mlp.parts) :]:
            n = math.prod(shape)
            if name == "lstm_b":
                bias = torch.zeros(4, self.shapes.lstm)
                bias[1] = 1.0  # forget gate: remember by default
                pieces.append(bias.reshape(-1))
            elif name == "head_b":
                pieces.append(torch.zeros(n))
            else:
                scale = self.context_scale if name == "head_w" else 1.0
                std = scale / math.sqrt(shape[0])
                pieces.append(torch.randn(n, generator=generator) * std)
        return torch.cat(pieces)

    def theta_from_mlp(self, mlp_theta: Tensor) -> Tensor:
        """A θ ``[D]`` whose MLP block is ``mlp_theta`` and whose context is exactly 0.

        The resulting optimizer makes exactly the MLP optimizer's updates (up to float
        rounding): a warm start for meta-training or a reference for tests.
        """
        extra = self.theta_dim - self.shapes.mlp.size
        return torch.cat([mlp_theta.reshape(-1), mlp_theta.new_zeros(extra)])

    def init_state(self, params: Tensor, segments: Segments) -> State:
        """Zero momenta ``[P, N, 6]``, LSTM state ``[P, S, L]``, loss references ``[P]``."""
        num, num_tensors = params.shape[0], int(segments.sizes.numel())
        per_tensor = params.new_zeros(num, num_tensors, self.shapes.lstm)
        per_particle = params.new_zeros(num)
        return {
            "moments": params.new_zeros(*params.shape, len(BETAS)),
            "lstm_h": per_tensor,
            "lstm_c": per_tensor.clone(),
            "train_init": per_particle,
            "train_ema": per_particle.clone(),
            "val_init": per_particle.clone(),
            "train_seen": per_particle.clone(),
            "val_seen": per_particle.clone(),
        }

    def step(
        self,
        theta: Tensor,
        params: Tensor,
        grads: Tensor,
        state: State,
        t: Tensor,
        segments: Segments,
        losses: LossFeatures | None = None,
    ) -> tuple[Tensor, State]:
        """One hierarchical update for every particle (Metz 2020, Sec. 3).

        Args:
            theta: ``[P, D]`` optimizer weights.
            params: ``[P, N]`` flat parameters.
            grads: ``[P, N]`` gradients.
            state: from :meth:`init_state` or the previous step.
            t: ``[P]`` inner step index.
            segments: tensor layout of the flat vectors.
            losses: training loss ``[P]`` and (optionally) the latest validation loss.

        Returns:
            ``(new_params, new_state)``.
        """
        w = self.shapes.unflatten(theta.to(params.dtype))
        betas = torch.tensor(BETAS, dtype=params.dtype, device=params.device)
        moments = betas * state["moments"] + (1.0 - betas) * grads.unsqueeze(-1)
        feats = torch.cat([params.unsqueeze(-1), grads.unsqueeze(-1), moments], dim=-1)
        mean_sq = _segment_mean(feats.square(), segments)  # [P, S, 8]
        normed = feats * torch.rsqrt(mean_sq + 1e-12).index_select(1, segments.index)
        loss_feats, loss_state = _loss_features(losses, state, params)
        times = _time_features(t, params.dtype)
        tensor_in = _tensor_inputs(mean_sq, segments, loss_feats, times)
        h, c = _lstm_cell(tensor_in, state["lstm_h"], state["lstm_c"], w)
        head = torch.baddbmm(w["head_b"].unsqueeze(1), h, w["head_w"])  # [P, S, C+1]
        context, log_scale = head[..., :-1], head[..., -1]
        # first-layer bias per tensor: b1 + time features + context (Metz 2020's conditioning)
        time_bias = torch.baddbmm(
            w["b1"].unsqueeze(1), times.unsqueeze(1), w["w1"][:, NUM_PARAM_FEATURES:]
        )  # [P, 1, H]
        tensor_bias = torch.baddbmm(time_bias, context, w["w1c"])  # [P, S, H]
        hidden = torch.bmm(normed, w["w1"][:, :NUM_PARAM_FEATURES])
        hidden = hidden.add_(tensor_bias.index_select(1, segments.index)).relu_()
        hidden = torch.bmm(hidden, w["w2"]).add_(w["b2"].unsqueeze(1)).relu_()
        out = torch.baddbmm(w["b3"].unsqueeze(1), hidden, w["w3"])  # [P, N, 2]
        scale = torch.exp(log_scale).index_select(1, segments.index)  # [P, N]
        step = out[..., 0] * torch.exp(0.001 * out[..., 1]) * 0.001 * scale
        new_state = {"moments": moments, "lstm_h": h, "lstm_c": c, **loss_state}
        return params - step, new_state


def _segment_mean(values: Tensor, segments: Segments) -> Tensor:
    """Mean of ``values`` ``[P, N, F]`` over each tensor's entries: ``[P, S, F]``."""
    num_tensors = int(segments.sizes.numel())
    sums = values.new_zeros(values.shape[0], num_tensors, values.shape[-1])
    sums = sums.index_add(1, segments.index, values)
    return sums / segments.sizes.to(values.dtype).unsqueeze(-1)


def _time_features(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``tanh(t/τ − 1)`` for the 11 timescales of Metz 2019: ``[P] -> [P, 11]``."""
    scales = torch.tensor(TIMESCALES, dtype=dtype, device=t.device)
    return torch.tanh(t.to(dtype).unsqueeze(-1) / scales - 1.0)


def _log_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``log(|num| / |den|)`` clipped to ±10: a scale-free comparison of two losses."""
    ratio = (num.abs() + _EPS).log() - (den.abs() + _EPS).log()
    return ratio.clamp(-_LOSS_CLIP, _LOSS_CLIP)


def _loss_features(
    losses: LossFeatures | None, state: State, params: Tensor
) -> tuple[Tensor, State]:
    """Loss features ``[P, 6]`` and the updated loss references (Metz 2020, Sec. 3).

    Features: log(train / first train), log(train / running train), log(val / train),
    log(val / first val), val available, train available. Missing losses give zeros and
    leave their references untouched; non-finite ones are masked per particle with
    ``torch.where`` (see the module docstring), so NaN/inf never enters the LSTM.
    """
    keys = ("train_init", "train_ema", "val_init", "train_seen", "val_seen")
    ref = {k: state[k] for k in keys}
    zeros, ones = params.new_zeros(params.shape[0]), params.new_ones(params.shape[0])
    if losses is None:
        return torch.stack([zeros] * NUM_LOSS_FEATURES, dim=-1), ref
    seen = ref["train_seen"] > 0
    raw = losses.train.to(params.dtype).reshape(-1).expand_as(zeros)
    finite = torch.isfinite(raw)
    # stand-in for a non-finite loss: the running loss (f_ema = 0, references kept)
    train = torch.where(finite, raw, torch.where(seen, ref["train_ema"], ones))
    train_init = torch.where(seen, ref["train_init"], train)
    train_ema = torch.where(seen, ref["train_ema"], train)
    ref.update(
        train_init=train_init,
        train_ema=_EMA * train_ema + (1.0 - _EMA) * train,
        train_seen=(seen | finite).to(zeros.dtype),
    )
    f_init, f_ema = _log_ratio(train, train_init), _log_ratio(train, train_ema)
    if losses.val is None:
        feats = [f_init, f_ema, zeros, zeros, zeros, ones]
        return torch.stack(feats, dim=-1), ref
    raw_val = losses.val.to(params.dtype).reshape(-1).expand_as(zeros)
    has_val = torch.isfinite(raw_val)
    val = torch.where(has_val, raw_val, ones)
    val_seen = ref["val_seen"] > 0
    val_init = torch.where(val_seen, ref["val_init"], val)
    ref.update(
        val_init=torch.where(has_val, val_init, ref["val_init"]),
        val_seen=(val_seen | has_val).to(zeros.dtype),
    )
    gap = torch.where(has_val & (seen | finite), _log_ratio(val, train), zeros)
    f_val = torch.where(has_val, _log_ratio(val, val_init), zeros)
    feats = [f_init, f_ema, gap, f_val, has_val.to(zeros.dtype), ones]
    return torch.stack(feats, dim=-1), ref


def _tensor_inputs(mean_sq: Tensor, segments: Segments, loss: Tensor, times: Tensor) -> Tensor:
    """LSTM inputs ``[P, S, F]``: log RMS stats, log size, loss and time features."""
    num, num_tensors = mean_sq.shape[0], mean_sq.shape[1]
    log_rms = 0.05 * (mean_sq + 1e-30).log()  # 0.1 · log RMS: O(1) for RMS in [1e-10, 1e3]
    log_size = 0.1 * segments.sizes.to(mean_sq.dtype).log()
    log_size = log_size.expand(num, num_tensors).unsqueeze(-1)
    per_particle = torch.cat([loss, times], dim=-1).unsqueeze(1).expand(num, num_tensors, -1)
    return torch.cat([log_rms, log_size, per_particle], dim=-1)


def _lstm_cell(x: Tensor, h: Tensor, c: Tensor, w: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """One LSTM step for every (particle, tensor) pair: ``[P, S, F] -> [P, S, L]``."""
    gates = torch.baddbmm(w["lstm_b"].unsqueeze(1), x, w["lstm_wi"])
    gates = torch.baddbmm(gates, h, w["lstm_wh"])
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c
