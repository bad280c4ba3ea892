import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # makes tests.support importable as a runner module
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("METALAB_PROGRESS", "0")


@pytest.fixture
def toy_experiments(tmp_path, monkeypatch):
    """An experiments folder holding one toy spec, selected through $METALAB_EXPERIMENTS."""
    from tests.support.specs import write_toy

    folder = tmp_path / "experiments"
    write_toy(folder)
    monkeypatch.setenv("METALAB_EXPERIMENTS", str(folder))
    monkeypatch.setenv("METALAB_RUNS", str(tmp_path / "runs"))
    return folder
