import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from metalab.core.errors import MetalabError
from metalab.core.runs import RUNS_ENV, Run, resolve_runs_root

CONFIG = {"seed": 3, "params": {"lr": 0.1, "steps": 5}, "device": "cpu"}


def _lines(run):
    return (run.dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()


@pytest.fixture
def run(tmp_path):
    with Run.create(
        "exp", CONFIG, root=tmp_path / "runs", env={"torch": torch.__version__}
    ) as opened:
        yield opened


# ----------------------------------------------------------------- layout and roots
def test_create_layout(tmp_path, run):
    assert run.dir.parent == tmp_path / "runs" / "exp"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", run.dir.name)
    assert json.loads((run.dir / "config.json").read_text()) == CONFIG
    assert json.loads((run.dir / "env.json").read_text()) == {"torch": torch.__version__}
    assert (run.dir / "metrics.jsonl").is_file()
    assert (run.dir / "metrics.jsonl").read_text() == ""
    assert (run.dir / "figures").is_dir()
    assert run.figures_dir == run.dir / "figures"
    assert run.config == CONFIG
    assert run.resumed is False


def test_create_without_env_writes_no_env_json(tmp_path):
    with Run.create("exp", CONFIG, root=tmp_path) as run:
        assert not (run.dir / "env.json").exists()
        assert (run.dir / "config.json").is_file()


def test_two_runs_get_distinct_folders(tmp_path):
    with (
        Run.create("exp", CONFIG, root=tmp_path) as a,
        Run.create("exp", CONFIG, root=tmp_path) as b,
    ):
        assert a.dir != b.dir
        assert a.dir.parent == b.dir.parent


def test_config_is_copied_not_aliased(tmp_path):
    config = {"lr": 0.1}
    with Run.create("exp", config, root=tmp_path) as run:
        config["lr"] = 99.0
        assert run.config == {"lr": 0.1}


def test_runs_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(RUNS_ENV, raising=False)
    assert resolve_runs_root() == Path("runs")
    monkeypatch.setenv(RUNS_ENV, "")
    assert resolve_runs_root() == Path("runs")
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "from-env"))
    assert resolve_runs_root() == tmp_path / "from-env"
    assert resolve_runs_root(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert resolve_runs_root(str(tmp_path / "s")) == tmp_path / "s"


def test_create_defaults_to_dot_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(RUNS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with Run.create("exp", CONFIG) as run:
        assert run.dir.resolve().parent == (tmp_path / "runs" / "exp").resolve()
    assert (tmp_path / "runs" / "exp").is_dir()


def test_create_uses_env_then_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "env-root"))
    with Run.create("exp", CONFIG) as run:
        assert run.dir.parent == tmp_path / "env-root" / "exp"
    with Run.create("exp", CONFIG, root=tmp_path / "arg-root") as run:
        assert run.dir.parent == tmp_path / "arg-root" / "exp"
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------- metrics
def test_log_appends_and_is_on_disk_before_close(run):
    run.log(1, loss=0.5)
    on_disk = _lines(run)  # read through a separate handle while the run is open
    assert len(on_disk) == 1
    assert json.loads(on_disk[0])["loss"] == 0.5
    run.log(2, loss=0.25)
    run.log(loss=0.125)
    records = [json.loads(line) for line in _lines(run)]
    assert [r.get("step") for r in records] == [1, 2, None]
    assert [r["loss"] for r in records] == [0.5, 0.25, 0.125]
    assert all(isinstance(r["time"], float) for r in records)
    assert "step" not in records[2]
    assert run.read_metrics() == records


def test_log_turns_tensors_and_numpy_into_plain_json(run):
    run.log(
        np.int64(3),
        loss=torch.tensor(0.5),
        vector=torch.arange(3),
        matrix=np.array([[1.0, 2.0], [3.0, 4.0]]),
        f32=np.float32(0.25),
        i64=np.int64(7),
        flag=np.bool_(True),
        nested={"a": torch.tensor([1.5]), 2: (np.int32(1), "x")},
        nan=float("nan"),
    )
    raw = _lines(run)[0]
    record = json.loads(raw)
    assert record["step"] == 3
    assert isinstance(record["step"], int)
    assert record["loss"] == 0.5
    assert isinstance(record["loss"], float)
    assert record["vector"] == [0, 1, 2]
    assert all(type(v) is int for v in record["vector"])
    assert record["matrix"] == [[1.0, 2.0], [3.0, 4.0]]
    assert record["f32"] == 0.25
    assert record["i64"] == 7
    assert record["flag"] is True
    assert record["nested"] == {"a": [1.5], "2": [1, "x"]}
    assert record["nan"] != record["nan"]


def test_log_rejects_unserializable_values(run):
    with pytest.raises(TypeError):
        run.log(1, thing=object())


def test_figure_path(run):
    assert run.figure_path("loss") == run.dir / "figures" / "loss.png"
    assert run.figure_path("loss.pdf") == run.dir / "figures" / "loss.pdf"


def test_write_summary_is_plain_json(run):
    path = run.write_summary({"final": torch.tensor(1.25), "curve": np.arange(3)})
    assert path == run.dir / "summary.json"
    assert json.loads(path.read_text()) == {"final": 1.25, "curve": [0, 1, 2]}


def test_close_is_idempotent_and_context_manager_closes(tmp_path):
    with Run.create("exp", CONFIG, root=tmp_path) as run:
        run.log(1, x=1)
    assert run._metrics.closed
    run.close()
    assert run._metrics.closed


# ----------------------------------------------------------------- checkpoints and stages
def test_checkpoint_round_trip(run):
    assert run.load_checkpoint() is None
    state = {"step": 4, "weights": torch.arange(6.0).reshape(2, 3), "history": [0.5, 0.25]}
    run.save_checkpoint(state)
    assert (run.dir / "checkpoints" / "latest.pt").is_file()
    loaded = run.load_checkpoint()
    assert loaded["step"] == 4
    assert torch.equal(loaded["weights"], state["weights"])
    assert loaded["history"] == [0.5, 0.25]
    run.save_checkpoint({"step": 9}, tag="best")
    assert run.load_checkpoint(tag="best") == {"step": 9}
    assert run.load_checkpoint()["step"] == 4


def test_stage_runs_once_and_is_memoized_across_open(run):
    calls = []

    def compute():
        calls.append(1)
        run.log(1, stage_metric=1.0)
        return {"value": torch.tensor(2.5), "curve": np.array([1, 2])}

    first = run.stage("method-a", compute)
    assert calls == [1]
    # Fresh and memoized calls return the same plain JSON form.
    assert first == {"value": 2.5, "curve": [1, 2]}
    assert run.stage("method-a", compute) == {"value": 2.5, "curve": [1, 2]}
    assert calls == [1]
    directory = run.dir
    run.close()

    def must_not_run():
        raise AssertionError("a finished stage was computed again on resume")

    with Run.open(directory) as resumed:
        assert resumed.resumed is True
        assert resumed.stage("method-a", must_not_run) == {"value": 2.5, "curve": [1, 2]}
        assert resumed.stage("method-b", lambda: [1, 2, 3]) == [1, 2, 3]
        # The stage's metric line was committed with it, so it survives the reopen.
        assert [r["stage_metric"] for r in resumed.read_metrics()] == [1.0]


def test_open_drops_metric_lines_after_last_checkpoint(run):
    for step in range(3):
        run.log(step, loss=1.0 / (step + 1))
    run.save_checkpoint({"step": 2})
    for step in range(3, 6):
        run.log(step, loss=1.0 / (step + 1))
    assert len(_lines(run)) == 6
    # The process dies mid-write: half a line, no newline, nothing committed.
    with (run.dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 6, "lo')
    directory = run.dir
    run.close()

    with Run.open(directory) as resumed:
        assert [r["step"] for r in resumed.read_metrics()] == [0, 1, 2]
        assert resumed.config == CONFIG
        assert resumed.load_checkpoint() == {"step": 2}
        resumed.log(3, loss=0.25)
        assert [r["step"] for r in resumed.read_metrics()] == [0, 1, 2, 3]
        resumed.save_checkpoint({"step": 3})
        resumed.log(4, loss=0.2)

    with Run.open(directory) as again:
        assert [r["step"] for r in again.read_metrics()] == [0, 1, 2, 3]


def test_open_refused_by_accept_keeps_every_line(run):
    run.log(0, x=0)
    run.save_checkpoint({"step": 0})
    run.log(1, x=1)  # uncommitted
    directory = run.dir
    run.close()
    before = (directory / "metrics.jsonl").read_bytes()

    def refuse(config: dict) -> None:
        assert config == CONFIG
        raise MetalabError("not this one")

    with pytest.raises(MetalabError, match="not this one"):
        Run.open(directory, refuse)
    assert (directory / "metrics.jsonl").read_bytes() == before


def test_open_drops_lines_after_last_stage(run):
    run.log(0, x=0)
    run.stage("s", lambda: 1)
    run.log(1, x=1)
    directory = run.dir
    run.close()
    with Run.open(directory) as resumed:
        assert [r["step"] for r in resumed.read_metrics()] == [0]


def test_open_without_any_commit_keeps_nothing(run):
    run.log(0, x=0)
    run.log(1, x=1)
    directory = run.dir
    run.close()
    with Run.open(directory) as resumed:
        assert resumed.read_metrics() == []


def test_open_missing_config_is_an_error(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(MetalabError, match=r"no config\.json"):
        Run.open(tmp_path / "not-a-run")
    with pytest.raises(MetalabError, match=r"no config\.json"):
        Run.open(tmp_path / "does-not-exist")


def test_open_corrupt_config_is_an_error(run):
    (run.dir / "config.json").write_text("{not json")
    with pytest.raises(MetalabError, match="not valid JSON"):
        Run.open(run.dir)


def test_checkpoint_vouches_for_its_metric_lines_even_if_progress_was_not_updated(run):
    """A crash between writing a checkpoint and updating progress.json loses no lines."""
    for step in range(3):
        run.log(step, loss=float(step))
    run.save_checkpoint({"step": 3})
    run.log(3, loss=3.0)  # uncommitted: must be dropped on resume
    directory = run.dir
    run.close()
    (directory / "progress.json").unlink()  # simulate the crash window
    with Run.open(directory) as resumed:
        assert [r["step"] for r in resumed.read_metrics()] == [0, 1, 2]
        assert resumed.load_checkpoint() == {"step": 3}
