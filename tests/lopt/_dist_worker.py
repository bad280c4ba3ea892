"""Run by torchrun (or plainly) from test_distributed.py; not a test module itself.

Meta-trains with several estimators for a few steps and writes the estimates and final θ.
"""

import json
import sys

import torch

from metalab.core.distributed import init_distributed, is_rank0, shutdown_distributed
from metalab.lopt import LinearQuadratic, ToyRegression, make_estimator, meta_train


def main(out_path: str) -> None:
    init_distributed("cpu")
    torch.set_num_threads(1)
    setups = {
        "pes": (ToyRegression(horizon=20), make_estimator("pes", pairs=5, sigma=0.3, truncation=6)),
        "tes": (
            ToyRegression(horizon=20),
            make_estimator("truncated-es", pairs=4, sigma=0.3, truncation=6),
        ),
        "full-es": (LinearQuadratic(horizon=7), make_estimator("full-es", pairs=3, sigma=0.1)),
        "tbptt": (LinearQuadratic(horizon=7), make_estimator("tbptt", streams=3, truncation=3)),
    }
    result = {}
    for name, (system, estimator) in setups.items():
        grads = []
        out = meta_train(
            system,
            estimator,
            steps=4,
            optimizer=lambda p: torch.optim.Adam(p, lr=0.05),
            generator=torch.Generator().manual_seed(11),
            callback=lambda i, theta, est, grads=grads: grads.append(est.grad.tolist()),
        )
        result[name] = {"theta": out.theta.tolist(), "grads": grads, "losses": out.losses}
    if is_rank0():
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
