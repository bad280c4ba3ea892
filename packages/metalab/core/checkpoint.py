"""Atomic files and checkpoints that load without unpickling code.

Every write goes to a temporary file in the same folder and is renamed over the target,
so a run killed mid-write leaves either the old file or the new one, never half of one.
Checkpoints hold tensors, numbers, strings and containers of them, and load with
``torch.load(weights_only=True)``: a checkpoint cannot execute code when read.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from metalab.core.errors import MetalabError

__all__ = ["atomic_write_bytes", "atomic_write_json", "load_checkpoint", "save_checkpoint"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` by write-then-rename (fsynced before the rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write_bytes(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Save a dict of tensors/numbers/strings atomically (tensors are moved to CPU)."""
    buffer = io.BytesIO()
    torch.save(_to_cpu(dict(state)), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a corrupt or unsafe file is a MetalabError.

    ``mmap=True`` maps tensor storage instead of reading it: cheap when only the
    checkpoint's small entries are needed.
    """
    try:
        state = torch.load(Path(path), map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise MetalabError(f"checkpoint {os.fspath(path)!r} does not exist") from None
    except IsADirectoryError:
        raise MetalabError(f"checkpoint {os.fspath(path)!r} is a folder, not a file") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise MetalabError(f"cannot load checkpoint {os.fspath(path)!r}: {_why(exc)}") from None
    if not isinstance(state, dict):
        raise MetalabError(f"checkpoint {os.fspath(path)!r} does not hold a dict")
    return state


def _why(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words that never advise unpickling."""
    text = str(exc)
    if "Unsupported global" in text:
        return "it holds Python objects besides tensors and plain values (refused: never unpickled)"
    return f"not a torch checkpoint, or a damaged one ({type(exc).__name__})"


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {key: _to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(value) for value in obj)
    return obj
