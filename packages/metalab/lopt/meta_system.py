"""The meta-training unrolled system: a population trains sampled tasks with an optimizer arch.

Metz et al. 2020 meta-train learned optimizers on many sampled tasks with truncated
ES/PES, with episode lengths (truncation horizons) sampled log-uniformly at every episode
start (as learned_optimization's ``TruncationSchedule`` does). :class:`TaskTrainingSystem`
is that inner loop as an :class:`~metalab.lopt.systems.UnrolledSystem`, so every estimator
of :mod:`metalab.lopt.es` meta-trains any :class:`~metalab.lopt.interfaces.OptimizerArch`
on any :class:`~metalab.lopt.interfaces.TaskFamily`.

Heterogeneity (tasks differ in parameter count): **all particles share the task of the
current episode** and reset together. A fresh episode draws one task seed and one horizon
for the whole population; both live in the particle state (``task_seed``, ``horizon``), so
the state alone says which task it trains — truncated ES's shared state and its windows,
PES's persistent particles and checkpoints stay consistent, and a task change at a reset is
fine for PES because its accumulators live in ``θ``-space. Tasks are rebuilt from their
seed through a small cache. One step is one batched ``loss_and_grad`` and one batched arch
update for all particles (no loop over particles or parameters).

Antithetic pairs (``[+ half, − half]`` particle order) share their minibatches and their
validation minibatches (common random numbers): batches are drawn for half the population
and tiled. Validation loss (``task.validation_loss``) is computed every ``val_every`` steps
at the parameters being updated and passed as ``LossFeatures(train, val)`` — the
hierarchical optimizer really sees it during meta-training (skipped when neither the
objective nor the architecture reads it). ``L_t`` is the minibatch
training loss before the update (clip it through the estimator's ``loss_clip``), or with
``objective="validation"`` that step's validation loss (Metz et al. 2019/2020: a
validation-loss meta-objective counters the overfitting of training-loss meta-training).

``weighting="late"`` multiplies ``L_t`` by ``2(t + 1)/(T + 1)`` (mean 1 over an episode of
``T`` steps): the plain sum of per-step losses rewards fast early progress (a large
learning rate) even when it costs final loss, while a learned optimizer is judged by the
loss it ends training at. PES stays unbiased for the weighted sum: the weights are just part
of each step's loss. ``loss_scale="log"`` uses ``log max(L_t, 10⁻³)``: on a mixed family raw
losses differ by orders of magnitude between tasks (a quadratic at 1, an MLP at 0.05), so
their mean is ruled by the tasks with the largest losses, while a learned optimizer is
judged by its loss *relative* to a tuned baseline on every task (a log ratio).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.interfaces import LossFeatures, OptimizerArch, Task, TaskFamily
from metalab.lopt.systems import State, UnrolledSystem

__all__ = [
    "LOSS_SCALES",
    "OBJECTIVES",
    "WEIGHTINGS",
    "TaskTrainingSystem",
    "evaluate_thetas",
    "sample_log_uniform",
]

OBJECTIVES = ("train", "validation")
WEIGHTINGS = ("uniform", "late")
LOSS_SCALES = ("linear", "log")
_LOG_FLOOR = 1e-3

_SEED_HIGH = 2**62
_OPT_PREFIX = "opt."


def sample_log_uniform(low: int, high: int, *, generator: torch.Generator) -> int:
    """An integer in ``[low, high]`` with ``log T`` uniform (learned_optimization's schedule)."""
    u = float(torch.rand((), generator=generator, device=generator.device))
    value = math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))
    return min(high, max(low, int(value)))


class TaskTrainingSystem(UnrolledSystem):
    """Particles train tasks sampled from ``family`` with ``arch`` at their rows of ``θ``.

    State per particle: flat task parameters ``params [P, N]``, the arch's state (keys
    prefixed ``opt.``), the last validation loss ``val [P]``, and the episode's
    ``task_seed [P]`` and ``horizon [P]`` (equal across the population).

    Args:
        arch: the optimizer architecture being meta-trained.
        family: where tasks come from (``family.sample`` with a generator seeded by the
            episode's task seed).
        min_horizon: shortest episode (inner training length).
        max_horizon: longest episode; also :attr:`horizon` (what full ES unrolls).
        val_every: compute the validation loss every this many inner steps (1 = every step).
        paired: particles are antithetic ``[+ half, − half]``; halves share minibatches.
        theta0: the starting ``θ`` (default: ``arch.init_theta`` with ``seed``).
        seed: seed of the initial ``θ`` when ``theta0`` is not given.
        cache: how many built tasks to keep.
        device: where everything lives.
        objective: ``"train"`` (``L_t`` = minibatch training loss) or ``"validation"``
            (``L_t`` = the validation loss at the same parameters, refreshed every
            ``val_every`` steps).
        weighting: ``"uniform"`` (every step's ``L_t`` counts once) or ``"late"`` (``L_t``
            weighted by ``2(t + 1)/(T + 1)``, emphasizing the end of training).
        loss_scale: ``"linear"`` (``L_t`` as is) or ``"log"`` (``log max(L_t, 10⁻³)``,
            comparable across tasks whose losses differ in scale).
    """

    def __init__(
        self,
        arch: OptimizerArch,
        family: TaskFamily,
        *,
        min_horizon: int = 50,
        max_horizon: int = 500,
        val_every: int = 1,
        paired: bool = True,
        theta0: Tensor | None = None,
        seed: int = 0,
        cache: int = 8,
        device: torch.device | str = "cpu",
        objective: str = "train",
        weighting: str = "uniform",
        loss_scale: str = "linear",
    ) -> None:
        if not 1 <= min_horizon <= max_horizon:
            raise ConfigError(
                f"need 1 <= min_horizon <= max_horizon, got {min_horizon}, {max_horizon}"
            )
        if val_every < 1:
            raise ConfigError(f"val_every must be >= 1, got {val_every}")
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if loss_scale not in LOSS_SCALES:
            raise ConfigError(f"loss_scale must be one of {LOSS_SCALES}, got {loss_scale!r}")
        self.objective, self.weighting, self.loss_scale = objective, weighting, loss_scale
        self.arch, self.family = arch, family
        self.device = torch.device(device)
        self.min_horizon, self.max_horizon = min_horizon, max_horizon
        self.horizon = max_horizon
        self.val_every, self.paired = val_every, paired
        # the validation pass is a second forward per step: skip it when nothing reads it
        self._needs_validation = objective == "validation" or arch.uses_validation_loss
        if theta0 is None:
            theta0 = arch.init_theta(generator=torch.Generator().manual_seed(seed))
        if theta0.shape != (arch.theta_dim,):
            raise ConfigError(f"θ₀ must have shape ({arch.theta_dim},), got {tuple(theta0.shape)}")
        self._theta0 = theta0.detach().clone()
        self._cache: OrderedDict[int, Task] = OrderedDict()
        self._cache_size = max(1, cache)

    @property
    def theta_dim(self) -> int:
        """The arch's weight count ``D``."""
        return self.arch.theta_dim

    def initial_theta(self) -> Tensor:
        """The starting optimizer weights."""
        return self._theta0.to(self.device).clone()

    def task(self, seed: int) -> Task:
        """The task drawn from the family with a generator seeded by ``seed`` (cached)."""
        if seed in self._cache:
            self._cache.move_to_end(seed)
            return self._cache[seed]
        task = self.family.sample(generator=torch.Generator().manual_seed(seed), device=self.device)
        self._cache[seed] = task
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return task

    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """A new episode for all ``num`` particles: one task, one horizon, fresh parameters."""
        seed = int(torch.randint(_SEED_HIGH, (), generator=generator, device=generator.device))
        horizon = sample_log_uniform(self.min_horizon, self.max_horizon, generator=generator)
        task = self.task(seed)
        params = task.init_params(num, generator=generator).to(self.device)
        state = {_OPT_PREFIX + k: v for k, v in self.arch.init_state(params, task.segments).items()}
        full = torch.full((num,), 0, dtype=torch.long, device=self.device)
        state.update(
            params=params,
            val=torch.zeros(num, dtype=params.dtype, device=self.device),
            task_seed=full + seed,
            horizon=full + horizon,
        )
        return state

    def sample_data(self, num: int, steps: int, *, generator: torch.Generator) -> State | None:
        """Two seeds per step (training and validation minibatches), shared by all particles."""
        seeds = torch.randint(
            _SEED_HIGH, (steps, 1, 2), generator=generator, device=generator.device
        )
        return {"seed": seeds.expand(steps, num, 2).to(self.device)}

    def episode_end(self, state: State, t: Tensor) -> Tensor:
        """Each particle's episode ends after its own sampled ``horizon``."""
        return t + 1 >= state["horizon"]

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """Minibatch loss and gradient, (maybe) validation loss, one arch update — batched."""
        assert data is not None
        task = self.task(int(state["task_seed"][0]))
        train_seed, val_seed = (int(s) for s in data["seed"][0])
        params = state["params"]
        loss, grads = task.loss_and_grad(params, self._batch(task, params.shape[0], train_seed))
        val = state["val"]
        if self._needs_validation and int(t[0]) % self.val_every == 0:
            val = self._validation(task, params, val_seed).to(val.dtype)
        opt_state = {
            k[len(_OPT_PREFIX) :]: v for k, v in state.items() if k.startswith(_OPT_PREFIX)
        }
        new_params, opt_state = self.arch.step(
            theta, params, grads, opt_state, t, task.segments, LossFeatures(loss.detach(), val)
        )
        new_state = {_OPT_PREFIX + k: v for k, v in opt_state.items()}
        new_state.update(
            params=new_params, val=val, task_seed=state["task_seed"], horizon=state["horizon"]
        )
        step_loss = loss if self.objective == "train" else val.to(loss.dtype)
        if self.loss_scale == "log":  # NaN stays NaN: the estimator maps it to its clip
            step_loss = torch.log(step_loss.clamp_min(_LOG_FLOOR))
        if self.weighting == "late":
            horizon = state["horizon"].to(step_loss.dtype)
            step_loss = step_loss * (2 * (t.to(step_loss.dtype) + 1) / (horizon + 1))
        return new_state, step_loss

    def _halves(self, num: int) -> int:
        return num // 2 if self.paired and num % 2 == 0 else num

    def _batch(self, task: Task, num: int, seed: int) -> State:
        half = self._halves(num)
        drawn = task.sample_batches(half, 1, generator=self._generator(seed))
        reps = num // half
        return {k: torch.cat([v[0]] * reps) if reps > 1 else v[0] for k, v in drawn.items()}

    def _validation(self, task: Task, params: Tensor, seed: int) -> Tensor:
        half = self._halves(params.shape[0])
        parts = [
            task.validation_loss(chunk, generator=self._generator(seed))
            for chunk in torch.split(params, half)  # 1 or 2 chunks: the ± halves
        ]
        return torch.cat(parts)

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)  # CPU: tasks move their draws


def evaluate_thetas(
    arch: OptimizerArch,
    thetas: Tensor,
    task: Task,
    *,
    steps: int,
    generator: torch.Generator,
    val_every: int = 1,
) -> Tensor:
    """Train ``task`` for ``steps`` with each row of ``thetas`` ``[M, D]``; test losses ``[M]``.

    All rows start from the same initialization and see the same minibatches (common
    random numbers), batched as one population; validation loss is fed as in meta-training.
    """
    m = thetas.shape[0]
    params = task.init_params(1, generator=generator).expand(m, -1).clone()
    batches = task.sample_batches(1, steps, generator=generator)
    state = arch.init_state(params, task.segments)
    val = torch.zeros(m, dtype=params.dtype, device=params.device)
    with torch.no_grad():
        for step in range(steps):
            batch = {k: v[step].expand(m, *v.shape[2:]) for k, v in batches.items()}
            loss, grads = task.loss_and_grad(params, batch)
            if step % val_every == 0:
                val = task.validation_loss(params, generator=generator)
            t = torch.full((m,), step, dtype=torch.long, device=params.device)
            params, state = arch.step(
                thetas, params, grads, state, t, task.segments, LossFeatures(loss, val)
            )
        return task.test_loss(params)
