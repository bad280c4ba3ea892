"""Runner of ``net2net-explore``: grow in stages vs train the final architecture from scratch.

Chen et al. (2016), Sec. 4.3: exploring model space by growing a trained network wider and
deeper, each stage continuing from the last, costs less than training every candidate from
scratch. Compute is counted in forward multiply-accumulates per example times examples
seen (training costs a constant multiple of it for every model, so ratios are fair).

Learning rates (Sec. 4): the start model and the scratch model use ``lr`` and end with
``final_epochs`` at ``final_lr``; every grown stage continues at ``final_lr``. Both paths
are repeated over ``seeds`` seeds and compared on the seed-averaged curves.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metalab.core.claims import RunConfig, runner_params
from metalab.core.config import at_least, non_negative, nonempty
from metalab.core.errors import ConfigError
from metalab.core.figures import plot_curves
from metalab.core.runs import Run
from metalab.net2net.experiments.common import (
    Data,
    TrainingProtocol,
    build,
    check_shift,
    epochs_to,
    forward_macs,
    init_seeded,
    load_data,
    plateau,
    shift_augment,
    step_lr,
)
from metalab.net2net.experiments.runners import reinitialized
from metalab.net2net.ops import NoiseKind, check_noise_kind
from metalab.net2net.optim import OptimizerState, transfer_optimizer
from metalab.net2net.report import preservation_error
from metalab.net2net.transforms import deepen, widen

__all__ = ["ExploreParams", "explore", "parse_stage"]

_STAGE = re.compile(
    r"^\s*(widen\s+(?P<layer>[\w.]+)\s*=\s*(?P<width>\d+)|deepen\s+(?P<after>[\w.]+))\s*$"
)


@dataclass
class ExploreParams(TrainingProtocol):
    """``net2net-explore`` parameters; ``stages`` are ``"widen LAYER=WIDTH"``/``"deepen LAYER"``."""

    start_widths: list[int] = nonempty(lambda: [16], ge=1)
    stages: list[str] = nonempty(lambda: ["widen fc1=32", "deepen fc1", "widen fc1=64"])
    initial_epochs: int = non_negative(5)  # 0: grow from an untrained start model
    stage_epochs: int = at_least(1, 5)
    scratch_epochs: int = at_least(1, 20)
    optimizer_state: str = "carry"


def parse_stage(text: str) -> tuple[str, str, int]:
    """``"widen fc1=32"`` -> ``("widen", "fc1", 32)``; ``"deepen fc1"`` -> ``("deepen", "fc1", 0)``.

    Raises:
        ConfigError: anything else.
    """
    match = _STAGE.match(text)
    if match is None:
        raise ConfigError(f"stage {text!r} must be 'widen LAYER=WIDTH' or 'deepen LAYER'")
    if match["layer"]:
        return "widen", match["layer"], int(match["width"])
    return "deepen", match["after"], 0


class _Path:
    """The grown model's record: test/train accuracy and cumulative compute after each epoch."""

    def __init__(self, data: Data, p: ExploreParams, generator: torch.Generator) -> None:
        self.data, self.p, self.generator = data, p, generator
        self.accuracy: dict[str, list[float]] = {"test": [], "train": []}
        self.compute: list[float] = []

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        from metalab.core.training import accuracy

        return {
            "test": accuracy(model, *self.data.test),
            "train": accuracy(model, *self.data.train),
        }

    def train(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, epochs: int, *, schedule: bool
    ) -> None:
        from metalab.core.training import train_supervised

        per_epoch = forward_macs(model, self.data.input_shape) * len(self.data.train[0])
        if not self.compute:
            for split, value in self._evaluate(model).items():
                self.accuracy[split].append(value)
            self.compute.append(0.0)
        history = train_supervised(
            model,
            self.data.train,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=self.p.batch_size,
            generator=self.generator,
            evaluate=self._evaluate,
            on_epoch=step_lr(
                optimizer,
                epochs=epochs,
                lr=self.p.lr if schedule else self.p.continuation_lr,
                final_lr=self.p.continuation_lr,
                final_epochs=self.p.final_epochs if schedule else 0,
            ),
            augment=shift_augment(self.p.shift),
        )
        for record in history:
            for split in ("test", "train"):
                self.accuracy[split].append(record.metrics[split])
            self.compute.append(self.compute[-1] + per_epoch)


def _grow(
    model: nn.Module,
    stage: str,
    noise: float,
    data: Data,
    gen: torch.Generator,
    noise_kind: NoiseKind = "gaussian",
) -> Any:
    kind, layer, width = parse_stage(stage)
    if kind == "widen":
        return widen(model, layer, width, noise=noise, noise_kind=noise_kind, generator=gen)
    return deepen(model, layer, data=data.train[0][:512], noise=noise, generator=gen)


@runner_params(ExploreParams)
def explore(config: RunConfig, run: Run) -> dict[str, Any]:
    """Grow in stages (optimizer state carried or reset) vs the final architecture from scratch."""
    p = config.typed(ExploreParams)
    for stage in p.stages:
        parse_stage(stage)
    noise_kind = check_noise_kind(p.noise_kind)
    if p.optimizer_state not in ("carry", "reset"):
        raise ConfigError(f"optimizer_state must be 'carry' or 'reset', got {p.optimizer_state!r}")
    if p.seeds < 1 or p.final_epochs < 0 or p.final_lr < 0:
        raise ConfigError(
            f"need seeds >= 1, final_epochs >= 0, final_lr >= 0; "
            f"got {p.seeds}, {p.final_epochs}, {p.final_lr}"
        )
    data = load_data(
        p.dataset, seed=config.seed, device=config.torch_device, train_examples=p.train_examples
    )
    check_shift(p.shift, data, p.dataset)
    paths, scratch_curves, errors, exact_errors = [], [], [], []
    for k in range(p.seeds):
        cfg = config if k == 0 else dataclasses.replace(config, seed=config.seed + k)
        path, model, noisy, exact = _grown_path(cfg, p, data, noise_kind)
        errors += noisy
        exact_errors += exact
        scratch = reinitialized(model, seed=cfg.seed, purpose="scratch-init")

        def compute(m: nn.Module = scratch, c: RunConfig = cfg) -> dict[str, list[float]]:
            return _scratch_curve(m, data, p, c)

        scratch_curves.append(run.stage(f"scratch-{k}", compute))
        paths.append(path)
    scratch_macs = forward_macs(scratch, data.input_shape) * len(data.train[0])
    mean_path = paths[0]
    mean_path.accuracy = {s: _mean([q.accuracy[s] for q in paths]) for s in ("test", "train")}
    scratch_mean = {s: _mean([c[s] for c in scratch_curves]) for s in ("test", "train")}
    metrics = _summarize(run, p, mean_path, scratch_mean, scratch_macs, errors, model)
    return metrics | {"max_stage_preservation_error_exact": max(exact_errors, default=0.0)}


def _mean(curves: list[list[float]]) -> list[float]:
    return [sum(values) / len(values) for values in zip(*curves, strict=True)]


def _grown_path(
    config: RunConfig, p: ExploreParams, data: Data, noise_kind: NoiseKind
) -> tuple[_Path, nn.Module, list[float], list[float]]:
    """Train the start model, then grow and train stage by stage; return the path's record."""
    model = init_seeded(
        lambda: build(p.model, p.start_widths, data, batchnorm=p.batchnorm),
        seed=config.seed,
        purpose="start-init",
        device=config.torch_device,
    )
    path = _Path(data, p, config.generator("grown-data"))
    optimizer: torch.optim.Optimizer = torch.optim.SGD(
        model.parameters(), lr=p.lr, momentum=p.momentum
    )
    path.train(model, optimizer, p.initial_epochs, schedule=True)
    gen, errors, exact_errors = config.generator("growth"), [], []
    for stage in p.stages:
        replay = torch.Generator()
        replay.set_state(gen.get_state())
        exact, _ = _grow(model, stage, 0.0, data, replay)  # same mapping, no noise
        exact_errors.append(preservation_error(model, exact, data.test[0]))
        grown, report = _grow(model, stage, p.noise, data, gen, noise_kind)
        errors.append(preservation_error(model, grown, data.test[0]))
        state: OptimizerState = "carry" if p.optimizer_state == "carry" else "reset"
        optimizer = transfer_optimizer(optimizer, model, grown, report, state=state)
        model = grown
        path.train(model, optimizer, p.stage_epochs, schedule=False)
    return path, model, errors, exact_errors


def _scratch_curve(
    model: nn.Module, data: Data, p: ExploreParams, config: RunConfig
) -> dict[str, list[float]]:
    from metalab.net2net.experiments.common import train_curve

    return train_curve(
        model,
        data,
        epochs=p.scratch_epochs,
        lr=p.lr,
        momentum=p.momentum,
        batch_size=p.batch_size,
        generator=config.generator("scratch-data"),
        final_lr=p.continuation_lr,
        final_epochs=p.final_epochs,
        shift=p.shift,
    )


def _summarize(
    run: Run,
    p: ExploreParams,
    path: _Path,
    scratch: dict[str, list[float]],
    scratch_macs: int,
    errors: list[float],
    model: nn.Module,
) -> dict[str, Any]:
    for epoch, compute in enumerate(path.compute):
        run.log(
            epoch,
            grown_compute=compute,
            **{f"grown.{k}_accuracy": v[epoch] for k, v in path.accuracy.items()},
            **{f"scratch.{k}_accuracy": v[epoch] for k, v in scratch.items() if epoch < len(v)},
        )
    metrics: dict[str, Any] = {
        "max_stage_preservation_error_noisy": max(errors, default=0.0),
        "final_parameters": sum(q.numel() for q in model.parameters()),
    }
    for split in ("test", "train"):
        metrics |= _split(
            run, p, split, path.accuracy[split], path.compute, scratch[split], scratch_macs
        )
    return metrics


def _split(
    run: Run,
    p: ExploreParams,
    split: str,
    grown: list[float],
    compute: list[float],
    scratch: list[float],
    scratch_macs: int,
) -> dict[str, Any]:
    """Compute to reach the scratch model's final ``split`` accuracy, on both paths."""
    target = plateau(scratch, p.window)
    grown_epoch, scratch_epoch = epochs_to(grown, target), epochs_to(scratch, target)
    reached = grown_epoch < len(grown)
    grown_compute = compute[grown_epoch] if reached else float("nan")
    scratch_compute = scratch_epoch * scratch_macs
    giga = 1e9
    curves = {
        "grown in stages (Net2Net)": ([c / giga for c in compute], grown),
        "final architecture from scratch": (
            [i * scratch_macs / giga for i in range(len(scratch))],
            scratch,
        ),
    }
    plot_curves(
        run.figure_path(f"{split}_accuracy_vs_compute.png"),
        curves,
        xlabel="training compute (GMAC: forward MACs x examples)",
        ylabel=f"{split} accuracy",
        title=f"net2net-explore: {' -> '.join(p.stages)}",
        hlines={"target": target},
    )
    epochs = {
        "grown in stages (Net2Net)": (list(range(len(grown))), grown),
        "final architecture from scratch": (list(range(len(scratch))), scratch),
    }
    plot_curves(
        run.figure_path(f"{split}_accuracy_vs_epochs.png"),
        epochs,
        xlabel="epochs",
        ylabel=f"{split} accuracy",
        title="net2net-explore",
        hlines={"target": target},
    )
    return {
        f"{split}.target_accuracy": target,
        f"{split}.grown.final_accuracy": plateau(grown, p.window),
        f"{split}.final_gap_to_scratch": plateau(grown, p.window) - target,
        f"{split}.grown.epochs_to_target": grown_epoch,
        f"{split}.scratch.epochs_to_target": scratch_epoch,
        f"{split}.grown.gmac_to_target": grown_compute / giga,
        f"{split}.scratch.gmac_to_target": scratch_compute / giga,
        f"{split}.grown.reached_target": float(reached),
        # Not reaching the target is a speed-up of 0 (the check fails), never a guess.
        f"{split}.compute_speedup": scratch_compute / max(grown_compute, 1.0) if reached else 0.0,
    }
