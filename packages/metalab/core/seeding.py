"""Explicit randomness: one seed per run, one independent stream per purpose.

Streams are derived by hashing ``(seed, purpose)``, so adding a draw for one purpose
(say ``"noise"``) never shifts the numbers of another (``"data"``, ``"init"``).
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

__all__ = ["derive_seed", "make_generator", "seed_everything"]


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` that depends only on ``seed`` and ``purpose``."""
    digest = hashlib.sha256(f"{int(seed)}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(
    seed: int, purpose: str, *, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A :class:`torch.Generator` on ``device`` seeded for one purpose of a run."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, purpose))
    return generator


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global RNGs (for third-party code we do not control).

    metalab's own code draws from explicit generators (:func:`make_generator`); this only
    makes library internals (pykeen, scikit-learn shuffles) repeatable too.
    """
    random.seed(seed)
    np.random.seed(derive_seed(seed, "numpy-global") % (2**32))
    torch.manual_seed(derive_seed(seed, "torch-global"))
