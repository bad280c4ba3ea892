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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, non_negative, nonempty, positive
from metalab.core.errors import ConfigError
from metalab.core.parallel import StageJob, default_workers, run_stages
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
    workers: int = non_negative(0)  # stages side by side, one 1-thread process each (0: per core)


@runner_params(ManyHyperparamsParams)
def many_hyperparams(config: RunConfig, run: Run) -> dict[str, float]:
    """PES, truncated ES and random search on ≥ 20 hyperparameters; report meta-losses.

    With ``repeats > 1`` every method is re-run with independent noise/data streams (repeat 0
    uses the streams of a single run) and each ``*.meta_loss`` is the mean over repeats, all
    measured on the same evaluation episodes; ``pes_best_fraction`` counts the repeats in
    which PES beat every other method. Every method of every repeat is its own stage on
    one thread, so ``workers`` processes run them side by side with the same numbers.
    """
    p = config.typed(ManyHyperparamsParams)
    if p.repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {p.repeats}")
    system = ManyHyperparamsSystem(
        horizon=p.horizon, sizes=tuple(p.sizes), device=config.torch_device
    )
    jobs = [StageJob("start", _start_stage, (config, system, p))]
    for rep in range(p.repeats):
        suffix = "" if rep == 0 else f"/rep{rep}"
        jobs += [
            StageJob(parse_method(m)[2] + suffix, _method_stage, (config, system, p, m, suffix))
            for m in p.methods
        ]
        jobs.append(StageJob("random-search" + suffix, _search_stage, (config, system, p, suffix)))
    workers = p.workers or default_workers(1, config.torch_device)
    stored = run_stages(run, jobs, workers=workers, threads=1)
    metrics: dict[str, float] = {"hyperparameters": float(system.theta_dim), "start": stored[0]}
    labels = [parse_method(m)[2] for m in p.methods] + ["random_search"]
    runs = torch.tensor(
        [
            [out["meta"] for out in stored[1 + rep * len(labels) :][: len(labels)]]
            for rep in range(p.repeats)
        ],
        dtype=torch.float64,
    )  # [repeats, methods]
    means = runs.mean(dim=0)
    for i, label in enumerate(labels):
        metrics[f"{label}.meta_loss"] = float(means[i])
        if p.repeats > 1:
            metrics[f"{label}.meta_loss_se"] = float(runs[:, i].std() / p.repeats**0.5)
    metrics["random_search.configurations"] = float(_search_count(p))
    metrics["pes_minus_best_other"] = float(means[0] - means[1:].min())
    metrics["pes_best_fraction"] = float(
        (runs[:, 0] < runs[:, 1:].min(dim=1).values).to(runs.dtype).mean()
    )
    return metrics


def _start_stage(
    config: RunConfig,
    system: ManyHyperparamsSystem,
    p: ManyHyperparamsParams,
    *,
    log: Callable[..., None],
) -> float:
    """The initial θ's meta-loss (module level, like every stage: a worker may run it)."""
    return float(
        _clipped_meta_loss(config, system, p.loss_clip, system.initial_theta(), p.eval_episodes)
    )


def _method_stage(
    config: RunConfig,
    system: ManyHyperparamsSystem,
    p: ManyHyperparamsParams,
    method: str,
    suffix: str,
    *,
    log: Callable[..., None],
) -> dict[str, Any]:
    """Meta-train one ES method of one repeat; its θ's meta-loss on the evaluation episodes."""
    name, k, label = parse_method(method)
    estimator = _estimator(
        name, k, pairs=p.pairs, sigma=p.sigma, nan_loss=p.loss_clip, loss_clip=p.loss_clip
    )
    result = _train_method(
        config,
        system,
        estimator,
        steps=p.outer_steps,
        optimizer=functools.partial(torch.optim.Adam, lr=p.outer_lr),
        stream=label + suffix,
    )
    meta = _clipped_meta_loss(config, system, p.loss_clip, result.theta, p.eval_episodes)
    return {"meta": float(meta), "steps": result.inner_steps}


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


def _search_stage(
    config: RunConfig,
    system: ManyHyperparamsSystem,
    p: ManyHyperparamsParams,
    suffix: str,
    *,
    log: Callable[..., None],
) -> dict[str, Any]:
    """Random search with the inner steps of one ES method: one episode per configuration."""
    count = _search_count(p)
    candidates = random_box(
        system.tensors, system.layers, count, generator=config.generator("random-search" + suffix)
    ).to(system.device)
    scores = _clipped_meta_loss(
        config, system, p.loss_clip, candidates, 1, purpose="random-search-data" + suffix
    )
    best = candidates[int(scores.argmin())]
    meta = _clipped_meta_loss(config, system, p.loss_clip, best, p.eval_episodes)
    return {"meta": float(meta), "count": count}


def _search_count(p: ManyHyperparamsParams) -> int:
    """Random-search configurations: one episode each in one ES method's inner steps."""
    return max(1, p.outer_steps * 2 * p.pairs * p.truncation // p.horizon)
