"""What a run ran on: versions, device, threads and the git commit (for ``env.json``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["environment_info", "git_commit", "package_version"]

_PACKAGES = ("metalab", "torch", "numpy", "scipy", "pykeen", "scikit-learn", "matplotlib", "click")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out at ``path`` (default: the source tree of metalab), if any."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def environment_info(device: Any = None) -> dict[str, Any]:
    """Versions, platform, threads, device and git commit, as a JSON-able dict."""
    import torch

    from metalab.core.device import describe_device

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in _PACKAGES},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "git_commit": git_commit(),
    }
    info["torch"] = info["packages"]["torch"]
    if device is not None:
        info["device"] = str(device)
        info["device_name"] = describe_device(torch.device(device))
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return info
