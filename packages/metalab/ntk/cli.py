"""``metalab ntk ...``: thin commands over :mod:`metalab.ntk` (torch imported in bodies)."""

from __future__ import annotations

import click

from metalab.cli.options import FINITE_FLOAT

__all__ = ["ntk"]


@click.group(name="ntk")
def ntk() -> None:
    """Averaged SGD in the NTK regime (Nitanda & Suzuki 2021): spectra and rates."""


@ntk.command("spectrum")
@click.option(
    "--activation", default="swish", show_default=True, help="relu, swish, tanh or sigmoid."
)
@click.option(
    "--dim",
    "dim",
    type=int,
    default=2,
    show_default=True,
    help="Input dimension d (data on S^{d-1}).",
)
@click.option(
    "--sharpness", type=FINITE_FLOAT, default=None, help="Swish sharpness s (default 20)."
)
@click.option("--width", type=int, default=4096, show_default=True, help="Network width M.")
@click.option(
    "--points",
    type=int,
    default=1000,
    show_default=True,
    help="Number n of sample points for the Gram matrix.",
)
@click.option(
    "--top",
    type=int,
    default=None,
    help="How many of the largest eigenvalues to print.  [20, at most --points]",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
def spectrum(
    activation: str,
    dim: int,
    sharpness: float | None,
    width: int,
    points: int,
    top: int | None,
    seed: int,
    device: str,
) -> None:
    """Print Funk–Hecke (predicted) vs empirical-NTK (measured) eigenvalues."""
    from metalab.core.device import resolve_device
    from metalab.core.errors import ConfigError
    from metalab.core.seeding import make_generator
    from metalab.ntk.activations import make_activation
    from metalab.ntk.empirical import check_spectrum_inputs, compare_spectra

    check_spectrum_inputs(dim=dim, points=points)
    top = min(20, points) if top is None else top
    if top < 1 or top > points:
        raise ConfigError(f"--top must be between 1 and --points ({points}), got {top}")
    act = make_activation(activation, sharpness=sharpness)
    cmp = compare_spectra(
        act,
        dim=dim,
        width=width,
        points=points,
        generator=make_generator(seed, "ntk-spectrum"),
        device=resolve_device(device),
    )
    click.echo(
        f"NTK of {act.describe()} on S^{dim - 1}: width M={width}, n={points} points; "
        f"β = d/(d-1) = {cmp.spectrum.beta:.3f}"
    )
    click.echo(f"{'i':>4}  {'predicted':>12}  {'measured':>12}  {'rel.err':>8}")
    errors = cmp.relative_errors(top)
    for i in range(top):
        click.echo(
            f"{i + 1:>4}  {cmp.predicted[i]:12.4e}  {cmp.measured[i]:12.4e}  {errors[i]:8.3f}"
        )
    blocks = cmp.block_errors(5)
    click.echo(
        "per-degree mean relative error (degrees 0..4): " + ", ".join(f"{b:+.3f}" for b in blocks)
    )
    click.echo(f"Gram relative Frobenius error vs κ(xᵀx'): {cmp.gram_error:.4f}")
    high = min(points, 80 if dim == 2 else 150)
    low = min(10, high - 2)
    fit, pred = cmp.decay_fit(low, high), cmp.decay_fit(low, high, measured=False)
    click.echo(
        f"decay over i={low}..{high}: measured {fit.slope:.3f} "
        f"[{fit.ci_low:.3f}, {fit.ci_high:.3f}], Funk–Hecke {pred.slope:.3f}, "
        f"-β = {-cmp.spectrum.beta:.3f}"
    )
