"""Random architectures with real BatchNorm statistics, for the preservation properties."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def give_statistics(model: nn.Module, input_shape: tuple[int, ...], *, seed: int) -> nn.Module:
    """Run a few train-mode batches so BatchNorm running statistics are non-trivial, and
    randomize the affine BatchNorm/LayerNorm parameters; return the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if (
            isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm))
            and module.weight is not None
        ):
            module.weight.copy_(
                torch.rand(module.weight.shape, generator=gen, dtype=module.weight.dtype) + 0.5
            )
            module.bias.copy_(
                torch.randn(module.bias.shape, generator=gen, dtype=module.bias.dtype)
            )
    model.train()
    dtype = next(model.parameters()).dtype
    for _ in range(3):
        x = torch.randn((8, *input_shape), generator=gen, dtype=dtype) * 2 + 0.5
        model(x)
    return model.eval()
