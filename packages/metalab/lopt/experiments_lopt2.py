"""Runners for ``lopt-hierarchical-vs-mlp`` and ``lopt-self-training`` (Metz et al. 2020).

Both meta-train learned optimizers with :func:`~metalab.lopt.meta_training.meta_train_lopt`
(PES or truncated ES over a task family, log-uniform episode lengths, validation loss fed)
and score the results on the family's fixed **held-out** tasks:

- ``lopt-hierarchical-vs-mlp`` (Metz 2020, Sec. 3-4): the hierarchical optimizer
  (per-tensor LSTM conditioning the per-parameter MLP) and the per-parameter MLP are
  meta-trained with the same estimator, pairs, σ, window, horizons, outer steps and seed —
  the same number of inner steps — and compared by their mean held-out log test loss.
- ``lopt-self-training`` (Metz 2020, Sec. 6, "training themselves"): a fresh MLP learned
  optimizer is meta-trained twice, identical except for the *outer* optimizer on ``θ``:
  Adam (best of a small learning-rate grid, chosen on the held-out score — an oracle that
  favours Adam) and the shipped learned optimizer (``outer = "learned:PATH"``, fed the
  meta-loss as its training-loss feature).

Held-out score (:func:`heldout_scores`): every held-out task is trained for ``steps`` inner
steps by the optimizer from ``seeds`` initializations at once (seeds are particles); the
**meta-loss** is the mean minibatch training loss per inner step (the meta-training
objective), the **log test loss** is ``log`` of the final full test-split loss. Non-finite
or larger losses are clipped at ``loss_clip`` as in meta-training.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from metalab.core import Run, RunConfig
from metalab.core.checkpoint import atomic_write_json
from metalab.core.claims import runner_params
from metalab.core.config import at_least, nonempty, positive
from metalab.core.figures import plot_curves
from metalab.lopt.experiments_toy import single_thread
from metalab.lopt.interfaces import LossFeatures, OptimizerArch, Task
from metalab.lopt.meta_training import MetaTrainConfig, meta_train_lopt

__all__ = [
    "ArchCompareParams",
    "HeldoutParams",
    "MetaParams",
    "SelfTrainingParams",
    "heldout_scores",
    "hierarchical_vs_mlp",
    "meta_train_stage",
    "score_theta",
    "self_training",
]


@dataclass
class MetaParams:
    """Meta-training settings shared by every optimizer an experiment compares."""

    tasks: str = "mixed"
    estimator: str = "pes"
    steps: int = at_least(1, 2000)
    pairs: int = at_least(1, 16)
    sigma: float = positive(0.01)
    truncation: int = at_least(1, 10)
    min_horizon: int = at_least(1, 50)
    max_horizon: int = at_least(1, 500)
    val_every: int = at_least(1, 1)
    outer_lr: float = positive(3e-3)
    loss_clip: float = positive(10.0)
    checkpoint_every: int = at_least(1, 50)

    def config(self, arch: str, *, seed: int, outer: str = "adam") -> MetaTrainConfig:
        """The :class:`MetaTrainConfig` for ``arch`` (everything else from these settings)."""
        return MetaTrainConfig(arch=arch, outer=outer, seed=seed, **asdict(self))


@dataclass
class HeldoutParams:
    """How held-out tasks are scored (see :func:`heldout_scores`).

    ``tasks``: ``""`` = the meta-training family's held-out tasks, else a
    :func:`~metalab.lopt.task_families.task_set` name (``"held-out"`` = all 10).
    """

    tasks: str = ""
    steps: int = at_least(1, 500)
    seeds: int = at_least(1, 4)
    val_every: int = at_least(1, 1)
    loss_clip: float = positive(10.0)


def _sub_run(run: Run, label: str, config: dict[str, Any]) -> Run:
    """A run folder for one meta-training inside ``run`` (reopened on resume)."""
    directory = run.dir / "meta-training" / label
    if (directory / "config.json").is_file():
        return Run.open(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "config.json", config)
    return Run(directory, config, resumed=False)


def meta_train_stage(
    config: RunConfig, run: Run, label: str, meta: MetaTrainConfig
) -> dict[str, Any]:
    """Meta-train once per run folder (resumable: a sub-run with checkpoints + a stage).

    Returns:
        ``{"theta", "curve", "inner_steps", "steps_per_second", "weights"}`` (JSON form).
    """

    def compute() -> dict[str, Any]:
        sub = _sub_run(run, label, asdict(meta))
        try:
            with single_thread():
                result = meta_train_lopt(
                    meta,
                    run=sub,
                    device=config.torch_device,
                    command=f"metalab repro run {config.name}",
                )
        finally:
            sub.close()
        return {
            "theta": result.theta.tolist(),
            "curve": result.curve,
            "inner_steps": result.inner_steps,
            "steps_per_second": result.steps_per_second,
            "weights": str(result.weights),
        }

    return run.stage(f"meta-{label}", compute)


@torch.no_grad()
def score_theta(
    arch: OptimizerArch,
    theta: Tensor,
    task: Task,
    *,
    steps: int,
    seeds: int,
    generator: torch.Generator,
    val_every: int = 1,
    loss_clip: float = 10.0,
) -> tuple[Tensor, Tensor]:
    """Train ``task`` from ``seeds`` initializations at once with ``arch(θ)``.

    Each seed is one particle with its own initialization and minibatches; the validation
    loss is fed every ``val_every`` steps as in meta-training.

    Returns:
        ``(meta_loss [S], test_loss [S])``: mean clipped training loss per step and the
        clipped final test loss.
    """
    device = task.segments.index.device
    params = task.init_params(seeds, generator=generator).to(device)
    batches = task.sample_batches(seeds, steps, generator=generator)
    thetas = theta.reshape(1, -1).to(device, params.dtype).expand(seeds, -1)
    state = arch.init_state(params, task.segments)
    total = torch.zeros(seeds, dtype=params.dtype, device=device)
    val = torch.zeros_like(total)
    for t in range(steps):
        loss, grads = task.loss_and_grad(params, {k: v[t] for k, v in batches.items()})
        if t % val_every == 0:
            val = task.validation_loss(params, generator=generator).to(total.dtype)
        total += _clip(loss, loss_clip)
        step = torch.full((seeds,), t, dtype=torch.long, device=device)
        params, state = arch.step(
            thetas, params, grads, state, step, task.segments, LossFeatures(loss, val)
        )
    return total / steps, _clip(task.test_loss(params), loss_clip)


def _clip(loss: Tensor, clip: float) -> Tensor:
    return torch.nan_to_num(loss, nan=clip, posinf=clip, neginf=clip).clamp(max=clip)


def heldout_scores(
    config: RunConfig,
    arch: OptimizerArch,
    theta: Tensor,
    tasks: list[Task],
    p: HeldoutParams,
) -> dict[str, Any]:
    """Mean held-out meta-loss and log test loss over ``tasks`` (and per task).

    Every optimizer scored in a run sees the same initializations and minibatches
    (the ``heldout`` stream restarts for each call).
    """
    per_task: dict[str, dict[str, float]] = {}
    generator = config.generator("heldout")
    with single_thread():
        for task in tasks:
            meta, test = score_theta(
                arch,
                theta,
                task,
                steps=p.steps,
                seeds=p.seeds,
                generator=generator,
                val_every=p.val_every,
                loss_clip=p.loss_clip,
            )
            per_task[task.name] = {
                "meta_loss": float(meta.mean()),
                "log_test_loss": float(test.clamp_min(1e-12).log().mean()),
            }
    n = len(per_task)
    return {
        "meta_loss": sum(v["meta_loss"] for v in per_task.values()) / n,
        "log_test_loss": sum(v["log_test_loss"] for v in per_task.values()) / n,
        "tasks": per_task,
    }


def _smooth(curve: list[float], points: int = 60) -> tuple[list[int], list[float]]:
    window = max(1, len(curve) // points)
    values = torch.tensor(curve[: len(curve) // window * window]).reshape(-1, window).mean(1)
    return [window * (i + 1) for i in range(len(values))], values.tolist()


def _held_out(family: str, heldout: HeldoutParams, device: torch.device) -> list[Task]:
    from metalab.lopt.task_families import task_set

    name = heldout.tasks or ("held-out" if family == "mixed" else family)
    return task_set(name, device)


@dataclass
class ArchCompareParams:
    """``lopt-hierarchical-vs-mlp``: archs meta-trained at equal compute, then scored."""

    archs: list[str] = nonempty(lambda: ["mlp", "hierarchical"])
    meta: MetaParams = field(default_factory=MetaParams)
    heldout: HeldoutParams = field(default_factory=HeldoutParams)
    score_init: bool = True


@runner_params(ArchCompareParams)
def hierarchical_vs_mlp(config: RunConfig, run: Run) -> dict[str, float]:
    """Meta-train each arch identically; compare mean held-out log test loss (Metz 2020)."""
    from metalab.lopt.arch_registry import make_arch

    p = config.typed(ArchCompareParams)
    tasks = _held_out(p.meta.tasks, p.heldout, config.torch_device)
    metrics: dict[str, float] = {"heldout_tasks": float(len(tasks))}
    curves, scores = {}, {}
    for name in p.archs:
        meta = p.meta.config(name, seed=config.seed)
        out = meta_train_stage(config, run, name, meta)
        arch = make_arch(name)
        theta = torch.tensor(out["theta"])
        scores[name] = run.stage(
            f"score-{name}",
            functools.partial(heldout_scores, config, arch, theta, tasks, p.heldout),
        )
        curves[name] = _smooth(out["curve"])
        _put_scores(metrics, name, scores[name])
        metrics[f"{name}.inner_steps"] = float(out["inner_steps"])
        metrics[f"{name}.inner_steps_per_second"] = float(out["steps_per_second"])
        metrics[f"{name}.theta_dim"] = float(arch.theta_dim)
    if p.score_init and p.archs:
        first = make_arch(p.archs[0])
        theta0 = p.meta.config(p.archs[0], seed=config.seed)
        init = _initial_theta(first, theta0.seed)
        scores["init"] = run.stage(
            "score-init", lambda: heldout_scores(config, first, init, tasks, p.heldout)
        )
        _put_scores(metrics, "init", scores["init"])
    if "mlp" in scores and "hierarchical" in scores:
        for key in ("log_test_loss", "meta_loss"):
            diff = scores["hierarchical"][key] - scores["mlp"][key]
            metrics[f"hier_minus_mlp_{key}"] = diff
        wins = [
            scores["hierarchical"]["tasks"][t]["log_test_loss"]
            < scores["mlp"]["tasks"][t]["log_test_loss"]
            for t in scores["mlp"]["tasks"]
        ]
        metrics["hier_win_fraction"] = sum(wins) / len(wins)
    _plot_archs(run, curves, scores, [t.name for t in tasks])
    (run.dir / "heldout_scores.json").write_text(json.dumps(scores, indent=1))
    return metrics


def _initial_theta(arch: OptimizerArch, seed: int) -> Tensor:
    from metalab.core.seeding import make_generator

    return arch.init_theta(generator=make_generator(seed, "meta-train/init"))


def _put_scores(metrics: dict[str, float], label: str, score: dict[str, Any]) -> None:
    metrics[f"{label}.heldout_log_test_loss"] = score["log_test_loss"]
    metrics[f"{label}.heldout_meta_loss"] = score["meta_loss"]
    for task, values in score["tasks"].items():
        metrics[f"{label}.{task}.test_loss"] = math.exp(values["log_test_loss"])


def _plot_archs(run: Run, curves: dict[str, Any], scores: dict[str, Any], names: list[str]) -> None:
    plot_curves(
        run.figure_path("meta_training.png"),
        curves,
        xlabel="outer iteration",
        ylabel="training loss per inner step (window mean)",
        title="Meta-training at equal compute (Metz et al. 2020)",
    )
    index = list(range(len(names)))
    per_task = {
        label: (index, [score["tasks"][n]["log_test_loss"] for n in names])
        for label, score in scores.items()
    }
    plot_curves(
        run.figure_path("heldout_per_task.png"),
        per_task,
        xlabel="held-out task index (names: heldout_scores.json)",
        ylabel="log final test loss (mean over seeds)",
        title="Held-out tasks: lower is better",
    )


@dataclass
class SelfTrainingParams:
    """``lopt-self-training``: the outer optimizer is Adam or the shipped learned optimizer."""

    arch: str = "mlp"
    outer_weights: str = "default"
    adam_lrs: list[float] = nonempty(lambda: [1e-3, 3e-3, 1e-2], gt=0)
    meta: MetaParams = field(default_factory=lambda: MetaParams(tasks="mlp-digits"))
    heldout: HeldoutParams = field(default_factory=HeldoutParams)


@runner_params(SelfTrainingParams)
def self_training(config: RunConfig, run: Run) -> dict[str, float]:
    """Meta-train a fresh optimizer with Adam and with a learned optimizer as the outer loop."""
    from metalab.lopt.arch_registry import make_arch

    p = config.typed(SelfTrainingParams)
    weights = _outer_weights_file(config, run, p.outer_weights)
    tasks = _held_out(p.meta.tasks, p.heldout, config.torch_device)
    arch = make_arch(p.arch)
    runs = {f"adam_lr{lr:g}": replace(p.meta, outer_lr=lr) for lr in p.adam_lrs}
    outers = {label: "adam" for label in runs}
    runs["learned"], outers["learned"] = p.meta, f"learned:{weights}"
    metrics: dict[str, float] = {}
    curves, scores = {}, {}
    for label, meta in runs.items():
        mconfig = meta.config(p.arch, seed=config.seed, outer=outers[label])
        out = meta_train_stage(config, run, label, mconfig)
        theta = torch.tensor(out["theta"])
        scores[label] = run.stage(
            f"score-{label}",
            functools.partial(heldout_scores, config, arch, theta, tasks, p.heldout),
        )
        curves[f"outer {label}"] = _smooth(out["curve"])
        metrics[f"{label}.heldout_meta_loss"] = scores[label]["meta_loss"]
        metrics[f"{label}.heldout_log_test_loss"] = scores[label]["log_test_loss"]
        metrics[f"{label}.inner_steps_per_second"] = float(out["steps_per_second"])
        metrics[f"{label}.final_window_loss"] = sum(out["curve"][-10:]) / len(out["curve"][-10:])
    adam = [label for label in runs if label != "learned"]
    best = min(adam, key=lambda label: scores[label]["meta_loss"])
    metrics["best_adam_lr"] = float(best.removeprefix("adam_lr"))
    metrics["best_adam.heldout_meta_loss"] = scores[best]["meta_loss"]
    metrics["learned_minus_adam_meta_loss"] = (
        scores["learned"]["meta_loss"] - scores[best]["meta_loss"]
    )
    metrics["learned_minus_adam_log_test_loss"] = (
        scores["learned"]["log_test_loss"] - scores[best]["log_test_loss"]
    )
    plot_curves(
        run.figure_path("self_training.png"),
        curves,
        xlabel="outer iteration",
        ylabel="training loss per inner step (window mean)",
        title="Outer optimizer: Adam vs the learned optimizer itself (Metz et al. 2020)",
    )
    (run.dir / "heldout_scores.json").write_text(json.dumps(scores, indent=1))
    return metrics


def _outer_weights_file(config: RunConfig, run: Run, spec: str) -> str:
    """``"default"`` → the packaged file; ``"init:ARCH"`` → an untrained one saved in the run."""
    from metalab.lopt.arch_registry import make_arch
    from metalab.lopt.weights import DEFAULT_WEIGHTS_PATH, make_provenance, save_weights

    if spec == "default":
        return str(DEFAULT_WEIGHTS_PATH)
    if not spec.startswith("init:"):
        return spec
    arch = make_arch(spec[5:])
    theta = arch.init_theta(generator=config.generator("outer-init"))
    meta = make_provenance(command="untrained (init)", steps=0, estimator="none", tasks="none")
    path = run.dir / "outer-init.pt"
    return str(save_weights(path, theta, arch=spec[5:], provenance=meta))
