"""``metalab nas``: DARTS search, DARTS-PT selection and the ground-truth tables.

Thin wrappers over :mod:`metalab.nas`; torch is imported inside command bodies.
"""

from __future__ import annotations

import json

import click

from metalab.cli.options import FINITE_FLOAT
from metalab.core.errors import ConfigError

__all__ = ["nas"]

_DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise ConfigError(f"--shard must be K/N (e.g. 0/2), got {text!r}")
    return int(k), int(n)


@click.group("nas")
def nas() -> None:
    """DARTS search and perturbation-based selection (DARTS-PT) with ground-truth tables."""


@nas.group("bench")
def bench() -> None:
    """Ground-truth tables: every distinct cell of a space trained with a fixed recipe."""


@bench.command("build")
@click.option("--space", "space_name", default="skip-conv3", show_default=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON file to write (resumes it when present) [default: SPACE.json]",
)
@click.option("--seeds", default="0,1", show_default=True, help="comma-separated seeds (>= 2)")
@click.option("--epochs", type=int, default=None, help="override the recipe's epochs")
@click.option(
    "--max-minutes",
    type=FINITE_FLOAT,
    default=None,
    help="stop (saving progress) after this long; rerun to continue",
)
@click.option("--threads", type=int, default=1, show_default=True, help="torch CPU threads")
@click.option(
    "--workers",
    type=int,
    default=0,
    show_default=True,
    help="cells trained at once, each in its own process (0: one per THREADS cores)",
)
@click.option(
    "--shard",
    default="0/1",
    show_default=True,
    help="K/N: train only distinct cells K, K+N, ... (one process per shard)",
)
@click.option("--device", default="cpu", show_default=True, help=_DEVICE_HELP)
def bench_build(
    space_name: str,
    out: str | None,
    seeds: str,
    epochs: int | None,
    max_minutes: float | None,
    threads: int,
    workers: int,
    shard: str,
    device: str,
) -> None:
    """Train every functionally distinct cell of SPACE for each seed (resumable).

    --workers trains several cells at once into the one file. To split a build over
    machines use --shard K/N (one --out file each), then combine the files with
    `metalab nas bench merge`.
    """
    import dataclasses
    import shlex
    import sys

    import torch

    from metalab.core.device import resolve_device
    from metalab.core.parallel import default_workers
    from metalab.nas.bench import TrainRecipe, build_table
    from metalab.nas.space import make_space

    space = make_space(space_name)
    if epochs is not None and epochs < 1:
        raise ConfigError(
            f"--epochs must be >= 1 (untrained cells are no ground truth), got {epochs}"
        )
    if max_minutes is not None and max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be > 0, got {max_minutes}")
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if workers < 0:
        raise ConfigError(
            f"--workers must be >= 0 (0: one process per --threads cores), got {workers}"
        )
    recipe = TrainRecipe()
    if epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=epochs)
    torch.set_num_threads(threads)
    path = out or f"{space.name}.json"
    command = (
        "metalab nas " + shlex.join(sys.argv[sys.argv.index("bench") :])
        if ("bench" in sys.argv)
        else f"metalab nas bench build --space {space.name} --seeds {seeds}"
    )
    resolved = resolve_device(device)
    try:
        table = build_table(
            space,
            path,
            recipe=recipe,
            seeds=_seeds(seeds),
            device=resolved,
            max_seconds=None if max_minutes is None else 60 * max_minutes,
            command=command,
            shard=_shard(shard),
            workers=workers or default_workers(threads, resolved),
            threads=threads,
        )
    except KeyboardInterrupt:
        click.echo(f"interrupted: trained cells are saved in {path}; rerun to continue", err=True)
        raise
    summary = table.summary()
    state = "complete" if table.complete else "partial (rerun the same command to continue)"
    click.echo(f"{path}: {summary['entries']} distinct cells trained, {state}")
    click.echo(f"training time so far: {summary['train_seconds']:.0f} s (summed over workers)")


@bench.command("merge")
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
def bench_merge(out: str, parts: tuple[str, ...]) -> None:
    """Merge partial builds PARTS (same space, recipe, seeds) into OUT."""
    from metalab.nas.bench import merge_tables

    table = merge_tables(list(parts), out)
    state = "complete" if table.complete else "partial"
    click.echo(f"{out}: {len(table.seed_accuracies)} distinct cells, {state}")


@bench.command("show")
@click.argument("table", default="nb201-4op")
@click.option("--cell", default=None, help="a cell string to look up")
@click.option("--top", type=int, default=5, show_default=True, help="list the best N cells")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def bench_show(table: str, cell: str | None, top: int, as_json: bool) -> None:
    """Summarize TABLE (a shipped space name or a JSON file, default nb201-4op); find a --cell."""
    import numpy as np

    from metalab.nas.table import load_table

    if top < 0:
        raise ConfigError(f"--top must be >= 0, got {top}")
    loaded = load_table(table)
    summary = loaded.summary()
    if cell is not None:
        summary["cell"] = {
            "cell": cell,
            "accuracy": loaded.accuracy(cell),
            "rank": loaded.rank(cell),
            "of": loaded.num_ranked,
            "percentile": loaded.percentile(cell),
        }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key != "cell":
            shown = f"{value:.4f}" if isinstance(value, float) else value
            click.echo(f"{key:>16}: {shown}")
    ranked = sorted(loaded.seed_accuracies.items(), key=lambda kv: -float(np.mean(kv[1])))
    for text, accs in ranked[: max(top, 0)]:
        click.echo(f"  {np.mean(accs):.4f}  {text}")
    if cell is not None:
        c = summary["cell"]
        click.echo(
            f"cell {cell}: accuracy {c['accuracy']:.4f}, rank {c['rank']}/{c['of']}, "
            f"percentile {c['percentile']:.1f}"
        )


@nas.command("search")
@click.option(
    "--space",
    "space_name",
    default="nb201-4op",
    show_default=True,
    help="nb201, nb201-4op, skip-conv3 or darts",
)
@click.option(
    "--selection", default="perturbation", show_default=True, help="magnitude or perturbation"
)
@click.option("--fixed-alpha", is_flag=True, help="keep α uniform (DARTS-PT's fixed-α variant)")
@click.option(
    "--order",
    type=click.Choice(["first", "second"]),
    default="first",
    show_default=True,
    help="DARTS gradient approximation",
)
@click.option("--epochs", type=int, default=50, show_default=True, help="supernet epochs")
@click.option(
    "--tune-epochs",
    type=int,
    default=5,
    show_default=True,
    help="DARTS-PT fine-tuning epochs between decisions",
)
@click.option("--channels", type=int, default=8, show_default=True)
@click.option("--cells", "n_cells", type=int, default=2, show_default=True)
@click.option("--alpha-lr", type=FINITE_FLOAT, default=3e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--table",
    default=None,
    help="ground-truth table: shipped space name or JSON file [default: the space's]",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
def search(
    space_name: str,
    selection: str,
    fixed_alpha: bool,
    order: str,
    epochs: int,
    tune_epochs: int,
    channels: int,
    n_cells: int,
    alpha_lr: float,
    seed: int,
    table: str | None,
    as_json: bool,
    device: str,
) -> None:
    """Run a DARTS search on digits, select a cell, and report its true accuracy."""
    from metalab.core.device import resolve_device
    from metalab.nas.search import SearchConfig
    from metalab.nas.space import make_space
    from metalab.nas.table import BenchTable, load_table, shipped_table_path
    from metalab.nas.trajectory import search_and_select

    space = make_space(space_name)
    config = SearchConfig(
        space=space.name,
        epochs=epochs,
        channels=channels,
        n_cells=n_cells,
        alpha_lr=alpha_lr,
        order="first" if fixed_alpha else order,  # type: ignore[arg-type]
        fixed_alpha=fixed_alpha,
    )
    gt: BenchTable | None = None
    if table is not None:
        gt = load_table(table)
    elif shipped_table_path(space.name).is_file():
        gt = load_table(space.name)
    result = search_and_select(
        config,
        selection=selection,
        seed=seed,
        table=gt,
        tune_epochs=tune_epochs,
        device=resolve_device(device),
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"selected cell ({result['selection']}): {result['cell']}")
    click.echo(
        f"supernet val acc {result['supernet_val_acc']:.4f}; "
        f"search {result['search_seconds']:.1f} s, selection {result['selection_seconds']:.1f} s"
    )
    if "gt_accuracy" in result:
        click.echo(
            f"ground truth: accuracy {result['gt_accuracy']:.4f} (best {result['gt_best']:.4f}),"
            f" rank {result['gt_rank']}/{result['gt_cells']}"
        )
    else:
        click.echo(f"(no ground-truth table for {space.name}; pass --table FILE)")
