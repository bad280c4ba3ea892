"""Meta-training on task families: the TaskTrainingSystem, the outer loop, resume, the CLI."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
from click.testing import CliRunner
from torch import Tensor

from metalab.core import Run
from metalab.core.errors import ConfigError
from metalab.lopt.arch_mlp import MLPArch
from metalab.lopt.es import PES
from metalab.lopt.interfaces import LossFeatures, OptimizerArch, Task, TaskFamily
from metalab.lopt.meta_system import TaskTrainingSystem, evaluate_thetas, sample_log_uniform
from metalab.lopt.meta_training import MetaTrainConfig, meta_train_lopt
from metalab.lopt.mlp_lopt import Segments
from metalab.lopt.systems import Layout, State, unroll


class ToyQuadratic(Task):
    """``½ Σ λ (x − c − ξ)²`` with minibatch noise ξ; validation/test: noise-free loss."""

    def __init__(self, dim: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.name = f"toy-quadratic-{dim}-{seed}"
        self.lam = 0.5 + torch.rand(dim, generator=gen)
        self.centre = torch.randn(dim, generator=gen)
        self.segments = Segments.from_shapes([(dim,)], torch.device("cpu"))
        self.dim = dim

    def init_params(self, num: int, *, generator: torch.Generator) -> Tensor:
        return torch.randn(num, self.dim, generator=generator)

    def sample_batches(self, num: int, steps: int, *, generator: torch.Generator) -> State:
        return {"noise": 0.1 * torch.randn(steps, num, self.dim, generator=generator)}

    def _loss(self, params: Tensor, xi: Tensor | float) -> Tensor:
        return 0.5 * (self.lam * (params - self.centre - xi).pow(2)).sum(dim=-1)

    def loss_and_grad(self, params: Tensor, batch: State) -> tuple[Tensor, Tensor]:
        xi = batch["noise"]
        return self._loss(params, xi), self.lam * (params - self.centre - xi)

    def validation_loss(self, params: Tensor, *, generator: torch.Generator) -> Tensor:
        xi = 0.1 * torch.randn(self.dim, generator=generator)
        return self._loss(params, xi)

    def test_loss(self, params: Tensor) -> Tensor:
        return self._loss(params, 0.0)


class ToyFamily(TaskFamily):
    """Quadratics of dimension 3 or 5 (heterogeneous parameter counts); held out: dim 4."""

    name = "toy"

    def sample(self, *, generator: torch.Generator, device: torch.device) -> Task:
        dim = (3, 5)[int(torch.randint(2, (), generator=generator))]
        return ToyQuadratic(dim, int(torch.randint(1000, (), generator=generator)))

    def held_out(self, device: torch.device) -> list[Task]:
        return [ToyQuadratic(4, 5000 + i) for i in range(4)]


class SpyArch(MLPArch):
    """Records the parameters and loss features every update sees."""

    uses_validation_loss = True  # it records losses.val, so the system must compute it

    def __init__(self) -> None:
        super().__init__(hidden=4)
        self.seen: list[tuple[Tensor, LossFeatures | None]] = []

    def step(self, theta, params, grads, state, t, segments, losses=None):  # type: ignore[override]
        self.seen.append((params.clone(), losses))
        return super().step(theta, params, grads, state, t, segments, losses)


def _system(arch: OptimizerArch, **kw: object) -> TaskTrainingSystem:
    return TaskTrainingSystem(arch, ToyFamily(), **kw)  # type: ignore[arg-type]


def _config(**kw: object) -> MetaTrainConfig:
    base: dict[str, object] = dict(
        arch="mlp",
        arch_options={"hidden": 8},
        tasks="toy",
        steps=6,
        pairs=4,
        sigma=0.05,
        truncation=4,
        min_horizon=5,
        max_horizon=12,
        checkpoint_every=2,
        outer_lr=1e-2,
    )
    base.update(kw)
    return MetaTrainConfig(**base)  # type: ignore[arg-type]


def test_step_shapes_and_pairs_share_minibatches():
    system = _system(MLPArch(hidden=4))
    gen = torch.Generator().manual_seed(0)
    state = Layout(3, range(3), copies=2).fresh_states(system, gen)
    n = state["params"].shape[1]
    assert state["params"].shape == (6, n) and state["opt.moments"].shape == (6, n, 6)
    assert torch.equal(state["params"][:3], state["params"][3:])
    assert state["task_seed"].unique().numel() == 1 and state["horizon"].unique().numel() == 1
    data = system.sample_data(6, 1, generator=gen)
    assert data is not None
    theta = system.initial_theta().expand(6, -1)
    t = torch.zeros(6, dtype=torch.long)
    new, loss = system.step(state, theta, t, {k: v[0] for k, v in data.items()})
    assert loss.shape == (6,) and new["params"].shape == (6, n) and new["val"].shape == (6,)
    assert torch.equal(loss[:3], loss[3:])  # same params, same minibatch → same loss
    assert set(new) == set(state)


def test_validation_loss_really_reaches_the_arch():
    spy = SpyArch()
    system = _system(spy, val_every=3, paired=False)
    gen = torch.Generator().manual_seed(1)
    state = system.init_state(2, generator=gen)
    task = system.task(int(state["task_seed"][0]))
    t = torch.zeros(2, dtype=torch.long)
    window = unroll(
        system,
        state,
        t,
        system.initial_theta().expand(2, -1),
        5,
        layout=Layout(2, range(2)),
        generator=gen,
    )
    assert window.losses.shape == (2, 5)
    vals = []
    for _, losses in spy.seen:
        assert losses is not None and losses.val is not None
        vals.append(losses.val)
    # recomputed at steps 0 and 3, carried in between, and differs from the training loss
    assert torch.equal(vals[0], vals[1]) and torch.equal(vals[1], vals[2])
    assert not torch.equal(vals[2], vals[3]) and torch.equal(vals[3], vals[4])
    assert not torch.equal(spy.seen[0][1].val, spy.seen[0][1].train)  # type: ignore[union-attr]
    # the recorded value is exactly the task's validation loss at the updated parameters
    g = torch.Generator().manual_seed(0)
    spy.seen.clear()
    seeds = torch.tensor([[[11, 22]]]).expand(1, 2, 2)
    system.step(state, system.initial_theta().expand(2, -1), t, {"seed": seeds[0]})
    expected = task.validation_loss(state["params"], generator=g.manual_seed(22))
    assert torch.equal(spy.seen[0][1].val, expected)  # type: ignore[union-attr]


def test_validation_pass_skipped_when_nothing_reads_it(monkeypatch):
    # the MLP arch ignores losses.val; with the training objective the second forward
    # pass per step is wasted work, and the system must not run it
    calls = []
    system = _system(MLPArch(hidden=4))
    gen = torch.Generator().manual_seed(3)
    state = system.init_state(4, generator=gen)
    task = system.task(int(state["task_seed"][0]))
    original = type(task).validation_loss
    monkeypatch.setattr(
        type(task), "validation_loss", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    theta = system.initial_theta().expand(4, -1)
    t = torch.zeros(4, dtype=torch.long)
    data = {"seed": torch.tensor([[5, 6]]).expand(4, 2)}
    new, _ = system.step(state, theta, t, data)
    assert calls == [] and torch.equal(new["val"], state["val"])
    _system(MLPArch(hidden=4), objective="validation").step(state, theta, t, data)
    assert calls  # the validation objective still reads it


def test_log_uniform_horizons_within_bounds():
    gen = torch.Generator().manual_seed(2)
    draws = torch.tensor([sample_log_uniform(10, 1000, generator=gen) for _ in range(4000)])
    assert int(draws.min()) >= 10 and int(draws.max()) <= 1000
    logs = draws.double().log()
    # log T uniform on [log 10, log 1001): mean and quartiles of log T
    lo, hi = math.log(10), math.log(1001)
    assert abs(float(logs.mean()) - (lo + hi) / 2) < 0.05
    assert abs(float((logs < lo + (hi - lo) / 4).double().mean()) - 0.25) < 0.03


def test_episodes_reset_together_with_a_new_task_and_horizon():
    system = _system(MLPArch(hidden=4), min_horizon=3, max_horizon=7)
    gen = torch.Generator().manual_seed(3)
    est = PES(pairs=2, sigma=0.05, truncation=4)
    theta = system.initial_theta()
    state = est.init(system, theta, generator=gen)
    seen = set()
    for _ in range(12):
        horizon = int(state.state["horizon"][0])
        assert 3 <= horizon <= 7 and state.state["horizon"].unique().numel() == 1
        seen.add((int(state.state["task_seed"][0]), state.state["params"].shape[1], horizon))
        estimate, state = est.step(system, theta, state, generator=gen)
        assert torch.isfinite(estimate.grad).all()
    assert len(seen) >= 4 and len({dim for _, dim, _ in seen}) == 2  # 3- and 5-dim tasks


def _train(tmp_path, config, *, stop_after=None, run=None):
    run = run or Run.create("lopt-meta-train", {}, root=tmp_path)

    def echo(line: str) -> None:
        if stop_after is not None and line.startswith(f"step {stop_after}/"):
            raise KeyboardInterrupt

    with run:
        result = meta_train_lopt(config, run=run, family=ToyFamily(), echo=echo, print_every=1)
    return run, result


@pytest.mark.parametrize("outer", ["adam", "learned"])
def test_resume_continues_bit_exactly(tmp_path, outer):
    spec = "adam"
    if outer == "learned":  # Metz 2020's self-training: a learned optimizer updates θ
        from metalab.lopt.weights import save_weights

        theta = MLPArch(hidden=4).init_theta(generator=torch.Generator().manual_seed(9))
        path = save_weights(tmp_path / "outer.pt", theta, arch="mlp", options={"hidden": 4})
        spec = f"learned:{path}"
    config = _config(steps=7, checkpoint_every=2, outer=spec)
    _, straight = _train(tmp_path / "a", config)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", config, stop_after=5)  # last checkpoint: step 4
    (folder,) = (tmp_path / "b" / "lopt-meta-train").iterdir()
    resumed_run, resumed = _train(tmp_path / "b", config, run=Run.open(folder))
    assert torch.equal(straight.theta, resumed.theta)
    assert not torch.equal(
        straight.theta, MLPArch(hidden=8).init_theta(generator=_init_generator(0))
    )
    assert straight.curve == resumed.curve and straight.inner_steps == resumed.inner_steps
    lines = (resumed_run.dir / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == list(range(1, 8))  # the lost step 5 was logged once, not twice


def test_tiny_meta_training_reduces_the_meta_loss(tmp_path):
    config = _config(
        steps=300,
        pairs=8,
        truncation=5,
        min_horizon=10,
        max_horizon=30,
        outer_lr=3e-2,
        sigma=0.05,
        checkpoint_every=300,
    )
    _, result = _train(tmp_path, config)
    arch = MLPArch(hidden=8)
    theta0 = arch.init_theta(generator=_init_generator(config.seed))
    thetas = torch.stack([theta0, result.theta])
    losses = torch.stack(
        [
            evaluate_thetas(
                arch, thetas, task, steps=20, generator=torch.Generator().manual_seed(s)
            )
            for s, task in enumerate(ToyFamily().held_out(torch.device("cpu")))
        ]
    )  # [tasks, 2]
    assert bool((losses[:, 1] < 0.7 * losses[:, 0]).all()), losses  # every held-out task
    assert float(losses[:, 1].sum()) < 0.4 * float(losses[:, 0].sum()), losses
    assert sum(result.curve[-10:]) < 0.5 * sum(result.curve[:10]), result.curve


def _init_generator(seed: int) -> torch.Generator:
    from metalab.core.seeding import make_generator

    return make_generator(seed, "meta-train/init")


def _root(args):
    from metalab.cli.main import cli

    return CliRunner().invoke(cli, ["lopt", "meta-train", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimator", "foo"], "unknown estimator 'foo'"),
        (["--tasks", "mlp-digit"], "did you mean mlp-digits"),
        (["--arch", "mpl"], "mlp"),
        (["--pairs", "0"], "pairs must be >= 1"),
        (["--val-every", "0"], "--val-every must be >= 1, got 0"),
        (["--grad-clip", "-1"], "--grad-clip must be > 0 (or unset: no clipping), got -1.0"),
        (["--min-horizon", "50", "--max-horizon", "10"], "--max-horizon 10 < --min-horizon 50"),
        (["--outer", "sgd"], "outer must be 'adam' or 'learned:PATH'"),
        (["--outer", "learned:/nonexistent.pt", "--steps", "1"], "do not exist"),
        (["--arch-option", "hidden"], "KEY=VALUE"),
        (["--arch-option", "init_scale=abc"], "mlp optimizer option init_scale must be a number"),
        (
            ["--arch", "hierarchical", "--arch-option", "context_scale=-1"],
            "context_scale must be a number >= 0, got -1",
        ),
        (["--arch", "adam-mlp", "--arch-option", "lr=true"], "lr must be a number > 0, got True"),
        (["--arch", "adam-mlp", "--arch-option", "lr=0"], "lr must be a number > 0, got 0"),
        (["--objective", "test"], "unknown objective 'test'"),
        (["--init", "adam"], "init must be 'random', 'momentum'"),
        (["--init", "momentum", "--arch", "hierarchical"], "exists only for --arch 'mlp'"),
        (["--resume", "/nonexistent-run"], "not a run folder"),
        (["--resume", "x", "--pairs", "4"], "do not pass --pairs"),
        (["--device", "cuda:7"], ""),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = _root([*args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    assert message in result.output, result.output
    assert not (tmp_path / "lopt-meta-train").exists()  # nothing created on bad input


def test_cli_refuses_an_outer_optimizer_file_that_is_not_weights(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    result = _root(["--outer", f"learned:{text}", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert str(text) in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_cli_trains_and_resumes(tmp_path):
    base = [
        "--tasks",
        "quadratic",
        "--pairs",
        "2",
        "-K",
        "3",
        "--min-horizon",
        "4",
        "--max-horizon",
        "8",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        "--seed",
        "1",
    ]
    first = _root([*base, "--steps", "2", "--save", str(tmp_path / "w.pt")])
    assert first.exit_code == 0, first.output
    assert "inner steps/s" in first.output and (tmp_path / "w.pt").is_file()
    (folder,) = (tmp_path / "lopt-meta-train").iterdir()
    with (folder / "metrics.jsonl").open("a") as handle:  # a line a crash left uncommitted
        handle.write('{"step": 99}\n')
    before = {name: (folder / name).read_bytes() for name in ("metrics.jsonl", "config.json")}
    fewer = _root(["--resume", str(folder), "--steps", "1", "--device", "cpu"])
    assert fewer.exit_code == 2 and "is below the run's 2" in fewer.output, fewer.output
    assert {name: (folder / name).read_bytes() for name in before} == before  # untouched
    more = _root(["--resume", str(folder), "--steps", "4", "--device", "cpu"])
    assert more.exit_code == 0, more.output
    assert "step 4/4" in more.output and (folder / "figures" / "meta_training.png").is_file()
    from metalab.lopt.weights import load_weights

    weights = load_weights(folder / "weights.pt")
    assert weights.arch == "mlp" and weights.provenance["steps"] == 4
    # the recorded one-shot command reproduces the resumed run's weights bit-exactly
    again = _root([*shlex.split(weights.provenance["command"])[3:], "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    (other,) = (tmp_path / "b" / "lopt-meta-train").iterdir()
    assert torch.equal(load_weights(other / "weights.pt").theta, weights.theta)


def _one_step_inputs(system: TaskTrainingSystem) -> tuple[dict, torch.Tensor, dict]:
    """A fresh 4-particle state, the system's θ₀ per particle and one step's data seeds."""
    state = system.init_state(4, generator=torch.Generator().manual_seed(4))
    theta = system.initial_theta().expand(4, -1)
    return state, theta, {"seed": torch.tensor([[5, 6]]).expand(4, 2)}


def test_validation_objective_returns_the_validation_loss():
    train_sys = _system(MLPArch(hidden=4))
    val_sys = _system(MLPArch(hidden=4), objective="validation")
    state, theta, data = _one_step_inputs(train_sys)
    t = torch.zeros(4, dtype=torch.long)
    new_train, train_loss = train_sys.step(state, theta, t, data)
    new_val, val_loss = val_sys.step(state, theta, t, data)
    assert torch.equal(val_loss, new_val["val"]) and not torch.equal(val_loss, train_loss)
    assert torch.equal(new_val["params"], new_train["params"])  # only the meta-loss differs
    with pytest.raises(ConfigError):
        _system(MLPArch(hidden=4), objective="test")


def test_late_weighting_scales_each_step_loss_towards_the_episode_end():
    uniform = _system(MLPArch(hidden=4))
    late = _system(MLPArch(hidden=4), weighting="late")
    state, theta, data = _one_step_inputs(uniform)
    horizon = state["horizon"].double()
    for step in (0, 3):
        t = torch.full((4,), step, dtype=torch.long)
        new_uniform, plain = uniform.step(state, theta, t, data)
        new_late, weighted = late.step(state, theta, t, data)
        weight = 2 * (step + 1) / (horizon + 1)
        torch.testing.assert_close(weighted.double(), plain.double() * weight)
        assert torch.equal(new_late["params"], new_uniform["params"])  # only the meta-loss differs
    weights = [2 * (step + 1) / (int(horizon[0]) + 1) for step in range(int(horizon[0]))]
    assert math.isclose(sum(weights) / len(weights), 1.0)  # mean 1: the loss scale is unchanged
    with pytest.raises(ConfigError, match="weighting must be one of"):
        _system(MLPArch(hidden=4), weighting="final")


def test_log_loss_scale_is_the_log_of_each_step_loss_with_a_floor():
    linear = _system(MLPArch(hidden=4))
    log = _system(MLPArch(hidden=4), loss_scale="log", weighting="late")
    state, theta, data = _one_step_inputs(linear)
    t = torch.full((4,), 2, dtype=torch.long)
    _, plain = linear.step(state, theta, t, data)
    _, logged = log.step(state, theta, t, data)
    weight = 2 * 3 / (state["horizon"].to(plain.dtype) + 1)  # the log is taken before weighting
    torch.testing.assert_close(logged, torch.log(plain.clamp_min(1e-3)) * weight)
    with pytest.raises(ConfigError, match="loss_scale must be one of"):
        _system(MLPArch(hidden=4), loss_scale="sqrt")


def test_cli_meta_train_with_late_weighting_records_it(tmp_path):
    args = ["--tasks", "quadratic", "--pairs", "2", "-K", "3", "--min-horizon", "4"]
    args += ["--max-horizon", "8", "--steps", "2", "--weighting", "late", "--device", "cpu"]
    result = _root([*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "lopt-meta-train").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["weighting"] == "late"
    bad = _root(["--weighting", "final", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown weighting 'final'" in bad.output, bad.output
    bad = _root(["--loss-scale", "exp", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown loss scale 'exp'" in bad.output, bad.output


def test_momentum_init_and_validation_objective_in_meta_training(tmp_path):
    from metalab.core.seeding import make_generator
    from metalab.lopt.arch_init import mlp_theta_like_momentum
    from metalab.lopt.meta_training import build_meta_system, equivalent_command
    from metalab.lopt.mlp_lopt import MLPLOptShapes

    config = _config(arch_options={}, init="momentum:0.02:0.5", objective="validation", steps=3)
    arch = MLPArch()
    system = build_meta_system(config, arch=arch, family=ToyFamily(), device=torch.device("cpu"))
    expected = mlp_theta_like_momentum(
        0.02, clip=0.5, shapes=MLPLOptShapes(), generator=make_generator(0, "meta-train/init")
    )
    assert torch.equal(system.initial_theta(), expected) and system.objective == "validation"
    command = equivalent_command(config)
    assert "--init=momentum:0.02:0.5" in command and "--objective=validation" in command
    with Run.create("t", {}, root=tmp_path) as run:
        result = meta_train_lopt(config, run=run, arch=arch, family=ToyFamily())
    assert len(result.curve) == 3 and all(math.isfinite(x) for x in result.curve)
    assert not torch.equal(result.theta, expected)  # PES moved it
