"""Particles split over torchrun ranks give the estimate one process gives (same seeds)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_dist_worker.py")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.distributed
def test_two_processes_equal_one_process(tmp_path):
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    plain = subprocess.run(
        [sys.executable, str(WORKER), str(single)],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(double),
    ]
    dist = subprocess.run(
        command, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert dist.returncode == 0, dist.stdout[-3000:] + dist.stderr[-3000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert set(one) == {"pes", "tes", "full-es", "tbptt"}
    for name in one:
        # the same numbers up to float summation order across ranks
        flat_two = [g for step in two[name]["grads"] for g in step]
        flat_one = [g for step in one[name]["grads"] for g in step]
        assert flat_two == pytest.approx(flat_one, rel=1e-4, abs=1e-5), name
        assert two[name]["theta"] == pytest.approx(one[name]["theta"], rel=1e-5, abs=1e-6), name
        assert two[name]["losses"] == pytest.approx(one[name]["losses"], rel=1e-5), name
        assert any(abs(g) > 1e-3 for step in one[name]["grads"] for g in step), name
