"""The wheel ships experiments/ and theory/, and an installed metalab finds them there."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("metalab-*.whl")
    return path


def test_wheel_ships_every_spec_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("experiments", "theory"):
        for file in (ROOT / folder).rglob("*"):
            if file.is_file():
                assert f"metalab/_resources/{folder}/{file.relative_to(ROOT / folder)}" in names
    assert "metalab/cli/main.py" in names
    assert not any(name.startswith(("tests/", "experiments/")) for name in names)


def test_installed_wheel_finds_shipped_specs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = "from metalab.core.specs import spec_dirs; print(spec_dirs('experiments')[0])"
    printed = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(printed) == target / "metalab" / "_resources" / "experiments"
    assert (Path(printed) / "README.md").is_file()


def test_torch_requirement_is_a_range_that_admits_the_cpu_pin():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_dep,) = [d for d in deps if d.split(">")[0].split("=")[0].strip() == "torch"]
    assert "==" not in torch_dep and ">=" in torch_dep
    assert "torch==2.13.0" in (ROOT / "scripts" / "setup.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = 'bash scripts/setup.sh && .venv/bin/python -m pytest -n 2 -m "not slow"'
    assert test_command in readme and test_command in ci
