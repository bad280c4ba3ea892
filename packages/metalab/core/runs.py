"""Run folders: ``<root>/<experiment>/<timestamp>-<id>/``.

A run folder holds ``config.json`` (fully resolved), ``env.json`` (versions, device, git
commit), ``metrics.jsonl`` (appended and flushed as it goes), ``summary.json`` (final
numbers and checks), ``figures/`` and ``checkpoints/``. A run resumes from its folder:
finished stages and the latest checkpoint are reused, and metric lines written after the
last committed point are dropped so the log never holds work twice.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from metalab.core.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from metalab.core.errors import MetalabError

__all__ = ["RUNS_ENV", "Run", "metric_record", "resolve_runs_root"]

RUNS_ENV = "METALAB_RUNS"
_PROGRESS_FILE = "progress.json"
_LINES_KEY = "committed_lines"
T = TypeVar("T")


def resolve_runs_root(out: str | os.PathLike[str] | None = None) -> Path:
    """Where runs go: ``out`` if given, else ``$METALAB_RUNS``, else ``./runs``.

    Raises:
        MetalabError: the folder is an existing file (checked before any work is done).
    """
    if out is not None:
        root, source = Path(out), "--out"
    elif os.environ.get(RUNS_ENV):
        root, source = Path(os.environ[RUNS_ENV]), f"${RUNS_ENV}"
    else:
        root, source = Path("runs"), "./runs"
    if root.exists() and not root.is_dir():
        raise MetalabError(f"{source} {os.fspath(root)!r} is a file, not a folder")
    return root


class Run:
    """One run's folder, its metric log, checkpoints and resumable stages."""

    def __init__(self, directory: Path, config: dict[str, Any], *, resumed: bool) -> None:
        self.dir = directory
        self.config = config
        self.resumed = resumed
        self.figures_dir = directory / "figures"
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_path = directory / "metrics.jsonl"
        self._metrics = self._metrics_path.open("a", encoding="utf-8")

    # ----------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        experiment: str,
        config: Mapping[str, Any],
        *,
        root: str | os.PathLike[str] | None = None,
        env: Mapping[str, Any] | None = None,
    ) -> Run:
        """Make a new run folder under ``root/experiment`` and write its config and env."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        directory = resolve_runs_root(root) / experiment / f"{stamp}-{secrets.token_hex(3)}"
        directory.mkdir(parents=True, exist_ok=False)
        atomic_write_json(directory / "config.json", dict(config))
        if env is not None:
            atomic_write_json(directory / "env.json", dict(env))
        return cls(directory, dict(config), resumed=False)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        accept: Callable[[dict[str, Any]], None] | None = None,
    ) -> Run:
        """Reopen an interrupted run to resume it; uncommitted metric lines are dropped.

        ``accept`` checks the stored config first and raises to refuse the folder; a
        refused folder is left exactly as it was (its metrics are not truncated).
        """
        path = Path(directory)
        config_path = path / "config.json"
        if not config_path.is_file():
            raise MetalabError(f"{os.fspath(path)!r} is not a run folder (no config.json)")
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise MetalabError(f"{os.fspath(config_path)!r} is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise MetalabError(f"{os.fspath(config_path)!r} is not a run config (not an object)")
        if accept is not None:
            accept(config)
        _truncate_lines(path / "metrics.jsonl", _committed_lines(path))
        return cls(path, config, resumed=True)

    # ----------------------------------------------------------------- metrics
    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Append one JSON line of metrics (with ``step`` and wall time) and flush it."""
        self.write_records([metric_record(step, **metrics)])

    def write_records(self, records: list[dict[str, Any]]) -> None:
        """Append records made by :func:`metric_record` elsewhere (a worker process)."""
        for record in records:
            self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """All metric records logged so far (including those of earlier, resumed attempts)."""
        self._metrics.flush()
        lines = self._metrics_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def figure_path(self, name: str) -> Path:
        """Path for a figure file under ``figures/`` (``.png`` added when missing)."""
        return self.figures_dir / (name if Path(name).suffix else f"{name}.png")

    # ----------------------------------------------------------------- resumption
    def save_checkpoint(self, state: Mapping[str, Any], *, tag: str = "latest") -> None:
        """Atomically save ``state`` and mark all metrics logged so far as committed.

        The metric line count travels inside the checkpoint file, so a crash between
        writing it and updating ``progress.json`` still resumes consistently.
        """
        lines = self._flushed_lines()
        save_checkpoint(
            self.dir / "checkpoints" / f"{tag}.pt", {_LINES_KEY: lines, "state": dict(state)}
        )
        self._commit(lines)

    def load_checkpoint(self, *, tag: str = "latest") -> dict[str, Any] | None:
        """The state saved under ``tag``, or ``None`` when there is none (a fresh run)."""
        path = self.dir / "checkpoints" / f"{tag}.pt"
        if not path.is_file():
            return None
        return dict(load_checkpoint(path)["state"])

    def has_stage(self, name: str) -> bool:
        """True when stage ``name`` finished in this folder (a resume will reuse it)."""
        return (self.dir / "stages" / f"{name}.json").is_file()

    def stage(self, name: str, compute: Callable[[], T]) -> T:
        """Run ``compute()`` once per run folder; on resume return its stored result.

        The result is returned in its JSON form (tensors become lists) both times, so a
        resumed run computes exactly what a fresh one does.

        Use it for the independent parts of an experiment (one method, one seed): a run
        interrupted after three of five methods redoes only the last two.
        """
        path = self.dir / "stages" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())["result"]
        result = _plain(compute())
        lines = self._flushed_lines()
        atomic_write_json(path, {"result": result, _LINES_KEY: lines})
        self._commit(lines)
        return result

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` atomically and return its path."""
        path = self.dir / "summary.json"
        atomic_write_json(path, _plain(dict(summary)))
        return path

    def close(self) -> None:
        """Flush and close the metric log."""
        if not self._metrics.closed:
            self._metrics.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flushed_lines(self) -> int:
        self._metrics.flush()
        return _count_lines(self._metrics_path)

    def _commit(self, lines: int) -> None:
        atomic_write_json(self.dir / _PROGRESS_FILE, {_LINES_KEY: lines})


def metric_record(step: int | None = None, **metrics: Any) -> dict[str, Any]:
    """One metric line as :meth:`Run.log` writes it: wall time, ``step``, plain values."""
    record: dict[str, Any] = {"time": round(time.time(), 3)}
    if step is not None:
        record["step"] = int(step)
    record.update({key: _plain(value) for key, value in metrics.items()})
    return record


def _committed_lines(directory: Path) -> int:
    """Metric lines backed by finished work: the most any saved artifact vouches for."""
    counts = [0]
    for path in [directory / _PROGRESS_FILE, *sorted((directory / "stages").glob("*.json"))]:
        if path.is_file():
            counts.append(int(json.loads(path.read_text()).get(_LINES_KEY, 0)))
    for path in sorted((directory / "checkpoints").glob("*.pt")):
        counts.append(int(load_checkpoint(path, mmap=True).get(_LINES_KEY, 0)))
    return max(counts)


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _truncate_lines(path: Path, keep: int) -> None:
    if not path.is_file():
        return
    with path.open("rb") as handle:
        lines = handle.readlines()
    if len(lines) > keep:
        path.write_bytes(b"".join(lines[:keep]))


def _plain(value: Any) -> Any:
    """Turn tensors and numpy values into plain Python values (NaN/inf stay as floats)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # tensors and numpy arrays/scalars
        return _plain(value.tolist())
    return value
