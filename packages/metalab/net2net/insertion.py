"""Putting Net2DeeperNet's new block in place and fitting its BatchNorm to real data.

Kept apart from :mod:`metalab.net2net.transforms` so that module stays about the two
transformations themselves.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from metalab.net2net.ops import identity_batchnorm

__all__ = ["estimate_statistics", "replace_module"]


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """``model.set_submodule(name, module)``, which is newer than the torch 2.2 we support."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@torch.no_grad()
def estimate_statistics(grown: nn.Module, name: str, data: Tensor) -> None:
    """Set the new BatchNorm ``name`` to undo its normalization of ``data``'s batch statistics.

    The features are computed with every module in the mode the user left it (a frozen
    BatchNorm upstream keeps its running statistics; switching the model to train would fit
    the new norm to features the model never computes), on a throw-away copy so no running
    statistic of ``grown`` moves. The new norm's own mode cannot change its input. The layer
    is then exactly the identity in eval mode, and in train mode on batches like ``data``.
    """
    probe = copy.deepcopy(grown)
    captured: list[Tensor] = []
    target = probe.get_submodule(name)
    handle = target.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    try:
        probe(data)
    finally:
        handle.remove()
    norm = grown.get_submodule(name)
    assert isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d))
    fitted = identity_batchnorm(
        norm.num_features,
        conv=isinstance(norm, nn.BatchNorm2d),
        like=norm.weight,
        inputs=captured[0],
        eps=norm.eps,
    )
    norm.load_state_dict(fitted.state_dict())
