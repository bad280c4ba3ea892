"""Re-measure ``default.eval.json``: the held-out table of ``pretrained/README.md``.

Every held-out task (``metalab.lopt.task_families.HELD_OUT_NAMES``) is trained for 200 steps
with 3 seeds (same initialization and minibatches for every optimizer) by: the MLP
architecture at its meta-training start ``θ₀`` (``init``: random or the ``--init`` rule
recorded in the file's provenance), the weights file under
test (``trained``) and Adam with each learning rate of {1e-3, 3e-3, 1e-2, 3e-2, 1e-1}; the
number is the mean final **test** loss over seeds; Adam's learning rate is picked on it
(oracle tuning that favours Adam). Run from the repository root::

    OMP_NUM_THREADS=1 python packages/metalab/lopt/pretrained/measure_heldout.py \
        packages/metalab/lopt/pretrained/default.pt \
        packages/metalab/lopt/pretrained/default.eval.json
"""

from __future__ import annotations

import json
import sys

import torch

from metalab.core.seeding import make_generator
from metalab.lopt.arch_init import make_init_theta
from metalab.lopt.baselines import make_baseline, with_learning_rates
from metalab.lopt.evaluation import train_task
from metalab.lopt.interfaces import OptimizerArch, Task
from metalab.lopt.task_families import held_out_tasks
from metalab.lopt.weights import load_weights

STEPS, SEEDS, ADAM_GRID = 200, (0, 1, 2), (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def _final(task: Task, arch: OptimizerArch, theta: torch.Tensor) -> torch.Tensor:
    """Mean over seeds of the final test loss, one value per row of ``theta``."""
    runs = [
        train_task(task, arch, theta, STEPS, generator=torch.Generator().manual_seed(s)).test[:, -1]
        for s in SEEDS
    ]
    return torch.stack(runs).mean(dim=0)


def main(weights_path: str, out_path: str) -> None:
    """Measure ``weights_path`` on the held-out tasks; write the table to ``out_path``."""
    torch.set_num_threads(1)
    weights = load_weights(weights_path)
    arch = weights.build_arch()
    config = weights.provenance.get("config", {})
    generator = make_generator(int(config.get("seed", 0)), "meta-train/init")
    init = make_init_theta(str(config.get("init", "random")), generator=generator)
    init = arch.init_theta(generator=generator) if init is None else init
    adam = make_baseline("adam")
    adam_thetas = with_learning_rates(adam.init_theta(generator=torch.Generator()), ADAM_GRID)
    rows = []
    for task in held_out_tasks():
        learned = _final(task, arch, torch.stack([init, weights.theta]))
        adam_losses = _final(task, adam, adam_thetas)
        adam_losses = torch.where(torch.isfinite(adam_losses), adam_losses, torch.inf)
        best = int(torch.argmin(adam_losses))
        rows.append(
            {
                "task": task.name,
                "init": float(learned[0]),
                "trained": float(learned[1]),
                "adam_tuned": float(adam_losses[best]),
                "adam_lr": ADAM_GRID[best],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    with open(out_path, "w") as f:
        json.dump({"steps": STEPS, "seeds": list(SEEDS), "tasks": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
