"""Grow a saved model file: the library behind ``metalab net2net grow``."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from metalab.core.errors import ConfigError, MetalabError, first_line
from metalab.net2net.arch import load_model, save_model
from metalab.net2net.graph import plan_deepen, plan_widen
from metalab.net2net.ops import NoiseKind
from metalab.net2net.report import GrowthReport, check_on_example, eval_mode
from metalab.net2net.transforms import deepen, widen

__all__ = ["GrowOutcome", "LayerOptions", "grow_file", "grow_model", "layer_options", "parse_widen"]


@dataclass
class GrowOutcome:
    """The grown model, one report per step, and the measured preservation errors."""

    model: nn.Module
    reports: list[GrowthReport] = field(default_factory=list)
    error: float = 0.0
    error_float64: float = 0.0
    samples: int = 0


@dataclass(frozen=True)
class LayerOptions:
    """A Linear/Conv2d layer and whether ``widen``/``deepen`` accept it (``None``) or why not."""

    name: str
    kind: str
    widen: str | None
    deepen: str | None


def layer_options(model: nn.Module) -> list[LayerOptions]:
    """Each Linear/Conv2d of ``model`` with the reason each growth refuses it, if any.

    Listing every such layer as growable would send users to the output layer (or one
    before a residual sum), which both operations then refuse; asking the planners is the
    only way to know.
    """
    options = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            kind = f"Linear {module.in_features} -> {module.out_features}"
        elif isinstance(module, nn.Conv2d):
            kind = f"Conv2d {module.in_channels} -> {module.out_channels} channels"
        else:
            continue
        options.append(LayerOptions(name, kind, _widen_refusal(model, name), _refusal(model, name)))
    return options


def _widen_refusal(model: nn.Module, name: str) -> str | None:
    try:
        plan = plan_widen(model, name)
    except MetalabError as exc:
        return first_line(exc)
    return None if plan.consumers else "its units reach no Linear/Conv2d layer to rewire"


def _refusal(model: nn.Module, name: str) -> str | None:
    try:
        plan_deepen(model, name)
    except MetalabError as exc:
        return first_line(exc)
    return None


def parse_widen(text: str) -> tuple[str, int]:
    """``"LAYER=WIDTH"`` -> ``(layer, width)``.

    Raises:
        ConfigError: not of that form, or a width that is not a positive integer.
    """
    layer, sep, width = text.partition("=")
    if not sep or not layer.strip() or not width.strip().isdigit() or int(width) < 1:
        raise ConfigError(
            f"--widen expects LAYER=WIDTH with a positive integer width, got {text!r}"
        )
    return layer.strip(), int(width)


def grow_model(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    widen_to: Sequence[tuple[str, int]] = (),
    deepen_after: Sequence[str] = (),
    noise: float = 0.0,
    noise_kind: NoiseKind = "gaussian",
    generator: torch.Generator,
    samples: int = 64,
) -> GrowOutcome:
    """Apply the widenings (in order), then the deepenings, and measure preservation.

    ``error`` is ``max |f(x) - f'(x)|`` in eval mode over ``samples`` standard-normal inputs
    of ``input_shape`` for the grown model itself (its dtype's rounding included, e.g. of
    the division by replication counts in float32); ``error_float64`` repeats the same growth
    (same mapping, same noise stream) on a float64 copy, which isolates what the
    transformation itself changes. A grown model that fails on the inputs, or returns
    outputs of other shapes, is refused (the traced graph has no shapes, so a reshape that
    widen cannot follow may only show here).

    Raises:
        ConfigError: nothing to do, or the model does not run on inputs of ``input_shape``.
        GrowthRefused: a growth the model does not allow, or one that breaks it.
    """
    if not widen_to and not deepen_after:
        raise ConfigError(
            "nothing to do: give at least one --widen LAYER=WIDTH or --deepen-after LAYER"
        )
    start_state = generator.get_state()
    grown, reports = _apply(model, widen_to, deepen_after, noise, noise_kind, generator)
    param = next(model.parameters())
    inputs = torch.randn((samples, *input_shape), generator=generator, device=generator.device)
    _check_runs(model, inputs.to(param.device, param.dtype), input_shape)
    error = _measure(model, grown, inputs.to(param.device, param.dtype), reports)
    replay = torch.Generator(device=generator.device)
    replay.set_state(start_state)
    model64 = copy.deepcopy(model).double()
    grown64, _ = _apply(model64, widen_to, deepen_after, noise, noise_kind, replay)
    error64 = _measure(model64, grown64, inputs.to(param.device, torch.float64), reports)
    return GrowOutcome(grown, reports, error, error64, samples)


@torch.no_grad()
def _check_runs(model: nn.Module, inputs: torch.Tensor, input_shape: Sequence[int]) -> None:
    """Name a wrong ``input_shape`` rather than fail inside the model's forward."""
    try:
        with eval_mode(model):
            model(inputs)
    except Exception as exc:  # whatever the model's forward raises on a wrong shape
        raise ConfigError(
            f"the model does not run on inputs of shape {list(input_shape)} (plus a batch "
            f"axis): {first_line(exc)}; is the input_shape it was saved with right?"
        ) from None


def _measure(
    model: nn.Module, grown: nn.Module, inputs: torch.Tensor, reports: Sequence[GrowthReport]
) -> float:
    """The preservation error, or a one-line refusal when the grown model breaks on ``inputs``."""
    steps = "; ".join(r.summary().partition(";")[0] for r in reports)
    return check_on_example(
        model,
        grown,
        inputs,
        what=f"growing the model ({steps})",
        exact=False,
        hint="; widen and deepen trace the model without shapes, so this was not foreseen",
        called=f"{len(inputs)} random inputs",
    )


def _apply(
    model: nn.Module,
    widen_to: Sequence[tuple[str, int]],
    deepen_after: Sequence[str],
    noise: float,
    noise_kind: NoiseKind,
    generator: torch.Generator,
) -> tuple[nn.Module, list[GrowthReport]]:
    grown, reports = model, []
    for layer, width in widen_to:
        grown, report = widen(
            grown, layer, width, noise=noise, noise_kind=noise_kind, generator=generator
        )
        reports.append(report)
    for layer in deepen_after:
        grown, report = deepen(grown, layer, noise=noise, generator=generator)
        reports.append(report)
    return grown, reports


def grow_file(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    widen_to: Sequence[tuple[str, int]] = (),
    deepen_after: Sequence[str] = (),
    noise: float = 0.0,
    noise_kind: NoiseKind = "gaussian",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> GrowOutcome:
    """Load a net2net model file, grow it, save the result to ``out``; see :func:`grow_model`."""
    model, shape = load_model(checkpoint, map_location=device)
    generator = torch.Generator().manual_seed(seed)
    outcome = grow_model(
        model,
        shape,
        widen_to=widen_to,
        deepen_after=deepen_after,
        noise=noise,
        noise_kind=noise_kind,
        generator=generator,
    )
    save_model(out, outcome.model, input_shape=shape)
    return outcome
