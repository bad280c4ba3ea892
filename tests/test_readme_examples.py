"""The README's Python examples run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4


def test_every_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    namespace: dict[str, object] = {}
    for index, block in enumerate(BLOCKS):
        try:
            exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"README python block {index + 1} failed: {error!r}") from error
    assert (tmp_path / "model.pt").is_file()
