"""scikit-learn digits split as in ``papers/nas.md``: 1 000 train / 400 validation / 397 test.

The split is a fixed permutation (``split_seed``) of the 1 797 bundled 8×8 images, scaled
to ``[0, 1]``. DARTS search trains weights on ``train`` and α on ``val`` (the bilevel
split of Liu et al. 2019, Sec. 2.3); the ground-truth table reports ``test`` accuracy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.core.seeding import make_generator

__all__ = ["DigitsSplits", "load_digits_splits", "seeded_init"]

Split = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class DigitsSplits:
    """``(images [N, 1, 8, 8], labels [N])`` for train, validation and test."""

    train: Split
    val: Split
    test: Split
    num_classes: int = 10


def load_digits_splits(
    *,
    split_seed: int = 0,
    n_train: int = 1000,
    n_val: int = 400,
    device: torch.device | str = "cpu",
) -> DigitsSplits:
    """Load sklearn's digits and split them with a fixed seeded permutation.

    Raises:
        ConfigError: the train and validation sizes leave no test examples.
    """
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    total = len(labels)
    if n_train < 1 or n_val < 1 or n_train + n_val >= total:
        raise ConfigError(
            f"need n_train, n_val >= 1 and n_train + n_val < {total}, got {n_train}, {n_val}"
        )
    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(labels, dtype=torch.long)
    order = torch.randperm(total, generator=make_generator(split_seed, "nas/digits-split"))
    x, y = x[order].to(device), y[order].to(device)
    cut = (n_train, n_train + n_val)
    return DigitsSplits(
        train=(x[: cut[0]], y[: cut[0]]),
        val=(x[cut[0] : cut[1]], y[cut[0] : cut[1]]),
        test=(x[cut[1] :], y[cut[1] :]),
    )


@contextlib.contextmanager
def seeded_init(generator: torch.Generator) -> Iterator[None]:
    """Seed torch's global RNG (used by ``nn.Module`` init) from ``generator`` in a block.

    The caller's global RNG state is restored afterwards.
    """
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
