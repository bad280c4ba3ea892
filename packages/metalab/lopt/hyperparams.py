"""Tuning many hyperparameters of an MLP (Vicol et al. 2021, Sec. 5.4).

PES vs truncated ES vs random search at equal compute.

:class:`ManyHyperparamsSystem` trains a ReLU MLP on digits with SGD-momentum whose
learning rate, momentum and weight decay are separate for every weight tensor and whose
initialization is scaled per layer: ``6·(layers) + layers`` meta-parameters (21 for the
64→32→32→10 MLP). The per-layer init scales act at each episode's first step.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, nonempty, positive
from metalab.core.errors import ConfigError
from metalab.lopt.experiments_toy import _estimator, _train_method, parse_method, single_thread
from metalab.lopt.systems import State, UnrolledSystem
from metalab.lopt.tasks import DigitsMLP
from metalab.lopt.training import full_meta_loss

__all__ = ["ManyHyperparamsParams", "ManyHyperparamsSystem", "many_hyperparams", "random_box"]


class ManyHyperparamsSystem(UnrolledSystem):
    """SGD-momentum on a digits MLP with per-tensor lr / momentum / weight decay, per-layer init.

    ``θ = [log lr (S), logit momentum (S), log weight decay (S), log init scale (layers)]``
    with ``S = 2·layers`` tensors; ``L_t`` is the minibatch training loss before step t.
    """

    def __init__(
        self,
        *,
        horizon: int = 200,
        sizes: tuple[int, ...] = (64, 32, 32, 10),
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        self.device = torch.device(device)
        self.horizon = self.length = horizon
        self.task = DigitsMLP(sizes, batch_size=batch_size, device=self.device)
        self.tensors = len(self.task.shapes)
        self.layers = self.tensors // 2
        self.layer_index = torch.div(self.task.segments.index, 2, rounding_mode="floor")

    @property
    def theta_dim(self) -> int:
        """``3·tensors + layers`` hyperparameters."""
        return 3 * self.tensors + self.layers

    def initial_theta(self) -> Tensor:
        """Learning rate 0.01, momentum 0.5, weight decay 1e-4, init scale 1 everywhere."""
        s = self.tensors
        return torch.cat(
            [
                torch.full((s,), math.log(0.01)),
                torch.zeros(s),
                torch.full((s,), math.log(1e-4)),
                torch.zeros(self.layers),
            ]
        ).to(self.device)

    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """Unscaled He-initialized MLPs (scaled by θ at the first step) and zero velocities."""
        params = self.task.init_params(num, generator=generator)
        return {"params": params, "velocity": torch.zeros_like(params)}

    def sample_data(self, num: int, steps: int, *, generator: torch.Generator) -> State | None:
        """Minibatch indices ``[steps, num, batch]``."""
        return {"index": self.task.sample_batches(num, steps, generator=generator)}

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """Scale the init at t = 0, then one SGD-momentum step with per-tensor hyperparameters."""
        assert data is not None
        s, index = self.tensors, self.task.segments.index
        lr = torch.exp(theta[:, :s])[:, index]
        momentum = torch.sigmoid(theta[:, s : 2 * s])[:, index]
        decay = torch.exp(theta[:, 2 * s : 3 * s])[:, index]
        scale = torch.exp(theta[:, 3 * s :])[:, self.layer_index]
        first = (t == 0).unsqueeze(1)
        params = torch.where(first, state["params"] * scale, state["params"])
        x, y = self.task.x[data["index"]], self.task.y[data["index"]]
        loss, grads = self.task.loss_and_grad(params, x, y)
        velocity = momentum * state["velocity"] + grads + decay * params
        return {"params": params - lr * velocity, "velocity": velocity}, loss


def random_box(dim_tensors: int, layers: int, count: int, *, generator: torch.Generator) -> Tensor:
    """``count`` random configurations of the search box.

    Log-uniform lr ∈ [1e-3, 1], momentum logit ∈ [−3, 3], log-uniform weight decay
    ∈ [1e-6, 1e-1], log-uniform init scale ∈ [0.3, 3].
    """
    low = [math.log(1e-3)] * dim_tensors + [-3.0] * dim_tensors
    low += [math.log(1e-6)] * dim_tensors + [math.log(0.3)] * layers
    high = [0.0] * dim_tensors + [3.0] * dim_tensors
    high += [math.log(1e-1)] * dim_tensors + [math.log(3.0)] * layers
    lo, hi = torch.tensor(low), torch.tensor(high)
    return lo + (hi - lo) * torch.rand(count, len(low), generator=generator)


@dataclass
class ManyHyperparamsParams:
    """Equal compute: random search gets as many inner steps as each ES method."""

    horizon: int = at_least(1, 200)
    sizes: list[int] = nonempty(lambda: [64, 32, 32, 10], ge=1)
    pairs: int = at_least(1, 16)
    sigma: float = positive(0.1)
    truncation: int = at_least(1, 10)
    outer_steps: int = at_least(1, 500)
    outer_lr: float = positive(3e-2)
    methods: list[str] = nonempty(lambda: ["pes:10", "truncated-es:10"])
    eval_episodes: int = at_least(1, 8)
    loss_clip: float = positive(10.0)
    repeats: int = at_least(1, 1)


@runner_params(ManyHyperparamsParams)
def many_hyperparams(config: RunConfig, run: Run) -> dict[str, float]:
    """PES, truncated ES and random search on ≥ 20 hyperparameters; report meta-losses.

    With ``repeats > 1`` every method is re-run with independent noise/data streams (repeat 0
    uses the streams of a single run) and each ``*.meta_loss`` is the mean over repeats, all
    measured on the same evaluation episodes; ``pes_best_fraction`` counts the repeats in
    which PES beat every other method.
    """
    p = config.typed(ManyHyperparamsParams)
    if p.repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {p.repeats}")
    system = ManyHyperparamsSystem(
        horizon=p.horizon, sizes=tuple(p.sizes), device=config.torch_device
    )
    evaluate = functools.partial(_clipped_meta_loss, config, system, p.loss_clip)
    metrics: dict[str, float] = {"hyperparameters": float(system.theta_dim)}
    metrics["start"] = run.stage(
        "start", lambda: float(evaluate(system.initial_theta(), p.eval_episodes))
    )
    labels = [parse_method(m)[2] for m in p.methods] + ["random_search"]
    runs = torch.tensor(
        [_one_repeat(config, run, p, system, evaluate, rep) for rep in range(p.repeats)],
        dtype=torch.float64,
    )  # [repeats, methods]
    means = runs.mean(dim=0)
    for i, label in enumerate(labels):
        metrics[f"{label}.meta_loss"] = float(means[i])
        if p.repeats > 1:
            metrics[f"{label}.meta_loss_se"] = float(runs[:, i].std() / p.repeats**0.5)
    metrics["random_search.configurations"] = float(
        max(1, p.outer_steps * 2 * p.pairs * p.truncation // p.horizon)
    )
    metrics["pes_minus_best_other"] = float(means[0] - means[1:].min())
    metrics["pes_best_fraction"] = float(
        (runs[:, 0] < runs[:, 1:].min(dim=1).values).to(runs.dtype).mean()
    )
    return metrics


def _one_repeat(
    config: RunConfig,
    run: Run,
    p: ManyHyperparamsParams,
    system: ManyHyperparamsSystem,
    evaluate: Any,
    rep: int,
) -> list[float]:
    """Meta-losses of every ES method and of random search for one repeat (memoized stages)."""
    suffix = "" if rep == 0 else f"/rep{rep}"
    losses = []
    for method in p.methods:
        name, k, label = parse_method(method)

        def train(name: str = name, k: int = k, label: str = label) -> dict[str, Any]:
            estimator = _estimator(
                name, k, pairs=p.pairs, sigma=p.sigma, nan_loss=p.loss_clip, loss_clip=p.loss_clip
            )
            result = _train_method(
                config,
                system,
                estimator,
                steps=p.outer_steps,
                optimizer=lambda params: torch.optim.Adam(params, lr=p.outer_lr),
                stream=label + suffix,
            )
            return {
                "meta": float(evaluate(result.theta, p.eval_episodes)),
                "steps": result.inner_steps,
            }

        losses.append(run.stage(label + suffix, train)["meta"])
    budget = p.outer_steps * 2 * p.pairs * p.truncation
    search = functools.partial(_random_search, config, p, system, evaluate, budget, suffix)
    losses.append(run.stage("random-search" + suffix, search)["meta"])
    return losses


def _clipped_meta_loss(
    config: RunConfig,
    system: ManyHyperparamsSystem,
    clip: float,
    thetas: Tensor,
    episodes: int,
    purpose: str = "eval",
) -> Tensor:
    """Mean loss per step of full episodes (NaN or above ``clip`` counts as ``clip``)."""
    with single_thread():
        total = full_meta_loss(
            system, thetas, generator=config.generator(purpose), episodes=episodes
        )
    return torch.nan_to_num(total / system.length, nan=clip).clamp(max=clip)


def _random_search(
    config: RunConfig,
    p: ManyHyperparamsParams,
    system: ManyHyperparamsSystem,
    evaluate: Any,
    budget: int,
    suffix: str = "",
) -> dict[str, Any]:
    """Random search with ``budget`` inner steps: one episode per configuration."""
    count = max(1, budget // p.horizon)
    candidates = random_box(
        system.tensors, system.layers, count, generator=config.generator("random-search" + suffix)
    )
    scores = evaluate(candidates.to(system.device), 1, purpose="random-search-data" + suffix)
    best = candidates[int(scores.argmin())]
    return {"meta": float(evaluate(best.to(system.device), p.eval_episodes)), "count": count}
