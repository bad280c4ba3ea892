"""``metalab net2net``: grow a saved model wider or deeper and print the preservation error.

Model files are the safe net2net format (:mod:`metalab.net2net.arch`): a JSON architecture
and a state_dict, loaded with ``weights_only=True``; nothing is unpickled.
"""

from __future__ import annotations

import click

from metalab.cli.options import FINITE_FLOAT

__all__ = ["net2net"]

_DEVICE_HELP = "auto (CUDA when present) | cpu | cuda | cuda:N"


@click.group(name="net2net")
def net2net() -> None:
    """Grow trained networks wider (Net2WiderNet) or deeper (Net2DeeperNet), function preserved."""


@net2net.command("grow")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--widen",
    "widen_specs",
    multiple=True,
    metavar="LAYER=WIDTH",
    help="Widen a Linear/Conv2d layer to WIDTH units (repeatable; applied in order).",
)
@click.option(
    "--deepen-after",
    "deepen_after",
    multiple=True,
    metavar="LAYER",
    help="Insert an identity layer after LAYER's ReLU (repeatable; after the widenings).",
)
@click.option(
    "--noise",
    type=FINITE_FLOAT,
    default=0.0,
    show_default=True,
    help="Symmetry-breaking noise, relative to the std of the rewired weights.",
)
@click.option(
    "--noise-kind",
    type=click.Choice(["gaussian", "zero_sum"]),
    default="gaussian",
    show_default=True,
    help="zero_sum keeps the function exact while breaking symmetry.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the mapping and noise."
)
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="File to write.")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
def grow(
    checkpoint: str,
    widen_specs: tuple[str, ...],
    deepen_after: tuple[str, ...],
    noise: float,
    noise_kind: str,
    seed: int,
    out: str,
    device: str,
) -> None:
    """Grow the model in CHECKPOINT and write it to --out, printing the preservation error.

    CHECKPOINT is a net2net model file (written by metalab.net2net.save_model): a JSON
    architecture of whitelisted layers plus a state_dict, read with weights_only=True, so
    no code is ever unpickled. Widenings are applied first, in order, then deepenings.
    """
    from metalab.core.device import resolve_device
    from metalab.net2net.grow import grow_file, parse_widen

    resolved = resolve_device(device)
    outcome = grow_file(
        checkpoint,
        out,
        widen_to=[parse_widen(s) for s in widen_specs],
        deepen_after=deepen_after,
        noise=noise,
        noise_kind=noise_kind,  # type: ignore[arg-type]  # click.Choice checked it
        seed=seed,
        device=resolved,
    )
    for report in outcome.reports:
        click.echo(report.summary())
    click.echo(
        f"preservation error (max |f(x) - f'(x)|, eval mode, {outcome.samples} random inputs): "
        f"{outcome.error:.3e} ({next(outcome.model.parameters()).dtype}), "
        f"{outcome.error_float64:.3e} (same growth in float64)"
    )
    click.echo(f"wrote {out}")


@net2net.command("describe")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
def describe(checkpoint: str) -> None:
    """List a model file's layers and which of --widen / --deepen-after accepts each.

    A layer neither accepts (the output layer, one before a residual sum) says why.
    """
    from metalab.net2net.arch import load_model
    from metalab.net2net.grow import layer_options

    model, shape = load_model(checkpoint)
    click.echo(f"input shape {shape}; {sum(p.numel() for p in model.parameters())} parameters")
    for layer in layer_options(model):
        accepted = [
            flag
            for flag, refusal in (("--widen", layer.widen), ("--deepen-after", layer.deepen))
            if refusal is None
        ]
        if accepted:
            click.echo(f"  {layer.name}: {layer.kind}; accepts {', '.join(accepted)}")
        else:
            why = str(layer.widen).partition(";")[0]
            click.echo(f"  {layer.name}: {layer.kind}; accepts neither ({why})")
