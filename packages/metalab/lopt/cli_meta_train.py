"""``metalab lopt meta-train``: wraps :func:`~metalab.lopt.meta_training.meta_train_lopt`.

A fresh run creates ``<out>/lopt-meta-train/<timestamp>-<id>/``; ``--resume RUN_DIR``
continues that run's stored configuration bit-exactly from its latest checkpoint (only
``--steps`` may be raised, and ``--device``/``--save``/``--print-every`` given). torch is
imported inside the command body so ``metalab --help`` stays fast.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from metalab.cli.options import FINITE_FLOAT
from metalab.core.errors import ConfigError

__all__ = ["meta_train"]

_RESUMABLE = {"steps", "device", "save", "print_every", "resume", "out"}


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs → dict; values are JSON when they parse (``hidden=16`` → 16)."""
    options: dict[str, Any] = {}
    for item in pairs:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--arch-option must look like KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


@click.command(name="meta-train")
@click.option(
    "--arch",
    default=None,
    help="Optimizer architecture: mlp | hierarchical | adam-mlp.  [default: mlp]",
)
@click.option("--arch-option", "arch_option", multiple=True, help="Arch option KEY=VALUE.")
@click.option(
    "--tasks", default=None, help="Task family (mlp-digits, mixed, ...).  [default: mlp-digits]"
)
@click.option("--estimator", default=None, help="pes | tes (truncated ES).  [default: pes]")
@click.option("--steps", type=int, default=None, help="Outer iterations.  [default: 100]")
@click.option("--pairs", type=int, default=None, help="Antithetic pairs.  [default: 8]")
@click.option(
    "--sigma", type=FINITE_FLOAT, default=None, help="Perturbation scale σ.  [default: 0.01]"
)
@click.option("--truncation", "-K", type=int, default=None, help="Window length K.  [default: 10]")
@click.option("--min-horizon", type=int, default=None, help="Shortest episode.  [default: 50]")
@click.option("--max-horizon", type=int, default=None, help="Longest episode.  [default: 500]")
@click.option("--val-every", type=int, default=None, help="Validation-loss period.  [default: 1]")
@click.option(
    "--outer", default=None, help="Outer optimizer: adam | learned:PATH.  [default: adam]"
)
@click.option(
    "--outer-lr", type=FINITE_FLOAT, default=None, help="Adam learning rate on θ.  [default: 3e-3]"
)
@click.option(
    "--loss-clip", type=FINITE_FLOAT, default=None, help="Clip per-step losses.  [default: 10]"
)
@click.option("--grad-clip", type=FINITE_FLOAT, default=None, help="Clip the estimate's norm.")
@click.option(
    "--checkpoint-every", type=int, default=None, help="Steps per checkpoint.  [default: 10]"
)
@click.option("--seed", type=int, default=None, help="Seed.  [default: 0]")
@click.option("--objective", default=None, help="Meta-loss: train | validation.  [default: train]")
@click.option(
    "--weighting", default=None, help="Per-step loss weights: uniform | late (end of training)."
)
@click.option(
    "--loss-scale",
    default=None,
    help="Per-step meta-loss: linear | log (across tasks).  [default: linear]",
)
@click.option(
    "--init", default=None, help="θ₀: random | momentum[:LR[:CLIP]] (mlp only).  [default: random]"
)
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda[:N]")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Runs root (default: $METALAB_RUNS or ./runs).",
)
@click.option("--resume", default=None, help="Continue the run in this folder.")
@click.option("--save", default=None, help="Also write the final weights here.")
@click.option("--print-every", type=click.IntRange(min=1), default=10, show_default=True)
def meta_train(**kwargs: Any) -> None:
    """Meta-train a learned optimizer on a task family with PES or truncated ES."""
    from metalab.core.device import resolve_device
    from metalab.core.environment import environment_info
    from metalab.core.runs import Run
    from metalab.lopt.meta_training import (
        make_arch_by_name,
        make_family_by_name,
        meta_train_lopt,
    )

    device = resolve_device(kwargs["device"])
    if kwargs["save"] and Path(kwargs["save"]).is_dir():
        raise ConfigError(f"--save {kwargs['save']} is a directory; give a file path")
    if kwargs["resume"] is not None:
        run, config = _reopen(kwargs)
    else:
        config = _fresh_config(kwargs)
        make_arch_by_name(config.arch, config.arch_options)  # bad names fail before any folder
        make_family_by_name(config.tasks)
        from dataclasses import asdict

        run = Run.create(
            "lopt-meta-train", asdict(config), root=kwargs["out"], env=environment_info(device)
        )
    click.echo(f"run folder: {run.dir}")
    with run:
        result = meta_train_lopt(
            config,
            run=run,
            device=device,
            echo=click.echo,
            print_every=kwargs["print_every"],
            command=shlex.join(["metalab", *sys.argv[1:]]),
        )
    click.echo(
        f"{result.inner_steps:,} inner steps at {result.steps_per_second:,.0f} inner steps/s "
        f"({device}); final window loss/step {result.curve[-1]:.4f}"
    )
    click.echo(f"learning curve: {run.figure_path('meta_training.png')}")
    click.echo(f"weights: {result.weights}")
    if kwargs["save"]:
        import shutil

        target = Path(kwargs["save"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.weights, target)
        click.echo(f"saved: {target}")


def _fresh_config(kwargs: dict[str, Any]) -> Any:
    from metalab.lopt.meta_training import MetaTrainConfig

    fields = {
        k: v
        for k, v in kwargs.items()
        if k not in _RESUMABLE - {"steps"} and k != "arch_option" and v is not None
    }
    config = MetaTrainConfig(**fields, arch_options=_parse_options(kwargs["arch_option"]))
    try:
        config.check()
    except ConfigError as exc:  # name the flag the user typed, not the config field
        raise ConfigError(_as_flag(str(exc), kwargs)) from None
    return config


def _as_flag(message: str, options: Iterable[str]) -> str:
    """``"max_horizon 10 < min_horizon 50"`` -> ``"--max-horizon 10 < --min-horizon 50"``.

    Quoted values (paths, specs) are left alone, and so is a name inside a path or word.
    """
    names = "|".join(sorted(options, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/:.-])({names})(?![\w/:.-])")
    parts = re.split(r"('[^']*')", message)  # odd parts are quoted
    return "".join(
        part if i % 2 else pattern.sub(lambda m: "--" + m.group(1).replace("_", "-"), part)
        for i, part in enumerate(parts)
    )


def _reopen(kwargs: dict[str, Any]) -> tuple[Any, Any]:
    from metalab.core.config import build_config
    from metalab.core.runs import Run
    from metalab.lopt.meta_training import MetaTrainConfig

    given = sorted(k for k, v in kwargs.items() if k not in _RESUMABLE and v not in (None, ()))
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"--resume continues the stored configuration; do not pass {flags}")
    configs: list[MetaTrainConfig] = []

    def accept(stored: dict[str, Any]) -> None:  # refuses before the run folder changes
        config = build_config(MetaTrainConfig, stored, where="config")
        if kwargs["steps"] is not None:
            if kwargs["steps"] < config.steps:
                raise ConfigError(f"--steps {kwargs['steps']} is below the run's {config.steps}")
            config.steps = kwargs["steps"]
        config.check()
        configs.append(config)

    run = Run.open(kwargs["resume"], accept)
    config = configs[0]
    if kwargs["steps"] is not None:
        from dataclasses import asdict

        from metalab.core.checkpoint import atomic_write_json

        atomic_write_json(run.dir / "config.json", asdict(config))
        run.config = asdict(config)
    return run, config
