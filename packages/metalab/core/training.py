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

__all__ = ["EpochRecord", "accuracy", "evaluate_loss", "train_supervised"]

Evaluate = Callable[[nn.Module], dict[str, float]]


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
            loss = loss_fn(model(inputs[index]), targets[index])
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
