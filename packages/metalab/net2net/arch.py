"""A safe checkpoint format for growable models: JSON architecture + state_dict.

A model file never holds pickled modules. It is a ``torch.save`` of a plain dict::

    {"format": "metalab.net2net.model", "version": 1,
     "architecture": "<JSON text>", "input_shape": [C, H, W] or [F],
     "state_dict": {name: tensor}}

and loads with ``torch.load(weights_only=True)``. The architecture is a tree of nodes
``{"type": "Linear", "args": {"in_features": 64, ...}}``, ``{"type": "Sequential",
"children": [[name, node], ...]}`` or ``{"type": "Residual", "body": node, "shortcut": node}``
over a whitelist of torch.nn layers, so a file can only ever rebuild those layers. Grown
models (which nest ``Sequential`` blocks) are described the same way.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from metalab.core.checkpoint import load_checkpoint, save_checkpoint
from metalab.core.errors import ConfigError, MetalabError, UnknownNameError, first_line
from metalab.net2net.models import Residual

__all__ = ["FORMAT", "build_model", "describe_model", "load_model", "save_model"]

FORMAT = "metalab.net2net.model"
_VERSION = 1


def _attrs(*names: str) -> Callable[[nn.Module], dict[str, Any]]:
    def read(module: nn.Module) -> dict[str, Any]:
        values = {n: getattr(module, n) for n in names}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    return read


def _with_bias(*names: str) -> Callable[[nn.Module], dict[str, Any]]:
    base = _attrs(*names)
    return lambda module: {**base(module), "bias": getattr(module, "bias", None) is not None}


_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
_LAYERS: dict[str, tuple[type[nn.Module], Callable[[nn.Module], dict[str, Any]]]] = {
    "Linear": (nn.Linear, _with_bias("in_features", "out_features")),
    "Conv2d": (
        nn.Conv2d,
        _with_bias(
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "padding_mode",
        ),
    ),
    "BatchNorm1d": (nn.BatchNorm1d, _attrs(*_BN)),
    "BatchNorm2d": (nn.BatchNorm2d, _attrs(*_BN)),
    "LayerNorm": (nn.LayerNorm, _with_bias("normalized_shape", "eps", "elementwise_affine")),
    "ReLU": (nn.ReLU, _attrs("inplace")),
    "ReLU6": (nn.ReLU6, _attrs("inplace")),
    "Hardtanh": (nn.Hardtanh, _attrs("min_val", "max_val")),
    "Tanh": (nn.Tanh, _attrs()),
    "Sigmoid": (nn.Sigmoid, _attrs()),
    "GELU": (nn.GELU, _attrs("approximate")),
    "LeakyReLU": (nn.LeakyReLU, _attrs("negative_slope")),
    "Identity": (nn.Identity, _attrs()),
    "Flatten": (nn.Flatten, _attrs("start_dim", "end_dim")),
    "Dropout": (nn.Dropout, _attrs("p")),
    "MaxPool2d": (nn.MaxPool2d, _attrs("kernel_size", "stride", "padding")),
    "AvgPool2d": (nn.AvgPool2d, _attrs("kernel_size", "stride", "padding")),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, _attrs("output_size")),
}


def describe_model(model: nn.Module) -> dict[str, Any]:
    """The JSON-able architecture of ``model`` (whitelisted layers, Sequential, Residual).

    Raises:
        MetalabError: a module type outside the whitelist (a custom ``nn.Module`` subclass
            included: its forward is code, which the format never stores).
    """
    if isinstance(model, Residual):
        return {
            "type": "Residual",
            "body": describe_model(model.body),
            "shortcut": describe_model(model.shortcut),
        }
    if type(model) is nn.Sequential:
        return {
            "type": "Sequential",
            "children": [[name, describe_model(child)] for name, child in model.named_children()],
        }
    name = type(model).__name__
    if name not in _LAYERS or type(model) is not _LAYERS[name][0]:
        raise MetalabError(
            f"cannot describe a {name} in the net2net model format: the file format (and so "
            "the `metalab net2net` CLI) holds nn.Sequential models (with Residual blocks) of "
            f"the layers {', '.join(_LAYERS)}; grow a custom module with the Python API "
            "(metalab.net2net.widen / deepen) directly"
        )
    return {"type": name, "args": _LAYERS[name][1](model)}


def build_model(node: Any, *, where: str = "architecture") -> nn.Module:
    """Rebuild the module tree described by :func:`describe_model` (fresh parameters).

    Raises:
        ConfigError: a malformed node or impossible arguments.
        UnknownNameError: a layer type outside the whitelist.
    """
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise ConfigError(f"{where} must be an object with a 'type' string")
    kind = node["type"]
    if kind == "Sequential":
        children = node.get("children")
        if not isinstance(children, list) or not all(
            isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) for c in children
        ):
            raise ConfigError(f"{where}.children must be a list of [name, node] pairs")
        return nn.Sequential(
            OrderedDict(
                (name, build_model(child, where=f"{where}.{name}")) for name, child in children
            )
        )
    if kind == "Residual":
        return Residual(
            build_model(node.get("body"), where=f"{where}.body"),
            build_model(node.get("shortcut"), where=f"{where}.shortcut"),
        )
    if kind not in _LAYERS:
        raise UnknownNameError("layer type", kind, [*_LAYERS, "Sequential", "Residual"])
    args = node.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"{where}.args must be an object")
    try:
        return _LAYERS[kind][0](**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot build {kind}({args}): {exc}") from None


def save_model(
    path: str | os.PathLike[str], model: nn.Module, *, input_shape: Sequence[int]
) -> None:
    """Save ``model`` in the net2net model format (atomic write).

    Args:
        path: the file to write.
        model: a model made of whitelisted layers (see :func:`describe_model`).
        input_shape: shape of one input without the batch axis (used to check growth).

    Raises:
        ConfigError: the arguments are swapped (``save_model(model, path)``) or ``model`` is
            not an ``nn.Module``.
        MetalabError: a layer outside the whitelist.
    """
    _check_save_arguments(path, model)
    state = {
        "format": FORMAT,
        "version": _VERSION,
        "architecture": json.dumps(describe_model(model)),
        "input_shape": [int(s) for s in input_shape],
        "state_dict": dict(model.state_dict()),
    }
    save_checkpoint(path, state)


def _check_save_arguments(path: object, model: object) -> None:
    """Name the swapped-argument mistake instead of failing to describe a path as a layer."""
    if isinstance(path, nn.Module) and isinstance(model, (str, os.PathLike)):
        raise ConfigError(
            "save_model got the model first and the path second; the order is "
            "save_model(path, model, input_shape=...)"
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"save_model needs an nn.Module as model, got a {type(model).__name__}")


def load_model(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, list[int]]:
    """Load a model file written by :func:`save_model`; return ``(model, input_shape)``.

    Raises:
        MetalabError: not such a file, a malformed architecture, or weights that do not fit.
    """
    state = load_checkpoint(path, map_location=map_location)
    where = os.fspath(path)
    if state.get("format") != FORMAT or state.get("version") != _VERSION:
        raise MetalabError(f"{where} is not a {FORMAT} file (version {_VERSION})")
    try:
        architecture = json.loads(state["architecture"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise MetalabError(f"{where}: unreadable architecture ({exc})") from None
    shape = state.get("input_shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise MetalabError(f"{where}: input_shape must be a list of positive ints")
    model = build_model(architecture, where=f"{where}: architecture")
    weights = state.get("state_dict")
    if not isinstance(weights, dict):
        raise MetalabError(f"{where}: missing state_dict")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = first_line(exc)
        raise MetalabError(f"{where}: weights do not fit the architecture ({first})") from None
    return model.to(map_location), shape
