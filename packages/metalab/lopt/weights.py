"""A safe file format for learned-optimizer weights (no pickled code, ever).

A weights file is ``torch.save`` of a plain dict — the flat ``θ`` tensor, the
architecture's registry name and constructor options, and provenance metadata (command,
steps, estimator, tasks, date) — and is read back **only** with
``torch.load(weights_only=True)``, which refuses any object other than tensors, numbers,
strings, lists and dicts. Any problem (missing, corrupt, foreign or mismatched file) is a
one-line :class:`~metalab.core.errors.ConfigError`.

The package ships a default optimizer at :data:`DEFAULT_WEIGHTS_PATH`, produced by the
project's own meta-training command (Metz et al. 2020's hierarchical/MLP learned
optimizers meta-trained with PES, Vicol et al. 2021).
"""

from __future__ import annotations

import datetime as _dt
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metalab.core.errors import ConfigError, MetalabError
from metalab.lopt.arch_registry import make_arch
from metalab.lopt.interfaces import OptimizerArch

__all__ = [
    "DEFAULT_WEIGHTS_PATH",
    "FORMAT",
    "PRODUCE_DEFAULT_HINT",
    "LoptWeights",
    "load_weights",
    "make_provenance",
    "save_weights",
]

FORMAT = "metalab-lopt-weights"
VERSION = 1
DEFAULT_WEIGHTS_PATH = Path(__file__).resolve().parent / "pretrained" / "default.pt"
PRODUCE_DEFAULT_HINT = (
    "produce it with the project's `metalab lopt meta-train` command and save the result "
    "there (see experiments/lopt/), or pass weights=PATH"
)
_Plain = str | int | float | bool | None


@dataclass(frozen=True)
class LoptWeights:
    """The contents of a weights file.

    Attributes:
        theta: ``[D]`` float32 optimizer weights.
        arch: registry name of the architecture (see :func:`~metalab.lopt.make_arch`).
        options: keyword options that rebuild the architecture.
        provenance: how the weights were made (command, steps, estimator, tasks, date, ...).
    """

    theta: Tensor
    arch: str
    options: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def build_arch(self) -> OptimizerArch:
        """The architecture these weights belong to."""
        return make_arch(self.arch, **self.options)


def make_provenance(
    *, command: str, steps: int, estimator: str, tasks: str | list[str], **extra: Any
) -> dict[str, Any]:
    """Provenance for :func:`save_weights`, stamped with the UTC date and time."""
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "command": command,
        "steps": steps,
        "estimator": estimator,
        "tasks": tasks,
        "date": date,
        **extra,
    }


def save_weights(
    path: str | Path,
    theta: Tensor,
    *,
    arch: str,
    options: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a weights file that :func:`load_weights` reads back safely.

    Args:
        path: destination (parent folders are created; written atomically).
        theta: ``[D]`` optimizer weights (stored as float32 on the CPU).
        arch: registry name of the architecture.
        options: options that rebuild it with ``make_arch(arch, **options)``.
        provenance: how it was made, e.g. from :func:`make_provenance` (plain values only).

    Raises:
        ConfigError: unknown arch, ``θ`` of the wrong size or non-plain options/metadata.
    """
    plain_options = _plain_dict(options or {}, "options")
    meta = _plain_dict(provenance or {}, "provenance")
    flat = theta.detach().reshape(-1).to("cpu", torch.float32).clone()
    _check_theta(flat, make_arch(arch, **plain_options), arch, "the given theta")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "theta": flat,
        "arch": arch,
        "options": plain_options,
        "provenance": meta,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_weights(path: str | Path | None = None) -> LoptWeights:
    """Read a weights file (``None``: the packaged default) with ``weights_only=True``.

    Raises:
        ConfigError: the file is missing, corrupt, not a weights file, holds objects that
            are not allowed, or its ``θ`` does not fit its architecture.
    """
    default = path is None
    path = DEFAULT_WEIGHTS_PATH if path is None else Path(path)
    if not path.is_file():
        if default:
            raise ConfigError(
                f"the default learned optimizer {path} is missing; {PRODUCE_DEFAULT_HINT}"
            )
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"learned-optimizer weights file {path} {what}")
    payload = _read(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a metalab learned-optimizer weights file")
    theta, arch = payload.get("theta"), payload.get("arch")
    options, meta = payload.get("options", {}), payload.get("provenance", {})
    if not isinstance(theta, Tensor) or not isinstance(arch, str):
        raise ConfigError(f"{path} is a damaged weights file (no theta tensor or arch name)")
    if not isinstance(options, dict) or not isinstance(meta, dict):
        raise ConfigError(f"{path} is a damaged weights file (options/provenance not dicts)")
    if not all(isinstance(key, str) for key in options):
        raise ConfigError(f"{path} is a damaged weights file (option names are not strings)")
    try:
        built = make_arch(arch, **options)
    except (MetalabError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from None
    theta = theta.reshape(-1).to(torch.float32)
    _check_theta(theta, built, arch, str(path))
    return LoptWeights(theta, arch, options, meta)


def _read(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol warnings of foreign files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:\n\n|$)", str(err), re.S)
        reason = " ".join(detail.group(1).split()) if detail else type(err).__name__
        forbidden = re.search(r"Unsupported global: GLOBAL (\S+)", reason)
        if forbidden:
            raise ConfigError(
                f"{path} contains objects that a weights file may not hold ({forbidden.group(1)});"
                " refused to load it"
            ) from None
        raise ConfigError(f"{path} is corrupt or not a weights file ({reason})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"{path} is corrupt or not a weights file ({reason[:200]})") from None
    except Exception as err:  # any other decoder failure of a foreign file: still one line
        kind = type(err).__name__
        raise ConfigError(f"{path} is corrupt or not a weights file ({kind})") from None


def _check_theta(theta: Tensor, arch: OptimizerArch, name: str, where: str) -> None:
    if theta.numel() != arch.theta_dim:
        raise ConfigError(
            f"{where} has {theta.numel()} weights but optimizer architecture {name!r} with "
            f"these options needs {arch.theta_dim}"
        )
    if not bool(torch.isfinite(theta).all()):
        raise ConfigError(f"{where} contains non-finite optimizer weights")


def _plain_dict(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A copy of ``values`` that holds only str keys and plain (JSON-like) values."""
    out = {}
    for key, value in values.items():
        if not isinstance(key, str) or not _is_plain(value):
            raise ConfigError(f"{what}[{key!r}] is not a plain value (str/number/list/dict)")
        out[key] = value
    return out


def _is_plain(value: Any) -> bool:
    if isinstance(value, _Plain):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False
