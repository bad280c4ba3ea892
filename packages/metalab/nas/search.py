"""DARTS: bilevel search of a supernet's weights (train split) and α (validation split).

Liu et al. 2019, Eq. 3–4: ``min_α L_val(w*(α), α)`` s.t. ``w*(α) = argmin_w L_train(w, α)``.
First order alternates one SGD step on ``w`` (train batch) with one Adam step on ``α``
(validation batch, gradient at the current ``w``); second order takes the α gradient at
the virtual step ``w' = w − ξ∇_w L_train(w, α)`` (Eq. 6–8), with the Hessian-vector
product by central finite differences (ε = 0.01 / ‖∇_{w'} L_val‖). The fixed-α variant of
DARTS-PT (Wang et al. 2021, Sec. 4.3) keeps α ≡ 0 (uniform mixing) and trains only ``w``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from metalab.core.config import at_least, fraction, non_negative, positive
from metalab.core.errors import ConfigError
from metalab.nas.data import DigitsSplits, seeded_init
from metalab.nas.network import Supernet
from metalab.nas.space import make_space

__all__ = ["DartsSearch", "SearchConfig", "darts_epoch", "supernet_accuracy"]

Batch = tuple[Tensor, Tensor]
_FD_SCALE = 0.01  # DARTS: ε = 0.01 / ‖∇_{w'} L_val‖


@dataclass(frozen=True)
class SearchConfig:
    """DARTS search hyperparameters (DARTS's CIFAR values, except ``alpha_lr``, see below).

    On digits an epoch is 16 steps (vs 391 on CIFAR-10), so α gets 25× fewer updates per
    epoch; ``alpha_lr`` defaults to 10× DARTS's 3e-4 to keep the search at tens of epochs.

    The field bounds are checked when an experiment's ``[params.search]`` table is built
    (:func:`metalab.core.config.build_config`); code that constructs a config directly is
    checked by :class:`DartsSearch`, which also accepts ``epochs = 0`` (select from the
    untrained supernet).
    """

    space: str = "skip-conv3"
    channels: int = at_least(1, 8)
    n_cells: int = at_least(1, 2)
    epochs: int = at_least(1, 50)
    batch_size: int = at_least(1, 64)
    w_lr: float = positive(0.025)
    w_lr_min: float = non_negative(0.001)
    w_momentum: float = fraction(0.9)
    w_weight_decay: float = non_negative(3e-4)
    grad_clip: float = positive(5.0)
    alpha_lr: float = positive(3e-3)
    alpha_weight_decay: float = non_negative(1e-3)
    order: Literal["first", "second"] = "first"
    fixed_alpha: bool = False


def _check(config: SearchConfig) -> None:
    if config.epochs < 0 or config.batch_size < 1 or config.w_lr <= 0 or config.alpha_lr <= 0:
        got = (
            f"epochs {config.epochs}, batch_size {config.batch_size}, "
            f"w_lr {config.w_lr}, alpha_lr {config.alpha_lr}"
        )
        raise ConfigError(
            f"need epochs >= 0, batch_size >= 1 and positive learning rates; got {got}"
        )
    if config.fixed_alpha and config.order == "second":
        raise ConfigError("fixed_alpha trains no α; order='second' does not apply")


def _second_order_alpha_grad(
    model: Supernet, train: Batch, val: Batch, *, xi: float, weight_decay: float
) -> Tensor:
    """∇_α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α)  (DARTS Eq. 7–8)."""
    names = [name for name, _ in model.named_parameters() if name != "alpha"]
    weights = [p for name, p in model.named_parameters() if name != "alpha"]
    grads = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), weights)
    virtual = {
        n: (w - xi * (g + weight_decay * w)).detach().requires_grad_()
        for n, w, g in zip(names, weights, grads, strict=True)
    }
    val_loss = F.cross_entropy(
        functional_call(model, {**virtual, "alpha": model.alpha}, (val[0],)), val[1]
    )
    g_alpha, *g_virtual = torch.autograd.grad(val_loss, [model.alpha, *virtual.values()])
    eps = _FD_SCALE / torch.cat([g.flatten() for g in g_virtual]).norm().clamp_min(1e-12)

    def alpha_grad(sign: float) -> Tensor:
        shifted = {
            n: (w + sign * eps * g).detach()
            for n, w, g in zip(names, weights, g_virtual, strict=True)
        }
        out = functional_call(model, {**shifted, "alpha": model.alpha}, (train[0],))
        return torch.autograd.grad(F.cross_entropy(out, train[1]), model.alpha)[0]

    return g_alpha - xi * (alpha_grad(1.0) - alpha_grad(-1.0)) / (2 * eps)


def darts_epoch(
    model: Supernet,
    data: DigitsSplits,
    *,
    w_optimizer: torch.optim.Optimizer,
    a_optimizer: torch.optim.Optimizer | None,
    batch_size: int,
    generator: torch.Generator,
    order: Literal["first", "second"] = "first",
    grad_clip: float = 5.0,
    w_weight_decay: float = 3e-4,
) -> float:
    """One epoch of alternating α (validation batch) and w (train batch) steps.

    ``a_optimizer=None`` trains only the weights (fixed α). Returns the mean train loss.
    """
    model.train()
    (xt, yt), (xv, yv) = data.train, data.val
    device = xt.device
    order_t = torch.randperm(len(xt), generator=generator).to(device)
    order_v = torch.randperm(len(xv), generator=generator).to(device)
    total, steps = 0.0, 0
    for step, start in enumerate(range(0, len(xt), batch_size)):
        it = order_t[start : start + batch_size]
        if a_optimizer is not None:
            vs = (step * batch_size) % len(xv)
            iv = order_v[vs : vs + batch_size]
            a_optimizer.zero_grad(set_to_none=True)
            if order == "second":
                xi = float(w_optimizer.param_groups[0]["lr"])
                model.alpha.grad = _second_order_alpha_grad(
                    model, (xt[it], yt[it]), (xv[iv], yv[iv]), xi=xi, weight_decay=w_weight_decay
                )
            else:
                F.cross_entropy(model(xv[iv]), yv[iv]).backward(inputs=[model.alpha])
            a_optimizer.step()
        w_optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xt[it]), yt[it])
        loss.backward(inputs=model.weight_parameters())
        torch.nn.utils.clip_grad_norm_(model.weight_parameters(), grad_clip)
        w_optimizer.step()
        total, steps = total + float(loss.detach()), steps + 1
    return total / max(steps, 1)


@torch.no_grad()
def supernet_accuracy(
    model: Supernet,
    data: tuple[Tensor, Tensor],
    *,
    weights: Tensor | None = None,
    batch_size: int = 64,
) -> tuple[float, float]:
    """(accuracy, mean loss) of the supernet over a whole split, batch norm in train mode."""
    model.train()
    x, y = data
    correct, loss = 0, 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size], weights)
        correct += int((logits.argmax(-1) == y[start : start + batch_size]).sum())
        loss += float(F.cross_entropy(logits, y[start : start + batch_size], reduction="sum"))
    return correct / len(x), loss / len(x)


class DartsSearch:
    """A supernet with its optimizers and schedule; :meth:`train_epoch` advances it."""

    def __init__(
        self,
        config: SearchConfig,
        *,
        data: DigitsSplits,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
    ) -> None:
        _check(config)
        self.config = config
        self.space = make_space(config.space)
        self.data = data
        self.generator = generator
        with seeded_init(generator):
            self.model = Supernet(
                self.space,
                channels=config.channels,
                n_cells=config.n_cells,
                num_classes=data.num_classes,
                generator=generator,
            ).to(device)
        if config.fixed_alpha:
            self.model.alpha.data.zero_()
        self.w_optimizer = torch.optim.SGD(
            self.model.weight_parameters(),
            lr=config.w_lr,
            momentum=config.w_momentum,
            weight_decay=config.w_weight_decay,
        )
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_optimizer, T_max=max(config.epochs, 1), eta_min=config.w_lr_min
        )
        self.a_optimizer = None if config.fixed_alpha else self.alpha_optimizer()
        self.epoch = 0

    def alpha_optimizer(self) -> torch.optim.Optimizer:
        """Adam on α with DARTS's betas (0.5, 0.999) and weight decay."""
        return torch.optim.Adam(
            self.model.arch_parameters(),
            lr=self.config.alpha_lr,
            betas=(0.5, 0.999),
            weight_decay=self.config.alpha_weight_decay,
        )

    def train_epoch(self) -> float:
        """One DARTS epoch (cosine-annealed weight learning rate); returns the train loss."""
        loss = darts_epoch(
            self.model,
            self.data,
            w_optimizer=self.w_optimizer,
            a_optimizer=self.a_optimizer,
            batch_size=self.config.batch_size,
            generator=self.generator,
            order=self.config.order,
            grad_clip=self.config.grad_clip,
            w_weight_decay=self.config.w_weight_decay,
        )
        self.schedule.step()
        self.epoch += 1
        return loss

    def alphas(self) -> Tensor:
        """softmax(α) per edge, ``[E, O]`` (detached, on CPU)."""
        return torch.softmax(self.model.alpha.detach(), dim=-1).cpu()

    def val_accuracy(self) -> float:
        """The supernet's validation accuracy (batch norm in train mode)."""
        return supernet_accuracy(self.model, self.data.val, batch_size=self.config.batch_size)[0]
