"""``metalab lopt``: run gradient estimators on named unrolled systems.

Thin wrappers over :func:`metalab.lopt.training.estimate_on_system`; torch is imported
inside the command bodies so ``metalab --help`` stays fast.
"""

from __future__ import annotations

import math

import click

from metalab.cli.options import FINITE_FLOAT
from metalab.core.errors import ConfigError

__all__ = ["lopt"]


@click.group(name="lopt")
def lopt() -> None:
    """Learned optimizers and ES/PES gradient estimators."""


@lopt.command(name="list")
def list_components() -> None:
    """List the registered estimators and unrolled systems."""
    from metalab.lopt.registry import estimator_names, system_names

    click.echo("estimators: " + ", ".join(estimator_names()))
    click.echo("systems:    " + ", ".join(system_names()))


def _parse_theta(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--theta must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--theta must be finite numbers, got {text!r}")
    return values


@lopt.command()
@click.option(
    "--system",
    "system_name",
    default="toy-regression",
    show_default=True,
    help="Unrolled system (see `metalab lopt list`).",
)
@click.option(
    "--estimator",
    "estimator_name",
    default="pes",
    show_default=True,
    help="Gradient estimator (see `metalab lopt list`).",
)
@click.option(
    "--theta", default=None, help="Meta-parameters, comma-separated (default: the system's θ₀)."
)
@click.option("--pairs", type=int, default=None, help="Antithetic pairs (ES estimators).")
@click.option(
    "--sigma", type=FINITE_FLOAT, default=None, help="Perturbation scale σ (ES estimators)."
)
@click.option("--truncation", "-K", type=int, default=None, help="Window length K.")
@click.option("--streams", type=int, default=None, help="Independent streams (TBPTT/BPTT).")
@click.option("--repeats", type=int, default=20, show_default=True, help="Independent samples.")
@click.option(
    "--windows", type=int, default=None, help="Estimates summed per sample (default: one episode)."
)
@click.option("--show", type=int, default=10, show_default=True, help="Coordinates to print.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda[:N]")
def estimate(
    system_name: str,
    estimator_name: str,
    theta: str | None,
    pairs: int | None,
    sigma: float | None,
    truncation: int | None,
    streams: int | None,
    repeats: int,
    windows: int | None,
    show: int,
    seed: int,
    device: str,
) -> None:
    """Estimate ∇θ of a system's meta-loss; print the mean ± standard error per coordinate."""
    from metalab.lopt.training import estimate_on_system

    if show < 0:
        raise ConfigError(f"--show must be >= 0, got {show}")
    report = estimate_on_system(
        system_name,
        estimator_name,
        theta=_parse_theta(theta),
        repeats=repeats,
        windows=windows,
        seed=seed,
        device=device,
        pairs=pairs,
        sigma=sigma,
        truncation=truncation,
        streams=streams,
    )
    values = report.theta.tolist()
    point = ", ".join(f"{v:.4g}" for v in values[:8]) + (", …" if len(values) > 8 else "")
    click.echo(
        f"{report.estimator} on {report.system} at θ = ({point}) [d = {len(values)}]: gradient of "
        f"the loss over {report.steps_per_sample} steps, {repeats} samples of "
        f"{report.windows} estimate(s)"
    )
    stats = report.stats
    rows = list(zip(stats.mean.tolist(), stats.stderr.tolist(), strict=True))
    for i, (mean, err) in enumerate(rows[:show]):
        click.echo(f"  dθ[{i}] = {mean: .6g} ± {err:.3g}")
    if len(rows) > show:
        norm = float(stats.mean.norm())
        click.echo(f"  … {len(rows) - show} more coordinates; ‖mean‖ = {norm:.6g}")


from metalab.lopt.cli_meta_train import meta_train  # noqa: E402

lopt.add_command(meta_train)

from metalab.lopt.cli_evaluate import evaluate  # noqa: E402

lopt.add_command(evaluate)
