"""Write experiment files for tests."""

from __future__ import annotations

from pathlib import Path

TOY = """
name = "{name}"
paper = "Toy et al. 2026, Eq. 1"
claim = "gradient descent reaches the target"
runner = "tests.support.toy_runner:{runner}"
seed = 7
[params]
steps = 20
lr = 0.25
target = 3.0
crash_at = -1
method = "gd"
[quick]
steps = 30
[smoke]
steps = 2
[[checks]]
metric = "x_final"
op = "approx"
value = 3.0
tol = {tol}
[[checks]]
metric = "loss_final"
op = "lt"
value = 1e-3
"""


def write_toy(
    folder: Path, name: str = "toy-gd", *, runner: str = "gradient_descent", tol: float = 0.01
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(TOY.format(name=name, runner=runner, tol=tol))
    return path
