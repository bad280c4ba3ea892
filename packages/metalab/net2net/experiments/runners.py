"""Runners of ``net2net-wider`` and ``net2net-deeper`` (Chen et al. 2016, Sec. 4.1-4.2).

A teacher is trained; a larger student is then trained three ways from the same batch
order: initialized by Net2Net from the teacher, initialized at random, and the paper's
"random pad" (teacher's weights kept, new units or layers random). The speed-up is the
ratio of epochs random initialization needs to reach its own final accuracy to the epochs
Net2Net needs to reach it.

Learning-rate protocol (Sec. 4): the teacher is trained with ``lr`` and ends with
``final_epochs`` at ``final_lr``; the Net2Net and random-pad students continue at the
teacher's final rate (they start from a trained network), random initialization gets the
teacher's own schedule (``lr``, then ``final_lr`` for its last ``final_epochs``). Every
comparison is repeated over ``seeds`` seeds (teacher, mapping, noise, inits and batch order;
same data split) and made on the seed-averaged curves.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metalab.core.claims import RunConfig, runner_params
from metalab.core.config import at_least, bounded, non_negative, nonempty
from metalab.core.errors import ConfigError
from metalab.core.figures import plot_curves
from metalab.core.runs import Run
from metalab.net2net.experiments.common import (
    Data,
    TrainingProtocol,
    build,
    check_shift,
    epochs_to,
    init_seeded,
    load_data,
    plateau,
    random_pad,
    train_curve,
)
from metalab.net2net.ops import check_noise_kind
from metalab.net2net.report import preservation_error
from metalab.net2net.transforms import deepen, widen

__all__ = ["DeeperParams", "WiderParams", "deeper", "reinitialized", "teacher_model", "wider"]


@dataclass
class _Common(TrainingProtocol):
    teacher_widths: list[int] = nonempty(lambda: [16], ge=1)
    teacher_epochs: int = non_negative(10)  # 0: grow an untrained teacher
    student_epochs: int = at_least(1, 15)
    dropout: float = bounded(0.0, ge=0, lt=1)


Students = Callable[[RunConfig, nn.Module], tuple[dict[str, nn.Module], dict[str, float]]]


@dataclass
class WiderParams(_Common):
    """``net2net-wider``: ``student_widths`` (one per teacher layer, each ``>=``)."""

    student_widths: list[int] = nonempty(lambda: [64], ge=1)


@dataclass
class DeeperParams(_Common):
    """``net2net-deeper``: identity layers inserted after each layer of ``insert_after``."""

    insert_after: list[str] = nonempty(lambda: ["fc1"])
    kernel_size: int = at_least(1, 3)


def layer_names(kind: str, depth: int) -> list[str]:
    """Names of the grown layers of :func:`~metalab.net2net.experiments.common.build`."""
    return [f"{'fc' if kind == 'mlp' else 'conv'}{i}" for i in range(1, depth + 1)]


def teacher_model(
    config: RunConfig, run: Run, p: _Common, data: Data, *, tag: str = "teacher"
) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train the teacher once per run folder (weights checkpointed under ``tag``, curve memoized).

    ``lr``, then ``final_lr`` for the last ``final_epochs`` epochs.
    """

    def make() -> nn.Module:
        widths = p.teacher_widths
        return init_seeded(
            lambda: build(p.model, widths, data, batchnorm=p.batchnorm, dropout=p.dropout),
            seed=config.seed,
            purpose="teacher-init",
            device=config.torch_device,
        )

    def compute() -> dict[str, list[float]]:
        model = make()
        curve = _train(model, config, p, data, p.teacher_epochs, "teacher-data", schedule=True)
        run.save_checkpoint({"state_dict": model.state_dict()}, tag=tag)
        return curve

    curve = run.stage(tag, compute)
    model = make()
    state = run.load_checkpoint(tag=tag)
    assert state is not None
    model.load_state_dict(state["state_dict"])
    return model, curve


def _train(
    model: nn.Module,
    config: RunConfig,
    p: _Common,
    data: Data,
    epochs: int,
    stream: str,
    *,
    schedule: bool,
) -> dict[str, list[float]]:
    """``schedule``: the teacher's step schedule; otherwise constant ``p.continuation_lr``."""
    return train_curve(
        model,
        data,
        epochs=epochs,
        lr=p.lr if schedule else p.continuation_lr,
        momentum=p.momentum,
        batch_size=p.batch_size,
        generator=config.generator(stream),
        final_lr=p.continuation_lr,
        final_epochs=p.final_epochs if schedule else 0,
        shift=p.shift,
    )


@torch.no_grad()
def reinitialized(
    model: nn.Module, *, seed: int, purpose: str, names: list[str] | None = None
) -> nn.Module:
    """A copy of ``model`` whose modules (or only ``names``) get torch's default init again."""
    fresh = copy.deepcopy(model)
    targets = (
        [fresh.get_submodule(n) for n in names] if names is not None else list(fresh.modules())
    )
    with torch.random.fork_rng(devices=[]):
        from metalab.core.seeding import derive_seed

        torch.manual_seed(derive_seed(seed, purpose))
        for module in targets:
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


def _seed_config(config: RunConfig, k: int) -> RunConfig:
    return config if k == 0 else dataclasses.replace(config, seed=config.seed + k)


def _compare(
    config: RunConfig, run: Run, p: _Common, data: Data, make_students: Students
) -> dict[str, float]:
    """Per seed: train a teacher, grow the students, train them; compare the mean curves.

    For each split, the target is random init's final accuracy (mean of its last ``window``
    epochs of the seed-averaged curve); ``speedup`` = epochs random init needs / epochs
    Net2Net needs (at least 1). Net2Net and random pad train at the teacher's final rate,
    random init with the teacher's schedule.
    """
    runs: list[dict[str, dict[str, list[float]]]] = []
    teachers: list[dict[str, list[float]]] = []
    errors: dict[str, float] = {}
    for k in range(p.seeds):
        cfg = _seed_config(config, k)
        teacher, teacher_curve = teacher_model(cfg, run, p, data, tag=f"teacher-{k}")
        students, errs = make_students(cfg, teacher)
        errors = {name: max(v, errors.get(name, 0.0)) for name, v in errs.items()}
        teachers.append(teacher_curve)
        runs.append(_train_students(cfg, run, p, data, students, suffix=f"-{k}"))
    mean = {
        name: {s: _mean([r[name][s] for r in runs]) for s in ("test", "train")} for name in runs[0]
    }
    teacher_mean = {s: _mean([t[s] for t in teachers]) for s in ("test", "train")}
    for epoch in range(p.student_epochs + 1):
        run.log(
            epoch,
            **{
                f"{name}.{split}_accuracy": curve[split][epoch]
                for name, curve in mean.items()
                for split in ("test", "train")
            },
        )
    metrics: dict[str, float] = dict(errors)
    for split in ("test", "train"):
        metrics |= _split_metrics(
            {k: v[split] for k, v in mean.items()}, teacher_mean[split][-1], split, p.window
        )
        for k, curves in enumerate(runs):
            per_seed = _split_metrics(
                {n: c[split] for n, c in curves.items()}, teachers[k][split][-1], split, p.window
            )
            metrics[f"{split}.speedup_vs_random_init.seed{k}"] = per_seed[
                f"{split}.speedup_vs_random_init"
            ]
        _plot(run, config, p, split, mean, teacher_mean[split][-1], metrics)
    return metrics


def _train_students(
    cfg: RunConfig, run: Run, p: _Common, data: Data, students: dict[str, nn.Module], *, suffix: str
) -> dict[str, dict[str, list[float]]]:
    """Each student's curves (memoized per run folder); random init gets its own schedule."""
    curves = {}
    for name, model in students.items():

        def compute(m: nn.Module = model, own: bool = name == "random_init") -> Any:
            return _train(m, cfg, p, data, p.student_epochs, "student-data", schedule=own)

        curves[name] = run.stage(name + suffix, compute)
    return curves


def _mean(curves: list[list[float]]) -> list[float]:
    return [sum(values) / len(values) for values in zip(*curves, strict=True)]


def _plot(
    run: Run,
    config: RunConfig,
    p: _Common,
    split: str,
    mean: dict[str, dict[str, list[float]]],
    teacher_acc: float,
    metrics: dict[str, float],
) -> None:
    epochs = list(range(p.student_epochs + 1))
    plot_curves(
        run.figure_path(f"{split}_accuracy_vs_epochs.png"),
        {k: (epochs, v[split]) for k, v in mean.items()},
        xlabel="epochs of student training",
        ylabel=f"{split} accuracy (mean of {p.seeds} seeds)",
        title=f"{config.name}: {p.model} on {p.dataset}",
        hlines={"teacher": teacher_acc, "random-init final": metrics[f"{split}.target_accuracy"]},
    )


def _split_metrics(
    curves: dict[str, list[float]], teacher_acc: float, split: str, window: int
) -> dict[str, float]:
    target = plateau(curves["random_init"], window)
    reach = {name: epochs_to(curve, target) for name, curve in curves.items()}
    metrics = {f"{split}.teacher_accuracy": teacher_acc, f"{split}.target_accuracy": target}
    for name, curve in curves.items():
        metrics |= {
            f"{split}.{name}.initial_accuracy": curve[0],
            f"{split}.{name}.final_accuracy": plateau(curve, window),
            f"{split}.{name}.epochs_to_target": reach[name],
        }
    metrics[f"{split}.speedup_vs_random_init"] = reach["random_init"] / max(reach["net2net"], 1)
    metrics[f"{split}.initial_gap_to_teacher"] = abs(curves["net2net"][0] - teacher_acc)
    metrics[f"{split}.initial_advantage_over_random_pad"] = (
        curves["net2net"][0] - curves["random_pad"][0]
    )
    metrics[f"{split}.final_gap_to_random_init"] = plateau(curves["net2net"], window) - target
    return metrics


def _check_common(p: _Common) -> None:
    if p.student_epochs < p.window or p.window < 1:
        raise ConfigError(f"need student_epochs >= window >= 1, got {p.student_epochs}, {p.window}")
    if p.seeds < 1 or p.final_epochs < 0 or p.final_lr < 0:
        raise ConfigError(
            f"need seeds >= 1, final_epochs >= 0, final_lr >= 0; got {p.seeds}, "
            f"{p.final_epochs}, {p.final_lr}"
        )


@runner_params(WiderParams)
def wider(config: RunConfig, run: Run) -> dict[str, Any]:
    """Net2WiderNet vs random init vs random pad (Sec. 4.1, Fig. 4)."""
    p = config.typed(WiderParams)
    _check_common(p)
    if len(p.student_widths) != len(p.teacher_widths) or any(
        s < t for s, t in zip(p.student_widths, p.teacher_widths, strict=True)
    ):
        raise ConfigError(
            f"student_widths {p.student_widths} must match and be >= "
            f"teacher_widths {p.teacher_widths}"
        )
    data = load_data(
        p.dataset, seed=config.seed, device=config.torch_device, train_examples=p.train_examples
    )
    check_shift(p.shift, data, p.dataset)
    noise_kind = check_noise_kind(p.noise_kind)
    layers = layer_names(p.model, len(p.teacher_widths))
    blocks = {} if p.model == "mlp" else {"out": (data.input_shape[-1] // 2 ** len(layers)) ** 2}

    def students(
        cfg: RunConfig, teacher: nn.Module
    ) -> tuple[dict[str, nn.Module], dict[str, float]]:
        noisy, exact = teacher, teacher
        mapping_stream, exact_stream = cfg.generator("mapping"), cfg.generator("mapping")
        for layer, width in zip(layers, p.student_widths, strict=True):
            noisy, _ = widen(
                noisy, layer, width, noise=p.noise, noise_kind=noise_kind, generator=mapping_stream
            )
            exact, _ = widen(exact, layer, width, generator=exact_stream)
        fresh = init_seeded(
            lambda: build(
                p.model, p.student_widths, data, batchnorm=p.batchnorm, dropout=p.dropout
            ),
            seed=cfg.seed,
            purpose="student-init",
            device=cfg.torch_device,
        )
        grown = {
            "net2net": noisy,
            "random_init": fresh,
            "random_pad": random_pad(teacher, copy.deepcopy(fresh), flatten_blocks=blocks),
        }
        return grown, _errors(teacher, exact, noisy, data)

    return _compare(config, run, p, data, students)


def _errors(teacher: nn.Module, exact: nn.Module, noisy: nn.Module, data: Data) -> dict[str, float]:
    return {
        "preservation_error_exact": preservation_error(teacher, exact, data.test[0]),
        "preservation_error_noisy": preservation_error(teacher, noisy, data.test[0]),
    }


@runner_params(DeeperParams)
def deeper(config: RunConfig, run: Run) -> dict[str, Any]:
    """Net2DeeperNet vs random init vs a randomly initialized inserted layer (Sec. 4.2, Fig. 5)."""
    p = config.typed(DeeperParams)
    _check_common(p)
    data = load_data(
        p.dataset, seed=config.seed, device=config.torch_device, train_examples=p.train_examples
    )
    check_shift(p.shift, data, p.dataset)
    stats = data.train[0][:512]

    def students(
        cfg: RunConfig, teacher: nn.Module
    ) -> tuple[dict[str, nn.Module], dict[str, float]]:
        noisy, exact, inserted = teacher, teacher, []
        gen = cfg.generator("noise")
        for layer in p.insert_after:
            noisy, report = deepen(
                noisy, layer, kernel_size=p.kernel_size, data=stats, noise=p.noise, generator=gen
            )
            exact, _ = deepen(exact, layer, kernel_size=p.kernel_size, data=stats)
            inserted += report.inserted
        grown = {
            "net2net": noisy,
            "random_init": reinitialized(exact, seed=cfg.seed, purpose="student-init"),
            "random_pad": reinitialized(exact, seed=cfg.seed, purpose="pad-init", names=inserted),
        }
        return grown, _errors(teacher, exact, noisy, data)

    return _compare(config, run, p, data, students)
