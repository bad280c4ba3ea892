"""A small supervised training loop for the subsystems that train ordinary networks.

Data lives on the device as tensors (the datasets here are small), batches are drawn by a
permutation from an explicit generator, and an optional evaluation callback runs after
every epoch (and before the first one, to see what an initialization is worth).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.core.errors import ConfigError

__all__ = ["EpochRecord", "accuracy", "evaluate_loss", "random_shift", "train_supervised"]

Evaluate = Callable[[nn.Module], dict[str, float]]
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class EpochRecord:
    """What one epoch produced: mean training loss and the evaluation callback's metrics."""

    epoch: int
    train_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, targets: Tensor, *, batch_size: int = 4096) -> float:
    """Classification accuracy of ``model`` in eval mode (restores its previous mode)."""
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(inputs[i : i + batch_size]).argmax(-1) == targets[i : i + batch_size]).sum())
        for i in range(0, len(inputs), batch_size)
    )
    model.train(was_training)
    return correct / max(len(inputs), 1)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    batch_size: int = 4096,
) -> float:
    """Mean loss of ``model`` in eval mode over a dataset (restores its previous mode)."""
    was_training = model.training
    model.eval()
    total = sum(
        float(loss_fn(model(inputs[i : i + batch_size]), targets[i : i + batch_size]))
        * len(inputs[i : i + batch_size])
        for i in range(0, len(inputs), batch_size)
    )
    model.train(was_training)
    return total / max(len(inputs), 1)


def random_shift(images: Tensor, pixels: int, generator: torch.Generator) -> Tensor:
    """Translate every image of ``[N, C, H, W]`` by its own random offset of up to ``pixels``.

    Edges are replicated into the uncovered border (the background of digit images), so
    the batch keeps its shape. Offsets are drawn from ``generator`` (the run's data stream),
    on the generator's device, so a run stays reproducible.

    Raises:
        ConfigError: ``pixels`` negative or not smaller than the image, or not ``[N, C, H, W]``.
    """
    if images.dim() != 4 or not 0 <= pixels < min(images.shape[-2:]):
        raise ConfigError(
            f"random_shift needs [N, C, H, W] images and 0 <= pixels < their size, "
            f"got shape {tuple(images.shape)} and pixels={pixels}"
        )
    if pixels == 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    offsets = torch.randint(
        0, 2 * pixels + 1, (2, n), generator=generator, device=generator.device
    ).to(images.device)
    rows = (offsets[0, :, None] + torch.arange(height, device=images.device))[:, :, None]
    cols = (offsets[1, :, None] + torch.arange(width, device=images.device))[:, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def train_supervised(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor],
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    evaluate: Evaluate | None = None,
    evaluate_at_start: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    start_epoch: int = 0,
    augment: Augment | None = None,
) -> list[EpochRecord]:
    """Train ``model`` for ``epochs`` epochs of minibatch steps; return one record per epoch.

    Args:
        model: the network, already on the data's device.
        train_data: ``(inputs, targets)`` tensors on the model's device.
        optimizer: any ``torch.optim`` optimizer over the model's parameters.
        epochs: number of passes over the data (counting from ``start_epoch``).
        batch_size: examples per step; the last, smaller batch is kept.
        generator: the run's data stream (shuffling); CPU generators work with any device.
        loss_fn: ``loss_fn(outputs, targets)`` reducing to a scalar.
        evaluate: called after each epoch with the model (in eval mode) for metrics.
        evaluate_at_start: also record an epoch-0 entry before any training step.
        on_epoch: called with each record (log it, checkpoint, stop early by raising).
        start_epoch: number of epochs already done (when resuming from a checkpoint).
        augment: ``augment(batch_inputs, generator)`` applied to every training batch (e.g.
            :func:`random_shift`); evaluation always sees the unaltered data.
    """
    if epochs < 0 or batch_size < 1:
        raise ConfigError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    inputs, targets = train_data
    history: list[EpochRecord] = []
    if evaluate_at_start and start_epoch == 0:
        history.append(
            _finish(EpochRecord(0, float("nan")), model, evaluate, on_epoch, time.perf_counter())
        )
    for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(inputs), generator=generator, device=generator.device).to(
            inputs.device
        )
        total = torch.zeros((), device=inputs.device)
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            batch = inputs[index] if augment is None else augment(inputs[index], generator)
            loss = loss_fn(model(batch), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)
        record = EpochRecord(epoch, float(total) / max(len(inputs), 1))
        history.append(_finish(record, model, evaluate, on_epoch, started))
    return history


def _finish(
    record: EpochRecord,
    model: nn.Module,
    evaluate: Evaluate | None,
    on_epoch: Callable[[EpochRecord], None] | None,
    started: float,
) -> EpochRecord:
    if evaluate is not None:
        was_training = model.training
        model.eval()
        record.metrics = dict(evaluate(model))
        model.train(was_training)
    record.seconds = time.perf_counter() - started
    if on_epoch is not None:
        on_epoch(record)
    return record
