"""Checks that a runner's declared params refuse impossible ``--set`` values up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from metalab.cli import cli
from metalab.core.claims import load_runner, run_spec
from metalab.core.config import build_config
from metalab.core.errors import ConfigError
from metalab.core.specs import Spec, resolve_params


def assert_refused_before_run(spec: Spec, overrides: dict[str, Any], message: str, out: Path):
    """``run_spec`` raises a ConfigError containing ``message`` and leaves ``out`` empty."""
    with pytest.raises(ConfigError) as raised:
        run_spec(spec, smoke=True, overrides=overrides, device="cpu", out=out)
    assert message in str(raised.value), str(raised.value)
    assert not any(out.iterdir())


def build_params(spec: Spec, overrides: dict[str, Any]) -> Any:
    """The runner's declared params class built from the smoke params plus ``overrides``."""
    params_class = getattr(load_runner(spec), "params_class", None)
    assert params_class is not None, f"{spec.runner} declares no params"
    return build_config(params_class, resolve_params(spec, smoke=True, overrides=overrides))


def assert_cli_refuses(args: list[str], error_line: str, tmp_path: Path) -> None:
    """The CLI exits 2 with exactly ``error_line``, no traceback, and no run folder."""
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli, [*args, "--device", "cpu"], env={"METALAB_RUNS": str(runs)}, catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [error_line], result.stderr
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())
