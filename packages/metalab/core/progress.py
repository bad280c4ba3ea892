"""Progress bars that show on a terminal and stay quiet in logs, CI and pipes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["PROGRESS_ENV", "progress", "progress_enabled"]

PROGRESS_ENV = "METALAB_PROGRESS"
T = TypeVar("T")


def progress_enabled() -> bool:
    """True when stderr is a terminal, unless ``METALAB_PROGRESS`` is ``0`` or ``1``."""
    forced = os.environ.get(PROGRESS_ENV)
    if forced in {"0", "1"}:
        return forced == "1"
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T], *, desc: str = "", total: int | None = None, **kwargs: Any
) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when :func:`progress_enabled`."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not progress_enabled(),
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )
