"""Experiment and theory-check files: parse, validate, discover, resolve parameters.

A spec is a TOML file under ``experiments/`` (or ``theory/``) with ``name``, ``paper``,
``claim``, ``runner`` (``"module:function"``), ``[params]``, optional ``[quick]`` and
``[smoke]`` overrides, and ``[[checks]]``. Problems are reported as one line naming the
file and the field.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metalab.core.errors import ConfigError, ExperimentFileError, UnknownNameError, closest_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "OPS",
    "Check",
    "Kind",
    "Spec",
    "apply_overrides",
    "discover_specs",
    "find_spec",
    "load_spec",
    "parse_assignment",
    "resolve_params",
    "spec_dirs",
]

Kind = Literal["experiments", "theory"]
OPS = ("approx", "lt", "le", "gt", "ge")
_OP_SYMBOL = {"approx": "≈", "lt": "<", "le": "≤", "gt": ">", "ge": "≥"}
_REQUIRED = ("name", "paper", "claim", "runner", "params", "checks")
_OPTIONAL = (
    "quick",
    "smoke",
    "seed",
    "description",
    "command",
    "runtime_quick",
    "runtime_full",
    "expected",
    "derivation",
)
_DIR_ENV = {"experiments": "METALAB_EXPERIMENTS", "theory": "METALAB_THEORY"}


@dataclass(frozen=True)
class Check:
    """One claim check: ``measured <op> value`` (``approx``: ``|measured − value| ≤ tol``)."""

    metric: str
    op: str
    value: float
    tol: float = 0.0

    def passes(self, measured: Any) -> bool:
        """Whether a measured value satisfies the check; missing or NaN never does."""
        if (
            isinstance(measured, bool)
            or not isinstance(measured, (int, float))
            or math.isnan(measured)
        ):
            return False
        if self.op == "approx":
            return abs(measured - self.value) <= self.tol
        return {
            "lt": measured < self.value,
            "le": measured <= self.value,
            "gt": measured > self.value,
            "ge": measured >= self.value,
        }[self.op]

    def describe(self) -> str:
        """The expectation as text, e.g. ``≈ -0.1667 ± 0.05`` or ``< 0.01``."""
        text = f"{_OP_SYMBOL[self.op]} {self.value:g}"
        return f"{text} ± {self.tol:g}" if self.op == "approx" else text


@dataclass(frozen=True)
class Spec:
    """A parsed experiment or theory-check file."""

    name: str
    paper: str
    claim: str
    runner: str
    params: dict[str, Any]
    checks: tuple[Check, ...]
    path: Path
    kind: Kind = "experiments"
    quick: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def derivation(self) -> Path | None:
        """The markdown derivation beside a theory check (``<stem>.md`` unless named)."""
        name = self.extra.get("derivation") or (
            self.path.stem + ".md" if self.kind == "theory" else None
        )
        return self.path.parent / name if name else None


def spec_dirs(kind: Kind) -> list[Path]:
    """Folders searched for specs, most specific first.

    ``$METALAB_EXPERIMENTS``/``$METALAB_THEORY`` if set, else the copy shipped in the
    installed wheel, else the source checkout's folder.

    Raises:
        ExperimentFileError: the variable names something that is not a folder.
    """
    override = os.environ.get(_DIR_ENV[kind])
    if override:
        folders = [Path(p) for p in override.split(os.pathsep) if p]
        for folder in folders:
            if not folder.is_dir():
                what = "a file" if folder.exists() else "missing"
                raise ExperimentFileError(
                    f"${_DIR_ENV[kind]} names {os.fspath(folder)!r}, which is {what}, not a folder"
                )
        return folders
    package_root = Path(__file__).resolve().parents[1]
    shipped = package_root / "_resources" / kind
    if shipped.is_dir():
        return [shipped]
    return [package_root.parents[1] / kind]


def load_spec(path: str | os.PathLike[str], *, kind: Kind = "experiments") -> Spec:
    """Parse and validate one spec file.

    Raises:
        ExperimentFileError: unreadable TOML, a missing or unknown field, a bad check.
    """
    file = Path(path)
    data = _read_toml(file)
    _validate_fields(data, file)
    params = _table(data, "params", file)
    quick, smoke = _table(data, "quick", file), _table(data, "smoke", file)
    for section, overrides in (("quick", quick), ("smoke", smoke)):
        try:
            apply_overrides(params, _flatten(overrides))
        except ConfigError as exc:
            raise ExperimentFileError(f"{file}: [{section}] {exc}") from None
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ExperimentFileError(f"{file}: field 'seed' must be an integer")
    extra = {
        k: str(data[k]) for k in _OPTIONAL if k in data and k not in ("quick", "smoke", "seed")
    }
    spec = Spec(
        name=data["name"],
        paper=data["paper"],
        claim=data["claim"],
        runner=data["runner"],
        params=params,
        checks=_checks(data["checks"], file),
        path=file,
        kind=kind,
        quick=quick,
        smoke=smoke,
        seed=seed,
        extra=extra,
    )
    if kind == "theory" and spec.derivation is not None and not spec.derivation.is_file():
        raise ExperimentFileError(
            f"{file}: field 'derivation': {spec.derivation.name} does not exist"
        )
    return spec


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentFileError(f"{file}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentFileError(f"{file}: invalid TOML: {exc}") from None


def _validate_fields(data: Mapping[str, Any], file: Path) -> None:
    for key in _REQUIRED:
        if key not in data:
            raise ExperimentFileError(f"{file}: missing field {key!r}")
    for key in data:
        if key not in _REQUIRED and key not in _OPTIONAL:
            raise ExperimentFileError(f"{file}: unknown field {key!r}")
    for key in ("name", "paper", "claim", "runner"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ExperimentFileError(f"{file}: field {key!r} must be a non-empty string")
    if ":" not in data["runner"]:
        raise ExperimentFileError(
            f"{file}: field 'runner' must look like 'package.module:function'"
        )


def _table(data: Mapping[str, Any], key: str, file: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ExperimentFileError(f"{file}: field {key!r} must be a table")
    return value


def _checks(raw: Any, file: Path) -> tuple[Check, ...]:
    if not isinstance(raw, list) or not raw:
        raise ExperimentFileError(f"{file}: field 'checks' must be a non-empty array of tables")
    return tuple(_check(item, f"{file}: checks[{index}]") for index, item in enumerate(raw))


def _check(item: Any, where: str) -> Check:
    if not isinstance(item, dict):
        raise ExperimentFileError(f"{where} must be a table")
    unknown = set(item) - {"metric", "op", "value", "tol"}
    if unknown:
        raise ExperimentFileError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    for key in ("metric", "op", "value"):
        if key not in item:
            raise ExperimentFileError(f"{where}: missing field {key!r}")
    if item["op"] not in OPS:
        raise ExperimentFileError(
            f"{where}: field 'op' is {item['op']!r}; expected one of {', '.join(OPS)}"
        )
    for key in ("value", "tol"):
        if key in item and (isinstance(item[key], bool) or not isinstance(item[key], (int, float))):
            raise ExperimentFileError(f"{where}: field {key!r} must be a number")
    if item["op"] == "approx" and "tol" not in item:
        raise ExperimentFileError(f"{where}: missing field 'tol' (required by op 'approx')")
    return Check(str(item["metric"]), item["op"], float(item["value"]), float(item.get("tol", 0.0)))


def discover_specs(kind: Kind = "experiments") -> dict[str, Spec]:
    """Every spec under :func:`spec_dirs`, by name; two files with one name is an error."""
    found: dict[str, Spec] = {}
    for folder in spec_dirs(kind):
        for file in sorted(folder.rglob("*.toml")) if folder.is_dir() else []:
            spec = load_spec(file, kind=kind)
            if spec.name in found:
                raise ExperimentFileError(
                    f"{file}: name {spec.name!r} already used by {found[spec.name].path}"
                )
            found[spec.name] = spec
    return dict(sorted(found.items()))


def find_spec(name: str, kind: Kind = "experiments") -> Spec:
    """The spec called ``name``; unknown names list the closest known ones."""
    specs = discover_specs(kind)
    if name not in specs:
        raise UnknownNameError(
            "experiment" if kind == "experiments" else "theory check", name, specs
        )
    return specs[name]


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` with ``value`` read as a TOML value (``lr=1e-3``, ``name="x"``).

    A bare word that is not valid TOML is taken as a string (``method=pes``).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r} must look like key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        if not raw.strip() or any(c in raw for c in "[]{}\"'=,"):
            raise ConfigError(f"--set {text!r}: {raw.strip()!r} is not a TOML value") from None
        value = raw.strip()
    return key, value


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with dotted-key overrides applied; keys must exist, types match."""
    result = copy.deepcopy(dict(params))
    for dotted, value in overrides.items():
        table, parts = result, dotted.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(table, dict) or part not in table:
                known = list(table) if isinstance(table, dict) else []
                prefix = ".".join(parts[:depth])
                near = [f"{prefix}.{k}" if prefix else k for k in closest_names(part, known)]
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise ConfigError(f"unknown parameter {dotted!r}{hint}")
            if depth == len(parts) - 1:
                table[part] = _same_type(table[part], value, dotted)
            else:
                table = table[part]
    return result


def _same_type(old: Any, new: Any, key: str) -> Any:
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, (int, float)):
        return float(new)
    elif isinstance(old, dict):
        pass
    elif type(old) is type(new) or (isinstance(old, list) and isinstance(new, list)):
        return new
    raise ConfigError(
        f"parameter {key!r} is {type(old).__name__} ({old!r}); got {type(new).__name__} {new!r}"
    )


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def resolve_params(
    spec: Spec,
    *,
    quick: bool = False,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``[params]``, then ``[quick]`` (and ``[smoke]``) overrides, then ``--set`` overrides."""
    params = (
        apply_overrides(spec.params, _flatten(spec.quick)) if quick or smoke else dict(spec.params)
    )
    if smoke:
        params = apply_overrides(params, _flatten(spec.smoke))
    return apply_overrides(params, dict(overrides or {}))
