"""``metalab info``: what this installation runs on."""

from __future__ import annotations

import click

__all__ = ["info"]


@click.command()
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
def info(device: str) -> None:
    """Versions, device, threads and where runs and experiments are found."""
    from metalab.core.device import resolve_device
    from metalab.core.environment import environment_info
    from metalab.core.runs import resolve_runs_root
    from metalab.core.specs import spec_dirs

    resolved = resolve_device(device)
    env = environment_info(resolved)
    packages = ", ".join(
        f"{name} {version}" for name, version in env["packages"].items() if version
    )
    lines = [
        ("python", env["python"]),
        ("packages", packages),
        ("platform", env["platform"]),
        ("device", env["device_name"]),
        ("cuda", f"{env['cuda_available']} (built for CUDA {env['cuda_version']})"),
        ("threads", f"torch {env['torch_threads']}, cpus {env['cpu_count']}"),
        ("runs", f"{resolve_runs_root().resolve()} (set --out or $METALAB_RUNS to change)"),
        ("experiments", ", ".join(map(str, spec_dirs("experiments")))),
        ("theory", ", ".join(map(str, spec_dirs("theory")))),
        ("git commit", env["git_commit"] or "not a git checkout"),
    ]
    for key, value in lines:
        click.echo(f"{key:<12} {value}")
