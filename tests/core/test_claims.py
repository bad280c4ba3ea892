import json

import pytest

from metalab.core.claims import run_spec
from metalab.core.errors import ConfigError, DeviceError, ExperimentFileError
from metalab.core.specs import find_spec, load_spec
from tests.support.specs import write_toy


def _summary(outcome):
    return json.loads((outcome.run_dir / "summary.json").read_text())


def test_run_writes_folder_and_summary(toy_experiments, tmp_path):
    outcome = run_spec(find_spec("toy-gd"), device="cpu")
    assert outcome.passed
    assert outcome.run_dir.parent == tmp_path / "runs" / "toy-gd"
    for name in ("config.json", "env.json", "metrics.jsonl", "summary.json"):
        assert (outcome.run_dir / name).is_file(), name
    summary = _summary(outcome)
    assert set(summary) >= {"name", "config", "metrics", "checks", "passed", "seconds"}
    assert summary["config"]["params"]["steps"] == 20
    assert summary["config"]["seed"] == 7
    assert summary["checks"][0] == {
        "metric": "x_final",
        "op": "approx",
        "expected": 3.0,
        "tol": 0.01,
        "measured": summary["metrics"]["x_final"],
        "passed": True,
    }
    env = json.loads((outcome.run_dir / "env.json").read_text())
    assert env["torch"]
    assert env["device"] == "cpu"
    assert "git_commit" in env
    lines = (outcome.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 20


def test_same_seed_same_numbers_and_seed_changes_them(toy_experiments):
    spec = find_spec("toy-gd")
    first = run_spec(spec, device="cpu", overrides={"steps": 3}).metrics
    second = run_spec(spec, device="cpu", overrides={"steps": 3}).metrics
    other = run_spec(spec, device="cpu", overrides={"steps": 3}, seed=8).metrics
    assert first == second
    assert first["x_final"] != other["x_final"]


def test_failing_check_is_reported_not_raised(toy_experiments):
    outcome = run_spec(find_spec("toy-gd"), device="cpu", overrides={"steps": 2})
    assert not outcome.passed
    assert [r.passed for r in outcome.checks] == [False, False]
    assert _summary(outcome)["passed"] is False


def test_missing_metric_fails_its_check(tmp_path, monkeypatch):
    path = write_toy(tmp_path / "exp", runner="bad_params")
    monkeypatch.setenv("METALAB_RUNS", str(tmp_path / "runs"))
    outcome = run_spec(load_spec(path), device="cpu")
    assert outcome.checks[0].measured is None
    assert not outcome.passed


def test_crashing_runner_keeps_metrics_and_records_failure(toy_experiments):
    outcome = run_spec(find_spec("toy-gd"), device="cpu", overrides={"crash_at": 5})
    assert not outcome.passed
    assert "simulated crash at step 5" in outcome.error
    assert len((outcome.run_dir / "metrics.jsonl").read_text().splitlines()) == 5
    summary = _summary(outcome)
    assert summary["passed"] is False
    assert "simulated crash" in summary["error"]
    assert "Traceback" in (outcome.run_dir / "error.txt").read_text()


def test_resume_continues_without_redoing_finished_steps(toy_experiments, tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("TOY_CALLS_FILE", str(calls))
    spec = find_spec("toy-gd")
    crashed = run_spec(spec, device="cpu", overrides={"crash_at": 12})
    assert not crashed.passed
    # resume from the stored config: the crash step is part of it, so patch the stored config
    config = json.loads((crashed.run_dir / "config.json").read_text())
    config["params"]["crash_at"] = -1
    (crashed.run_dir / "config.json").write_text(json.dumps(config))
    calls.write_text("")
    resumed = run_spec(spec, resume=crashed.run_dir)
    assert resumed.passed
    assert resumed.run_dir == crashed.run_dir
    assert [int(s) for s in calls.read_text().split()] == list(range(12, 20))
    steps = [
        json.loads(line)["step"]
        for line in (crashed.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(20))
    fresh = run_spec(spec, device="cpu")
    assert resumed.metrics == fresh.metrics


def test_resume_refuses_other_experiment_and_overrides(toy_experiments, tmp_path):
    other = load_spec(write_toy(tmp_path / "other", "other"))
    run = run_spec(find_spec("toy-gd"), device="cpu", overrides={"steps": 1})
    with pytest.raises(ConfigError, match="is a run of 'toy-gd'"):
        run_spec(other, resume=run.run_dir)
    with pytest.raises(ConfigError, match="--resume"):
        run_spec(find_spec("toy-gd"), resume=run.run_dir, overrides={"steps": 2})


def test_bad_input_errors_before_any_run_folder(toy_experiments, tmp_path):
    with pytest.raises(ConfigError, match="unknown parameter 'stepz'"):
        run_spec(find_spec("toy-gd"), overrides={"stepz": 1})
    with pytest.raises(DeviceError):
        run_spec(find_spec("toy-gd"), device="cuda:7")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": 0}, r"params\.steps must be >= 1, got 0"),
        ({"lr": float("nan")}, r"params\.lr must be a finite number"),
        ({"lr": -0.5}, r"params\.lr must be > 0, got -0.5"),
        ({"steps": "many"}, r"parameter 'steps' is int"),
    ],
)
def test_impossible_override_is_refused_before_the_run_folder(
    toy_experiments, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        run_spec(find_spec("toy-gd"), device="cpu", overrides=overrides)
    assert not (tmp_path / "runs").exists()


def test_resume_checks_a_hand_edited_config(toy_experiments):
    outcome = run_spec(find_spec("toy-gd"), device="cpu", overrides={"steps": 1})
    config_path = outcome.run_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["params"]["steps"] = -3
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"params\.steps must be >= 1"):
        run_spec(find_spec("toy-gd"), resume=outcome.run_dir)


def test_a_refused_resume_leaves_the_folder_untouched(toy_experiments, tmp_path):
    """Refusing must not cost the folder its uncommitted metric lines: the user may
    have named the wrong experiment and retry with the right one."""
    other = load_spec(write_toy(tmp_path / "other", "other"))
    run = run_spec(find_spec("toy-gd"), device="cpu", overrides={"steps": 1})
    metrics = run.run_dir / "metrics.jsonl"
    with metrics.open("a") as handle:
        handle.write('{"step": 99, "uncommitted": true}\n')
    before = metrics.read_bytes()
    with pytest.raises(ConfigError, match="is a run of 'toy-gd'"):
        run_spec(other, resume=run.run_dir)
    assert metrics.read_bytes() == before


def test_resume_of_another_commands_folder_says_so(toy_experiments, tmp_path):
    folder = tmp_path / "meta-train-run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"arch": "mlp", "steps": 3}))
    with pytest.raises(ConfigError, match=r"is not a run of 'toy-gd'.*not an experiment's"):
        run_spec(find_spec("toy-gd"), resume=folder)


def test_unimportable_runner_names_file_and_field(tmp_path):
    path = write_toy(tmp_path, runner="no_such_function")
    with pytest.raises(
        ExperimentFileError, match=r"field 'runner'.*no function 'no_such_function'"
    ):
        run_spec(load_spec(path), device="cpu")


def test_out_argument_overrides_environment(toy_experiments, tmp_path):
    outcome = run_spec(
        find_spec("toy-gd"), device="cpu", out=tmp_path / "elsewhere", overrides={"steps": 1}
    )
    assert outcome.run_dir.parent == tmp_path / "elsewhere" / "toy-gd"
