"""Root of the ``metalab`` command.

Start-up stays fast: subcommand groups are imported only when invoked, and torch only
inside command bodies. A :class:`~metalab.core.errors.MetalabError` anywhere, a usage error
(a bad option value, a missing argument) and running out of memory on an impossible size
each become one ``Error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from metalab import __version__
from metalab.core.errors import MetalabError, first_line
from metalab.core.parallel import WorkerDied

__all__ = ["cli", "main"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # packages/metalab

# name -> "module:attribute" of a click command, imported on first use.
_SUBCOMMANDS = {
    "info": ("metalab.cli.info:info", "Versions, device, threads and where runs go."),
    "repro": ("metalab.cli.claims:repro", "Reproduce papers' experiments and check their claims."),
    "theory": ("metalab.cli.claims:theory", "Run the theory checks (measured vs predicted)."),
    "lopt": ("metalab.lopt.cli:lopt", "Learned optimizers and ES/PES gradient estimators."),
    "ntk": ("metalab.ntk.cli:ntk", "Averaged SGD in the NTK regime: rates and kernels."),
    "kg": (
        "metalab.kg.cli:kg",
        "Knowledge graphs, complex queries, CQD answers with explanations.",
    ),
    "net2net": (
        "metalab.net2net.cli:net2net",
        "Grow trained networks wider or deeper, function preserved.",
    ),
    "nas": ("metalab.nas.cli:nas", "DARTS search and perturbation-based selection (DARTS-PT)."),
}


def _available() -> dict[str, tuple[str, str]]:
    """The registered subcommands whose module file is present (subpackages land one by one).

    Looks for the file without importing the subpackage, whose ``__init__`` may import torch.
    """
    return {name: entry for name, entry in _SUBCOMMANDS.items() if _module_file(entry[0]).is_file()}


def _module_file(target: str) -> Path:
    """``"metalab.kg.cli:kg"`` -> ``<package root>/kg/cli.py``."""
    parts = target.partition(":")[0].split(".")[1:]
    return _PACKAGE_ROOT.joinpath(*parts).with_suffix(".py")


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used, and whose errors are one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_available()])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        available = _available()
        if cmd_name in available:
            module_name, _, attr = available[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in sorted(_available().items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MetalabError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except WorkerDied as exc:  # not bad input, and no traceback to read: one line
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            first = first_line(exc)
            click.echo(f"Error: out of memory (an option asks for too much): {first}", err=True)
            ctx.exit(2)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        *,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's ``main``, with usage errors printed as one line (exit 2) instead of four."""
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a bare group: its help, not an error
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(128 + (_TERMINATED["signal"] or signal.SIGINT))  # 130 Ctrl-C, 143 SIGTERM
        sys.exit(result if isinstance(result, int) else 0)


# click >= 8.2 raises this usage error for a group called without a subcommand
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_Never", (click.UsageError,), {})
)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CPU or CUDA), not some other runtime error."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "out of memory" in text or ("allocate" in text and "bytes" in text)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metalab")
def cli() -> None:
    """metalab: five lines of ML research, reproducible with one command each.

    Learned optimizers (ES/PES), NTK averaged SGD, CQD on knowledge graphs, Net2Net and
    DARTS-PT.

    \b
    Start with:
      metalab repro list            the experiments and the claims they check
      metalab repro all --quick     run them all on a CPU and print the claims table
      metalab theory list           the theory checks
    """  # noqa: D301 - click needs a real backspace before a block it must not rewrap


def main() -> None:
    """Console-script entry point."""
    from metalab.core.parallel import enable_auto_workers

    enable_auto_workers()  # this script is import-safe for spawned worker processes
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    cli(prog_name="metalab")


_TERMINATED = {"signal": 0}


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """End on SIGTERM (``timeout``, ``kill``) as on Ctrl-C.

    Files being written are saved, worker processes stopped, and a run says how to resume.
    Only the first SIGTERM interrupts: ``timeout`` signals the whole process group too, and
    a second interrupt would cut the clean-up short. (A flag, not SIG_IGN, which spawned
    workers would inherit.)
    """
    if _TERMINATED["signal"]:
        return
    _TERMINATED["signal"] = signum
    raise KeyboardInterrupt
