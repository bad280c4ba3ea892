"""Errors that the CLI turns into one ``Error: ...`` line and exit code 2.

Library code raises a :class:`MetalabError` subclass for anything caused by the user's
input (a name, a file, an option); the message is a complete sentence that names the
problem, so the CLI never needs to show a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "DeviceError",
    "ExperimentFileError",
    "MetalabError",
    "UnknownNameError",
    "closest_names",
    "first_line",
]


class MetalabError(Exception):
    """Base class of every error caused by bad input or an impossible request."""


class DeviceError(MetalabError):
    """A device was asked for that this machine does not have."""


class ConfigError(MetalabError, ValueError):
    """A configuration value is unknown, of the wrong type or impossible."""


class ExperimentFileError(MetalabError):
    """An experiment or theory TOML file is malformed; the message names the file and field."""


class UnknownNameError(MetalabError):
    """A name (experiment, entity, component) is not known; the message suggests close ones."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.known = sorted(known)
        suggestion = closest_names(name, self.known)
        hint = f"; did you mean {', '.join(suggestion)}?" if suggestion else ""
        if not self.known:
            hint = f"; there are no {kind}s"
        elif not suggestion:
            hint = f"; known: {', '.join(self.known[:10])}" + (
                " ..." if len(self.known) > 10 else ""
            )
        super().__init__(f"unknown {kind} {name!r}{hint}")

    def __reduce__(self) -> tuple[type, tuple[str, str, list[str]]]:
        """Pickle by the constructor's arguments (errors cross process boundaries)."""
        return type(self), (self.kind, self.name, self.known)


def closest_names(name: str, known: Iterable[str], *, n: int = 3) -> list[str]:
    """Return up to ``n`` known names close to ``name`` (prefix matches first)."""
    known = list(known)
    prefixed = [k for k in known if k.startswith(name) and name]
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    return list(dict.fromkeys(prefixed + close))[:n]


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name when empty), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
