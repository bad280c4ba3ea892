import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st

from metalab.core.distributed import (
    DistContext,
    all_reduce_mean,
    all_reduce_sum,
    init_distributed,
    is_rank0,
    rank0_print,
    shard_range,
    shutdown_distributed,
)

WORKER = Path(__file__).with_name("_dist_worker.py")


@given(total=st.integers(0, 500), world_size=st.integers(1, 40))
def test_shard_range_covers_everything_once(total, world_size):
    shards = [shard_range(total, rank, world_size) for rank in range(world_size)]
    flat = [i for shard in shards for i in shard]
    assert flat == list(range(total))  # contiguous, in rank order, no gaps, no overlaps
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def test_shard_range_examples():
    assert [shard_range(10, r, 3) for r in range(3)] == [range(0, 4), range(4, 7), range(7, 10)]
    assert shard_range(5, 0, 1) == range(0, 5)
    assert [len(shard_range(2, r, 4)) for r in range(4)] == [1, 1, 0, 0]


@pytest.mark.parametrize(("rank", "world_size"), [(-1, 2), (2, 2), (5, 3), (0, 0)])
def test_shard_range_rejects_ranks_outside_the_world(rank, world_size):
    with pytest.raises(ValueError, match="outside world"):
        shard_range(10, rank, world_size)


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_torchrun_env")
def test_init_without_torchrun_is_a_world_of_one(capsys):
    assert not dist.is_initialized()
    ctx = init_distributed("cpu")
    assert ctx == DistContext(device=torch.device("cpu"))
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend) == (0, 1, 0, None)
    assert ctx.is_distributed is False
    assert not dist.is_initialized()
    tensor = torch.tensor([1.0, 2.0, 3.0])
    assert all_reduce_mean(tensor) is tensor
    assert tensor.tolist() == [1.0, 2.0, 3.0]
    assert all_reduce_sum(tensor) is tensor
    assert tensor.tolist() == [1.0, 2.0, 3.0]
    assert is_rank0()
    rank0_print("hello", 3)
    assert capsys.readouterr().out == "hello 3\n"
    shutdown_distributed()  # a no-op without a process group


@pytest.mark.usefixtures("no_torchrun_env")
def test_init_keeps_the_requested_device_outside_torchrun():
    assert init_distributed(torch.device("cpu")).device == torch.device("cpu")
    # Outside torchrun no CUDA call is made, so even a CUDA request is just recorded.
    assert init_distributed("cuda:0").device == torch.device("cuda", 0)


def test_context_is_distributed():
    assert DistContext(world_size=2).is_distributed
    assert not DistContext().is_distributed


@pytest.mark.distributed
def test_two_process_all_reduce(tmp_path):
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out),
    ]
    result = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["backend"] == "gloo"
    assert data["device"] == "cpu"
    assert data["is_distributed"] is True
    # rank 0 holds [1, 10, 0] and rank 1 holds [2, 20, -1].
    assert data["mean"] == pytest.approx([1.5, 15.0, -0.5])
    assert data["mean_in_place"] is True
    assert data["sum"] == pytest.approx([3.0, 3.0])
    assert data["reports"] == [[0, 2, 0, 1, 0, 5], [1, 2, 1, 0, 5, 10]]
