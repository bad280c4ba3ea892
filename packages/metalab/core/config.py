"""Typed configs built from TOML tables: unknown keys and wrong types are errors.

gin-style string bindings fail silently on a misspelling; a dataclass built by
:func:`build_config` names the bad key, lists the valid ones and checks each value's type.
Numbers must be finite, and a field declared with :func:`bounded` (or one of its
shorthands) also checks its range, so ``--set outer_steps=0`` is refused before a run
starts instead of failing (or silently doing nothing) inside it.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from metalab.core.errors import ConfigError, closest_names

__all__ = [
    "Bounds",
    "at_least",
    "bounded",
    "build_config",
    "config_to_dict",
    "fraction",
    "non_negative",
    "nonempty",
    "positive",
]

T = TypeVar("T")
_BOUNDS_KEY = "metalab.bounds"


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range a numeric field (or every number in a list field) must lie in.

    ``nonempty`` asks a list or string field for at least one item.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    nonempty: bool = False

    def check(self, value: Any, where: str) -> None:
        """Raise :class:`ConfigError` naming ``where`` when ``value`` is out of range."""
        if self.nonempty and isinstance(value, (list, tuple, str)) and len(value) == 0:
            raise ConfigError(f"{where} must not be empty")
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.check(item, f"{where}[{i}]")
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        for limit, holds, words in (
            (self.ge, operator.ge, ">="),
            (self.gt, operator.gt, ">"),
            (self.le, operator.le, "<="),
            (self.lt, operator.lt, "<"),
        ):
            if limit is not None and not holds(value, limit):
                raise ConfigError(f"{where} must be {words} {_number(limit)}, got {value!r}")


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    nonempty: bool = False,
) -> Any:
    """A dataclass field whose value :func:`build_config` checks against these bounds."""
    bounds = Bounds(ge=ge, gt=gt, le=le, lt=lt, nonempty=nonempty)
    metadata = {_BOUNDS_KEY: bounds}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def positive(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that must be > 0 (a rate, a scale, a count that cannot be zero)."""
    return bounded(default, gt=0, **kwargs)


def at_least(minimum: float, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that must be >= ``minimum`` (``at_least(1, 100)``: a count of at least 1)."""
    return bounded(default, ge=minimum, **kwargs)


def non_negative(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that must be >= 0 (a noise level, a weight decay, an optional count)."""
    return bounded(default, ge=0, **kwargs)


def fraction(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field in [0, 1] (a momentum, a share, a probability)."""
    return bounded(default, ge=0, le=1, **kwargs)


def nonempty(default_factory: Callable[[], Any], **kwargs: Any) -> Any:
    """A list field that needs at least one item (bounds, if given, apply to each item)."""
    return bounded(default_factory=default_factory, nonempty=True, **kwargs)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def build_config(cls: type[T], values: Mapping[str, Any], *, where: str = "params") -> T:
    """Instantiate dataclass ``cls`` from ``values``, checking keys and types.

    Ints are accepted where floats are expected; nested dataclasses are built from nested
    tables; ``Literal`` fields accept only their listed values.

    Raises:
        ConfigError: an unknown or missing key, or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in fields:
            near = closest_names(key, fields)
            hint = (
                f"; did you mean {', '.join(near)}?"
                if near
                else f"; valid keys: {', '.join(fields)}"
            )
            raise ConfigError(f"unknown key {where}.{key}{hint}")
    kwargs = {}
    for name, field in fields.items():
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], f"{where}.{name}")
            bounds = field.metadata.get(_BOUNDS_KEY)
            if bounds is not None:
                bounds.check(kwargs[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {where}.{name}")
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (for ``config.json``)."""
    return dataclasses.asdict(config)


def _coerce(value: Any, hint: Any, where: str) -> Any:  # noqa: C901 - one branch per type form
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        for option in args:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise _type_error(value, hint, where)
    if hint is type(None):
        if value is None:
            return None
        raise _type_error(value, hint, where)
    if origin is typing.Literal:
        # Compare types too: True == 1, but a bool is not a valid value of Literal[0, 1].
        if any(value == option and type(value) is type(option) for option in args):
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise _type_error(value, hint, where)
        return build_config(hint, value, where=where)
    if origin in (list, tuple) or hint in (list, tuple):
        return _coerce_sequence(value, hint, where)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _type_error(value, hint, where)
        return dict(value)
    return _coerce_scalar(value, hint, where)


def _coerce_sequence(value: Any, hint: Any, where: str) -> Any:
    """``list[T]``, ``tuple[T, ...]`` (any length) or ``tuple[A, B]`` (one type per position)."""
    if not isinstance(value, (list, tuple)):
        raise _type_error(value, hint, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    is_tuple = origin is tuple or hint is tuple
    if is_tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}: {value!r}")
        item_types = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    pairs = enumerate(zip(value, item_types, strict=True))
    items = [_coerce(v, t, f"{where}[{i}]") for i, (v, t) in pairs]
    return tuple(items) if is_tuple else items


def _coerce_scalar(value: Any, hint: Any, where: str) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    if hint not in (float, int, bool, str) and isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _type_error(value, hint, where)


def _type_error(value: Any, hint: Any, where: str) -> ConfigError:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return ConfigError(f"{where} must be {name}, got {type(value).__name__} {value!r}")
