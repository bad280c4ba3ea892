"""The claims runner: run an experiment's function in a run folder and check its claims.

``runner(config, run) -> {metric: number}`` does the work; this module resolves the
parameters, makes (or reopens) the run folder, calls the runner, evaluates the checks on
the returned metrics and writes ``summary.json``. A runner that raises leaves its metric
log in place and a summary that records the failure.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from metalab.core.config import build_config
from metalab.core.device import resolve_device
from metalab.core.environment import environment_info
from metalab.core.errors import ConfigError, ExperimentFileError, MetalabError
from metalab.core.runs import Run
from metalab.core.seeding import make_generator, seed_everything
from metalab.core.specs import Check, Spec, resolve_params

__all__ = [
    "CheckResult",
    "Outcome",
    "RunConfig",
    "evaluate_checks",
    "load_runner",
    "run_spec",
    "runner_params",
]

T = TypeVar("T")
Runner = Callable[["RunConfig", Run], Mapping[str, Any]]
_PARAMS_ATTR = "params_class"


def runner_params(params_class: type) -> Callable[[Runner], Runner]:
    """Declare the dataclass a runner reads its ``params`` into.

    :func:`run_spec` builds it before it creates the run folder, so an unknown key or an
    impossible value (``--set outer_steps=0``) is refused up front and leaves nothing behind.
    """

    def declare(runner: Runner) -> Runner:
        setattr(runner, _PARAMS_ATTR, params_class)
        return runner

    return declare


@dataclass(frozen=True)
class RunConfig:
    """The fully resolved configuration a runner receives (also ``config.json``)."""

    name: str
    params: dict[str, Any]
    seed: int
    device: str
    quick: bool = False

    def typed(self, cls: type[T]) -> T:
        """``params`` as the runner's own dataclass; unknown keys and wrong types are errors."""
        return build_config(cls, self.params, where="params")

    def generator(self, purpose: str, *, on_device: bool = False) -> torch.Generator:
        """An independent random stream for ``purpose`` (on the run's device if asked)."""
        return make_generator(self.seed, purpose, device=self.device if on_device else "cpu")

    @property
    def torch_device(self) -> torch.device:
        """The run's device as a :class:`torch.device`."""
        return torch.device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in ``config.json``."""
        return {
            "name": self.name,
            "params": self.params,
            "seed": self.seed,
            "device": self.device,
            "quick": self.quick,
        }


@dataclass(frozen=True)
class CheckResult:
    """A check evaluated on a measured value."""

    check: Check
    measured: Any
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """The summary.json form."""
        return {
            "metric": self.check.metric,
            "op": self.check.op,
            "expected": self.check.value,
            "tol": self.check.tol,
            "measured": self.measured,
            "passed": self.passed,
        }


@dataclass
class Outcome:
    """What running one spec produced."""

    spec: Spec
    run_dir: Path
    metrics: dict[str, Any]
    checks: list[CheckResult]
    seconds: float
    error: str | None = None
    error_is_input: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when the runner finished and every check passed."""
        return self.error is None and all(result.passed for result in self.checks)


def evaluate_checks(
    checks: tuple[Check, ...] | list[Check], metrics: Mapping[str, Any]
) -> list[CheckResult]:
    """Evaluate each check on ``metrics``; a metric the runner did not report fails."""
    return [CheckResult(c, metrics.get(c.metric), c.passes(metrics.get(c.metric))) for c in checks]


def load_runner(spec: Spec) -> Runner:
    """Import the runner function named by ``spec.runner`` (``"module:function"``)."""
    module_name, _, attr = spec.runner.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExperimentFileError(
            f"{spec.path}: field 'runner': cannot import {module_name!r} ({exc})"
        ) from None
    runner = getattr(module, attr, None)
    if not callable(runner):
        raise ExperimentFileError(
            f"{spec.path}: field 'runner': {module_name!r} has no function {attr!r}"
        )
    return runner


def run_spec(
    spec: Spec,
    *,
    quick: bool = False,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    resume: str | Path | None = None,
) -> Outcome:
    """Run ``spec`` in a new run folder (or resume one) and check its claims.

    Raises:
        MetalabError: bad overrides, device, runner path, or a resume folder of another spec.
    """
    runner = load_runner(spec)
    if resume is not None:
        if overrides or seed is not None:
            raise ConfigError("--resume reuses the run's stored config; drop --set/--seed")
        stored: list[RunConfig] = []

        def accept(raw: dict[str, Any]) -> None:
            stored.append(_stored_config(raw, Path(resume), spec))
            _check_params(runner, stored[0].params)

        run = Run.open(resume, accept)
        config = stored[0]
    else:
        params = resolve_params(spec, quick=quick, smoke=smoke, overrides=overrides)
        _check_params(runner, params)
        resolved = resolve_device(device)
        config = RunConfig(
            spec.name, params, spec.seed if seed is None else seed, str(resolved), quick or smoke
        )
        run = Run.create(spec.name, config.to_dict(), root=out, env=environment_info(resolved))
    with run:
        return _execute(spec, runner, config, run)


def _check_params(runner: Runner, params: Mapping[str, Any]) -> None:
    params_class = getattr(runner, _PARAMS_ATTR, None)
    if params_class is not None:
        build_config(params_class, params, where="params")


def _stored_config(stored: dict[str, Any], directory: Path, spec: Spec) -> RunConfig:
    name = stored.get("name")
    if not isinstance(name, str) or not {"params", "seed", "device"} <= stored.keys():
        raise ConfigError(
            f"{directory} is not a run of {spec.name!r}: its config.json is not an experiment's"
            " (made by another command?)"
        )
    if name != spec.name:
        raise ConfigError(f"{directory} is a run of {name!r}, not {spec.name!r}")
    resolve_device(stored["device"])  # the device must still exist
    return RunConfig(
        stored["name"],
        stored["params"],
        stored["seed"],
        stored["device"],
        stored.get("quick", False),
    )


def _execute(spec: Spec, runner: Runner, config: RunConfig, run: Run) -> Outcome:
    seed_everything(config.seed)
    started = time.perf_counter()
    error, is_input, metrics = None, False, {}
    try:
        metrics = dict(runner(config, run))
    except MetalabError as exc:
        error, is_input = f"{exc}", True
    except KeyboardInterrupt:
        group = "theory" if spec.kind == "theory" else "repro"
        print(
            f"interrupted: finished stages and checkpoints are kept in {run.dir}; continue "
            f"with: metalab {group} run {spec.name} --resume {run.dir}",
            file=sys.stderr,
        )
        raise
    except Exception as exc:  # the run's record must survive any runner bug
        (run.dir / "error.txt").write_text(traceback.format_exc())
        error = f"{type(exc).__name__}: {exc} (traceback in {run.dir / 'error.txt'})"
    seconds = time.perf_counter() - started
    results = evaluate_checks(spec.checks, metrics)
    outcome = Outcome(spec, run.dir, metrics, results, seconds, error, is_input)
    outcome.summary = {
        "name": spec.name,
        "paper": spec.paper,
        "claim": spec.claim,
        "config": config.to_dict(),
        "metrics": metrics,
        "checks": [r.to_dict() for r in results],
        "passed": outcome.passed,
        "seconds": round(seconds, 3),
        "error": error,
        "run_dir": str(run.dir),
    }
    run.write_summary(outcome.summary)
    return outcome
