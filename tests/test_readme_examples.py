"""The README's Python examples run as written, each on its own.

A block preceded by ``<!-- continues the previous example -->`` runs in the namespace of
the block before it (and says so to the reader by following it); every other block starts
from an empty namespace, so a missing import cannot hide behind an earlier example.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
CONTINUES = "<!-- continues the previous example -->"
BLOCKS = re.findall(
    r"^(" + re.escape(CONTINUES) + r"\n)?```python\n(.*?)^```",
    README.read_text(),
    flags=re.S | re.M,
)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4
    assert not BLOCKS[0][0], "the first example cannot continue another"


def test_every_python_example_runs_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    namespace: dict[str, object] = {}
    for index, (continues, block) in enumerate(BLOCKS, start=1):
        if not continues:
            namespace = {}
        try:
            exec(compile(block, f"README.md python block {index}", "exec"), namespace)
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"README python block {index} failed: {error!r}") from error
    assert (tmp_path / "model.pt").is_file()
