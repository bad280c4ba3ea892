"""Click parameter types shared by the subcommands."""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["FINITE_FLOAT", "FiniteFloat"]


class FiniteFloat(click.ParamType):
    """A float that is a real number: ``nan`` and ``inf`` are refused at parse time.

    Every numeric option of the CLI is a rate, a scale, a weight or a time budget, for which
    a non-finite value is always a typo or a mistake; refusing it here gives one line
    naming the option instead of a failure deep inside training.
    """

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """``value`` as a float; a usage error for text, ``nan`` or ``±inf``."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()
