"""Help for every command group answers without importing torch (fast start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metalab.cli.main import _available

GROUPS = sorted(_available())

CODE = """
import sys
from click.testing import CliRunner
from metalab.cli.main import cli
result = CliRunner().invoke(cli, {args!r})
assert result.exit_code == 0, result.output
heavy = sorted(m for m in ("torch", "pykeen") if m in sys.modules)
assert not heavy, f"{{heavy}} imported by {args!r}"
"""


@pytest.mark.parametrize("group", GROUPS)
def test_group_help_does_not_import_torch(group: str) -> None:
    subprocess.run([sys.executable, "-c", CODE.format(args=[group, "--help"])], check=True)


def test_every_research_group_is_available() -> None:
    assert {"kg", "lopt", "nas", "net2net", "ntk"} <= set(GROUPS)
