"""Run by torchrun from test_distributed.py (two CPU processes); not a test module itself."""

import json
import sys

import torch
import torch.distributed as dist

from metalab.core.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    init_distributed,
    is_rank0,
    shard_range,
    shutdown_distributed,
)


def main(out_path: str) -> None:
    ctx = init_distributed("cpu")
    rank = ctx.rank
    mean = torch.tensor([rank + 1.0, 10.0 * (rank + 1), -float(rank)])
    returned = all_reduce_mean(mean)
    total = torch.tensor([rank + 1.0, 2.0**rank])
    all_reduce_sum(total)
    # Every rank reports its context and its shard; rank 0 gathers and writes them.
    shard = shard_range(10, rank, ctx.world_size)
    report = [rank, ctx.world_size, ctx.local_rank, int(is_rank0()), shard.start, shard.stop]
    reports = [None] * ctx.world_size
    dist.all_gather_object(reports, report)
    if rank == 0:
        result = {
            "backend": ctx.backend,
            "device": str(ctx.device),
            "is_distributed": ctx.is_distributed,
            "mean": mean.tolist(),
            "mean_in_place": returned is mean,
            "sum": total.tolist(),
            "reports": reports,
        }
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
