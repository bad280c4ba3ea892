r"""Meta-validation score of learned-optimizer weights (the model selection of ``README.md``).

16 tasks sampled from a *training* family (default ``mixed``) with generator seeds
10000–10015 — unseen configurations of the meta-training grid, never the held-out tasks —
each trained for 200 steps with 2 init/minibatch seeds. Per run: ``log(max(L, 1e-3) /
max(L_Adam, 1e-3))`` with ``L`` the final test loss and ``L_Adam`` the final test loss of
Adam tuned per task (the lr ∈ {1e-3, 3e-3, 1e-2, 3e-2, 1e-1} with the lowest validation
loss at step 200); printed: mean, median and the fraction of runs with ``L ≤ L_Adam``.
Arguments are weights files (any architecture) or ``momentum:LR[:CLIP]`` hand rules (MLP
architecture)::

    OMP_NUM_THREADS=1 python packages/metalab/lopt/pretrained/meta_validate.py \
        packages/metalab/lopt/pretrained/default.pt momentum:0.01:0.3
"""

from __future__ import annotations

import math
import sys

import torch

from metalab.lopt.arch_init import make_init_theta
from metalab.lopt.arch_mlp import MLPArch
from metalab.lopt.baselines import make_baseline
from metalab.lopt.evaluation import tune_baseline
from metalab.lopt.interfaces import OptimizerArch, Task
from metalab.lopt.meta_system import evaluate_thetas
from metalab.lopt.task_families import make_family
from metalab.lopt.weights import load_weights

FAMILY, FIRST_SEED, NUM_TASKS, STEPS, SEEDS = "mixed", 10000, 16, 200, (0, 1)
ADAM_GRID, FLOOR = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), 1e-3


def validation_tasks() -> list[Task]:
    """The meta-validation tasks."""
    family, cpu = make_family(FAMILY), torch.device("cpu")
    return [
        family.sample(generator=torch.Generator().manual_seed(FIRST_SEED + i), device=cpu)
        for i in range(NUM_TASKS)
    ]


def _optimizer(spec: str) -> tuple[OptimizerArch, torch.Tensor]:
    if spec.startswith("momentum"):
        theta = make_init_theta(spec, generator=torch.Generator().manual_seed(0))
        assert theta is not None
        return MLPArch(), theta
    weights = load_weights(spec)
    return weights.build_arch(), weights.theta


def main(specs: list[str]) -> None:
    """Print the meta-validation scores of every weights file / hand rule in ``specs``."""
    torch.set_num_threads(1)
    optimizers = [_optimizer(s) for s in specs]
    scores: list[list[float]] = [[] for _ in specs]
    wins = [0] * len(specs)
    adam = make_baseline("adam")
    for task in validation_tasks():
        for seed in SEEDS:
            tuned = tune_baseline(
                task, adam, ADAM_GRID, STEPS, generator=torch.Generator().manual_seed(seed)
            )
            ref = tuned.test_at(STEPS)  # tuned on validation, scored on test
            losses = [
                float(
                    evaluate_thetas(
                        arch,
                        theta.unsqueeze(0),
                        task,
                        steps=STEPS,
                        generator=torch.Generator().manual_seed(seed),
                    )[0]
                )
                for arch, theta in optimizers
            ]
            for i, loss in enumerate(losses):
                loss = loss if math.isfinite(loss) else 1e3
                scores[i].append(math.log(max(loss, FLOOR) / max(ref, FLOOR)))
                wins[i] += loss <= ref
    for spec, values, won in zip(specs, scores, wins, strict=True):
        mean, median = sum(values) / len(values), sorted(values)[len(values) // 2]
        print(f"{spec}: mean {mean:+.3f}  median {median:+.3f}  frac<=Adam {won / len(values):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
