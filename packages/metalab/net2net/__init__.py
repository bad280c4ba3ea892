"""Net2Net: grow trained networks wider and deeper without changing what they compute.

Chen, Goodfellow & Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer",
ICLR 2016. :func:`widen` (Net2WiderNet, Eqs. 6-8) and :func:`deepen` (Net2DeeperNet,
Sec. 3.2) work on ordinary ``nn.Module``s (Linear, Conv2d, BatchNorm/LayerNorm between,
flatten into a Linear head, layers inside residual blocks) and return the grown model with
a :class:`GrowthReport`; :func:`transfer_optimizer` carries or resets optimizer state.

    >>> import torch
    >>> from metalab.net2net import mlp, widen, deepen, preservation_error
    >>> teacher = mlp(8, [4], 3)
    >>> student, report = widen(teacher, "fc1", 10, generator=torch.Generator().manual_seed(0))
    >>> student, _ = deepen(student, after="fc1")
    >>> preservation_error(teacher, student, torch.randn(5, 8)) < 1e-5
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalab.core.lazy import lazy_exports

# module -> names; imported on first use so that `metalab net2net --help` does not import torch
_EXPORTS = {
    "arch": ["build_model", "describe_model", "load_model", "save_model"],
    "graph": ["GrowthRefused"],
    "grow": [
        "GrowOutcome",
        "LayerOptions",
        "grow_file",
        "grow_model",
        "layer_options",
        "parse_widen",
    ],
    "models": ["Residual", "mlp", "residual_cnn", "small_cnn"],
    "ops": [
        "identity_batchnorm",
        "identity_conv2d",
        "identity_linear",
        "replica_counts",
        "split_incoming",
        "wider_mapping",
    ],
    "optim": ["transfer_optimizer"],
    "report": ["GrowthReport", "ParamChange", "preservation_error"],
    "transforms": ["deepen", "widen"],
}

__all__ = [
    "GrowOutcome",
    "GrowthRefused",
    "GrowthReport",
    "LayerOptions",
    "ParamChange",
    "Residual",
    "build_model",
    "deepen",
    "describe_model",
    "grow_file",
    "grow_model",
    "identity_batchnorm",
    "identity_conv2d",
    "identity_linear",
    "layer_options",
    "load_model",
    "mlp",
    "parse_widen",
    "preservation_error",
    "replica_counts",
    "residual_cnn",
    "save_model",
    "small_cnn",
    "split_incoming",
    "transfer_optimizer",
    "widen",
    "wider_mapping",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.net2net.arch import build_model, describe_model, load_model, save_model
    from metalab.net2net.graph import GrowthRefused
    from metalab.net2net.grow import (
        GrowOutcome,
        LayerOptions,
        grow_file,
        grow_model,
        layer_options,
        parse_widen,
    )
    from metalab.net2net.models import Residual, mlp, residual_cnn, small_cnn
    from metalab.net2net.ops import (
        identity_batchnorm,
        identity_conv2d,
        identity_linear,
        replica_counts,
        split_incoming,
        wider_mapping,
    )
    from metalab.net2net.optim import transfer_optimizer
    from metalab.net2net.report import GrowthReport, ParamChange, preservation_error
    from metalab.net2net.transforms import deepen, widen
