"""A tiny runner used by the claims-runner tests: a resumable loop with a real computation."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, positive


@dataclass
class ToyParams:
    steps: int = at_least(1, 20)
    lr: float = positive(0.1)
    target: float = 3.0
    crash_at: int = -1
    method: str = "gd"


@runner_params(ToyParams)
def gradient_descent(config: RunConfig, run: Run) -> dict[str, float]:
    """Minimize (x - target)^2 by gradient descent from a seeded start; resumable."""
    p = config.typed(ToyParams)
    state = run.load_checkpoint()
    if state is None:
        x = torch.randn((), generator=config.generator("init"))
        start = 0
    else:
        x, start = state["x"], int(state["step"])
    calls_file = os.environ.get("TOY_CALLS_FILE")
    for step in range(start, p.steps):
        if calls_file:
            with open(calls_file, "a") as handle:
                handle.write(f"{step}\n")
        if step == p.crash_at:
            raise RuntimeError(f"simulated crash at step {step}")
        x = x - p.lr * 2 * (x - p.target)
        run.log(step, x=x, loss=(x - p.target) ** 2)
        run.save_checkpoint({"x": x, "step": step + 1})
    return {"x_final": float(x), "loss_final": float((x - p.target) ** 2), "steps_done": p.steps}


def bad_params(config: RunConfig, run: Run) -> dict[str, float]:
    config.typed(ToyParams)
    return {}
