import json
import math

import pytest
import torch
from click.testing import CliRunner

from metalab.cli.main import cli
from metalab.core.errors import ConfigError
from metalab.lopt.arch_registry import arch_names
from metalab.lopt.baselines import AdamArch, SGDMArch, with_learning_rates
from metalab.lopt.evaluation import (
    evaluate,
    plot_speedup_fraction,
    speedup,
    train_task,
    tune_baseline,
)
from metalab.lopt.task_zoo import MLPTask, QuadraticTask


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_speedup_on_hand_made_curves():
    steps, points, curve = 20, [0, 10, 20, 30, 40], [5.0, 4.0, 3.0, 2.0, 1.0]
    assert speedup(2.5, points, curve, steps) == (pytest.approx(25 / 20), False)
    assert speedup(3.0, points, curve, steps) == (1.0, False)  # reached exactly at step 20
    assert speedup(0.5, points, curve, steps) == (2.0, True)  # never: censored at the cap
    assert speedup(6.0, points, curve, steps) == (0.0, False)  # already at initialization
    assert speedup(math.nan, points, curve, steps) == (0.0, False)
    assert speedup(2.5, points, [5.0, math.nan, 3.0, 2.0, 1.0], steps) == (
        pytest.approx(25 / 20),
        False,
    )


def test_train_task_rows_share_init_and_batches_and_equal_separate_runs():
    task = MLPTask("iris", width=6, depth=1, batch_size=8)
    arch = AdamArch()
    theta = with_learning_rates(AdamArch.theta(), [1e-2, 1e-2, 3e-2])
    curves = train_task(task, arch, theta, 12, generator=_gen(3), eval_every=4)
    assert curves.train.shape == (3, 12) and curves.test.shape == (3, 4)
    assert curves.eval_steps.tolist() == [0, 4, 8, 12]
    torch.testing.assert_close(curves.train[0], curves.train[1])
    assert not torch.allclose(curves.train[0], curves.train[2])
    assert torch.allclose(curves.test[:, 0], curves.test[0, 0])  # same initialization
    alone = train_task(task, arch, theta[2], 12, generator=_gen(3), eval_every=4)
    torch.testing.assert_close(alone.train[0], curves.train[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone.test[0], curves.test[2], rtol=1e-5, atol=1e-6)


def test_tune_baseline_picks_the_lowest_validation_loss_at_the_horizon_and_skips_divergence():
    task = QuadraticTask(dim=6, condition=10.0, noise=0.0, seed=0)
    grid = [1e-3, 0.1, 0.5, 50.0]  # 50 diverges for SGD-momentum
    tuned = tune_baseline(task, SGDMArch(), grid, 20, generator=_gen(), run_steps=40)
    column = tuned.curves.eval_steps.tolist().index(20)
    losses = tuned.curves.val[:, column]
    assert not math.isfinite(float(losses[3])) or float(losses[3]) > 1e6
    assert math.isinf(float(tuned.grid_losses[3])) or tuned.grid_losses[3] > 1e6
    assert tuned.best == int(torch.argmin(tuned.grid_losses)) and tuned.best in (1, 2)
    assert tuned.lr == grid[tuned.best]
    assert tuned.curves.eval_steps.max() == 40


class _UpsideDownTest(QuadraticTask):
    """A task whose test loss ranks runs in the opposite order to its validation loss."""

    def test_loss(self, params: torch.Tensor) -> torch.Tensor:
        return -super().test_loss(params)


def test_tune_baseline_never_looks_at_the_test_split():
    task = _UpsideDownTest(dim=6, condition=10.0, noise=0.1, seed=0)
    grid = [1e-3, 1e-2, 0.1, 0.5]
    tuned = tune_baseline(task, SGDMArch(), grid, 20, generator=_gen())
    column = tuned.curves.eval_steps.tolist().index(20)
    assert tuned.best == int(torch.argmin(tuned.curves.val[:, column]))
    assert tuned.best != int(torch.argmin(tuned.curves.test[:, column]))


def test_evaluate_two_tiny_tasks_gives_a_consistent_report(tmp_path):
    tasks = [QuadraticTask(dim=5, noise=0.1, seed=2), MLPTask("wine", width=8, batch_size=16)]
    grids = {"adam": [1e-3, 1e-2, 1e-1], "sgdm": [1e-2, 1e-1]}
    # "learned" = Adam at 1e-2: a rival whose curves we can check against the tuned Adam
    report = evaluate(
        AdamArch(), AdamArch.theta(lr=1e-2), tasks, 20, grids=grids, seed=1, eval_every=5
    )
    assert [r.task for r in report.tasks] == [t.name for t in tasks]
    for r in report.tasks:
        assert r.eval_steps == [0, 5, 10, 15, 20] and len(r.learned_train) == 20
        assert math.isfinite(r.learned_final) and r.learned_final == r.learned_curve[-1]
        for name, b in r.baselines.items():
            assert b.lr in grids[name] and math.isfinite(b.final)
            points = list(range(0, 41, 5))
            assert (b.speedup, b.censored) == speedup(r.learned_final, points, b.curve, 20)
            assert b.final == b.curve[points.index(20)]
        adam = r.baselines["adam"]
        if adam.lr == 1e-2:  # same optimizer, same init and minibatches: identical runs
            assert adam.curve[: len(r.learned_curve)] == pytest.approx(r.learned_curve, rel=1e-5)
            assert adam.speedup <= 1.0 + 1e-6
        assert adam.final <= r.learned_final + 1e-6  # the tuned grid contains the rival
    fraction = report.fraction_matching("adam")
    assert fraction == sum(s >= 1 for s in report.speedups("adam")) / 2
    json.dumps(report.to_dict())
    assert plot_speedup_fraction(report, tmp_path / "f.png").stat().st_size > 1000
    again = evaluate(
        AdamArch(), AdamArch.theta(lr=1e-2), tasks, 20, grids=grids, seed=1, eval_every=5
    )
    assert again.to_dict() == report.to_dict()  # deterministic given the seed


def test_evaluate_rejects_bad_input():
    with pytest.raises(ConfigError):
        evaluate(AdamArch(), AdamArch.theta(), [], 10)
    with pytest.raises(ConfigError):
        train_task(QuadraticTask(), AdamArch(), AdamArch.theta(), 0, generator=_gen())


def test_cli_evaluate_table_json_and_errors(tmp_path):
    runner = CliRunner()
    args = [
        "lopt",
        "evaluate",
        "baseline:sgdm",
        "--tasks",
        "tabular",
        "--steps",
        "6",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["task", "learned"]
    assert any(line.startswith("tabular-iris-") for line in lines)
    assert "matches or beats tuned adam on" in result.output
    assert (tmp_path / "report.json").exists() and (tmp_path / "speedup_fraction.png").exists()
    result = runner.invoke(cli, [*args[:-2], "--json", "--baselines", "adam"])
    data = json.loads(result.output)
    assert len(data["tasks"]) == 2 and set(data["summary"]) == {"adam"}
    for bad, needle in [
        (["baseline:adamw"], "adam"),
        ([str(tmp_path / "missing.pt")], "does not exist"),
        (["baseline:adam", "--tasks", "mlp-digit"], "did you mean"),
        (["baseline:adam", "--steps", "0"], "--steps"),
        (["baseline:adam", "--baselines", "rmsprop"], "--baselines"),
        (["baseline:adam", "--workers", "-1"], "--workers must be >= 0"),
    ]:
        result = runner.invoke(cli, ["lopt", "evaluate", *bad])
        assert result.exit_code == 2, result.output
        assert (
            result.output.count("\n") == 1 and "Error:" in result.output and needle in result.output
        )


def test_cli_evaluate_reads_a_weights_file(tmp_path):
    from metalab.lopt.weights import save_weights

    path = save_weights(tmp_path / "w.pt", AdamArch.theta(lr=3e-2), arch="adam")
    result = CliRunner().invoke(
        cli, ["lopt", "evaluate", str(path), "--tasks", "quadratic", "--steps", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["tasks"]) == 2


def test_cli_evaluate_trains_tasks_side_by_side_in_worker_processes(tmp_path):
    """Workers get the weights and rebuild the tasks by name: same tasks, order and losses
    (every task runs on one thread either way, so even the float rounding is the same)."""
    from metalab.lopt.weights import save_weights

    path = save_weights(tmp_path / "w.pt", AdamArch.theta(lr=3e-2), arch="adam")
    reports = {}
    for workers in ("1", "2"):
        args = ["lopt", "evaluate", str(path), "--tasks", "mlp-digits", "--steps", "5"]
        result = CliRunner().invoke(cli, [*args, "--workers", workers, "--json"])
        assert result.exit_code == 0, result.output
        reports[workers] = json.loads(result.output)
    names = [t["task"] for t in reports["1"]["tasks"]]
    assert len(names) >= 2 and all(n.startswith("mlp-digits") for n in names)
    assert [t["task"] for t in reports["2"]["tasks"]] == names
    assert reports["2"] == reports["1"]


@pytest.mark.parametrize("name", arch_names())
def test_train_task_runs_every_registered_arch(name):
    from metalab.lopt.arch_registry import make_arch

    arch = make_arch(name)
    theta = arch.init_theta(generator=_gen(0))
    task = MLPTask("iris", width=6, batch_size=8)
    curves = train_task(task, arch, torch.stack([theta, theta]), 6, generator=_gen(1))
    assert curves.train.shape == (2, 6) and bool(torch.isfinite(curves.test).all())
    torch.testing.assert_close(curves.test[0], curves.test[1])
