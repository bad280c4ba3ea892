"""One device switch: ``auto | cpu | cuda | cuda:N``.

``auto`` picks CUDA when present. Asking for CUDA on a machine without it is an error,
never a silent fallback: a "GPU" number measured on a CPU would be a lie.
"""

from __future__ import annotations

import re

import torch

from metalab.core.errors import DeviceError

__all__ = ["DEVICE_CHOICES_HELP", "describe_device", "resolve_device"]

DEVICE_CHOICES_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device spec into a :class:`torch.device`, refusing devices that are absent.

    Args:
        spec: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device; ``None`` means auto.

    Raises:
        DeviceError: the spec is malformed or names a CUDA device this machine lacks.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    match = _SPEC.match(text)
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise DeviceError(f"invalid device {spec!r}: expected {DEVICE_CHOICES_HELP}")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    ordinal = int(index) if index is not None else torch.cuda.current_device()
    if ordinal >= count:
        raise DeviceError(f"device {spec!r} requested but this machine has {count} CUDA device(s)")
    return torch.device("cuda", ordinal)


def describe_device(device: torch.device) -> str:
    """Human-readable name of a device, e.g. ``cuda:0 (NVIDIA H100)`` or ``cpu (8 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"
