"""``metalab repro`` and ``metalab theory``: list, show and run claim-checked experiments.

Both groups are the same machinery over different folders (``experiments/`` and
``theory/``). Exit codes: 0 all checks passed, 1 a check failed or a runner crashed,
2 bad input (unknown name, bad ``--set``, malformed file).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from metalab.cli.output import format_measured, format_table, shorten
from metalab.core.errors import ConfigError

if TYPE_CHECKING:
    from metalab.core.claims import Outcome
    from metalab.core.specs import Kind, Spec

__all__ = ["repro", "theory"]

_DEVICE_HELP = "auto (CUDA when present) | cpu | cuda | cuda:N"


def _run_options(func: Any) -> Any:
    options = [
        click.option(
            "--quick",
            is_flag=True,
            help="Use the file's [quick] overrides (minutes on a 2-core CPU).",
        ),
        click.option(
            "--seed", type=int, default=None, help="Seed of the run (default: the file's seed)."
        ),
        click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP),
        click.option(
            "--out",
            type=click.Path(file_okay=False),
            default=None,
            help="Root folder for runs (default: $METALAB_RUNS or ./runs).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _make_group(kind: Kind, noun: str) -> click.Group:
    @click.group(
        name="repro" if kind == "experiments" else "theory",
        help=f"List, show and run the {noun}s; each run checks the paper's claim.",
    )
    def group() -> None:
        pass

    @group.command("list")
    def list_command() -> None:
        """Name, paper and claim of every known {noun}."""
        from metalab.core.specs import discover_specs, spec_dirs

        specs = discover_specs(kind)
        if not specs:
            click.echo(f"no {noun}s found in {', '.join(map(str, spec_dirs(kind)))}")
            return
        rows = [(s.name, shorten(s.paper, 40), shorten(s.claim, 70)) for s in specs.values()]
        click.echo(format_table(["name", "paper", "claim"], rows))

    @group.command("show")
    @click.argument("name")
    def show_command(name: str) -> None:
        """Everything the {noun}'s file says: claim, parameters, quick overrides, checks."""
        from metalab.core.specs import find_spec

        click.echo(_describe(find_spec(name, kind)))

    @group.command("run")
    @click.argument("name")
    @_run_options
    @click.option(
        "--set",
        "assignments",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a parameter (TOML value; dotted keys for nested tables). Repeatable.",
    )
    @click.option(
        "--resume",
        type=click.Path(exists=True, file_okay=False),
        default=None,
        help="Continue an interrupted run from its folder, reusing finished work.",
    )
    def run_command(
        name: str, assignments: tuple[str, ...], resume: str | None, **options: Any
    ) -> None:
        """Run one {noun}, print paper vs measured, exit 1 if a check fails."""
        from metalab.core.claims import run_spec
        from metalab.core.specs import find_spec, parse_assignment

        spec = find_spec(name, kind)
        overrides = dict(parse_assignment(text) for text in assignments)
        outcome = run_spec(spec, overrides=overrides, resume=resume, **options)
        if outcome.error and outcome.error_is_input:
            raise ConfigError(f"{outcome.error} (run folder: {outcome.run_dir})")
        click.echo(f"{spec.name}: {spec.claim}\n  ({spec.paper})\n")
        click.echo(_outcome_report(outcome))
        _exit_for([outcome])

    @group.command("all")
    @_run_options
    def all_command(**options: Any) -> None:
        """Run every {noun} and print one claims table; exit 1 if any check fails."""
        _run_all(kind, noun, options)

    for command in (list_command, show_command, run_command, all_command):
        command.help = (command.help or "").replace("{noun}", noun)
    return group


def _run_all(kind: Kind, noun: str, options: dict[str, Any]) -> None:
    from metalab.core.claims import run_spec
    from metalab.core.device import resolve_device
    from metalab.core.specs import discover_specs, spec_dirs

    resolve_device(options["device"])  # a bad --device fails before the first run starts
    specs = discover_specs(kind)
    if not specs:
        click.echo(f"no {noun}s found in {', '.join(map(str, spec_dirs(kind)))}")
        return
    outcomes = []
    for index, spec in enumerate(specs.values(), start=1):
        click.echo(f"[{index}/{len(specs)}] {spec.name} ...", err=True)
        outcome = run_spec(spec, **options)
        verdict = "passed" if outcome.passed else ("ERROR" if outcome.error else "FAILED")
        click.echo(
            f"[{index}/{len(specs)}] {spec.name}: {verdict} in {outcome.seconds:.1f}s", err=True
        )
        outcomes.append(outcome)
    click.echo(_claims_table(outcomes))
    passed = sum(o.passed for o in outcomes)
    click.echo(f"\n{passed} of {len(outcomes)} {noun}s reproduced their claims.")
    _exit_for(outcomes)


def _describe(spec: Spec) -> str:
    from metalab.core.specs import resolve_params

    quick = resolve_params(spec, quick=True)
    lines = [
        f"name:     {spec.name}",
        f"paper:    {spec.paper}",
        f"claim:    {spec.claim}",
        f"file:     {spec.path}",
        f"runner:   {spec.runner}",
        f"seed:     {spec.seed}",
    ]
    lines += [f"{key + ':':<9} {value}" for key, value in spec.extra.items() if key != "derivation"]
    lines.append("params:   (full | --quick)")
    lines += [
        f"  {k} = {v!r}" + (f" | {quick[k]!r}" if quick[k] != v else "")
        for k, v in spec.params.items()
    ]
    lines.append("checks:")
    lines += [f"  {c.metric} {c.describe()}" for c in spec.checks]
    if spec.derivation is not None and spec.derivation.is_file():
        lines += ["", f"derivation ({spec.derivation}):", "", spec.derivation.read_text()]
    return "\n".join(lines)


def _outcome_report(outcome: Outcome) -> str:
    rows = [
        (
            r.check.metric,
            r.check.describe(),
            format_measured(r.measured),
            "pass" if r.passed else "FAIL",
        )
        for r in outcome.checks
    ]
    table = format_table(["metric", "paper", "measured", "result"], rows)
    status = "PASSED" if outcome.passed else "FAILED"
    lines = [table, "", f"{status} in {outcome.seconds:.1f}s; run folder: {outcome.run_dir}"]
    if outcome.error:
        lines.insert(0, f"runner failed: {outcome.error}\n")
    return "\n".join(lines)


def _claims_table(outcomes: list[Outcome]) -> str:
    rows = []
    for outcome in outcomes:
        claim = shorten(outcome.spec.claim, 48)
        for result in outcome.checks:
            verdict = "pass" if result.passed else ("ERROR" if outcome.error else "FAIL")
            measured = "error" if outcome.error else format_measured(result.measured)
            rows.append(
                (
                    outcome.spec.name,
                    claim,
                    result.check.metric,
                    result.check.describe(),
                    measured,
                    verdict,
                )
            )
            claim = ""
    return format_table(["experiment", "claim", "metric", "paper", "measured", "result"], rows)


def _exit_for(outcomes: list[Outcome]) -> None:
    if not all(o.passed for o in outcomes):
        sys.exit(1)


repro = _make_group("experiments", "experiment")
theory = _make_group("theory", "theory check")
