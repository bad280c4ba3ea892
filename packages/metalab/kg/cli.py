"""``metalab kg``: knowledge graphs, complex-query sets and link predictors.

Thin wrappers over :mod:`metalab.kg`; torch and pykeen are imported inside the commands so
``metalab --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from metalab.cli.options import FINITE_FLOAT
from metalab.core.errors import ConfigError

__all__ = ["kg"]

_DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"
_DATASET_HELP = (
    "bundled pykeen dataset (nations, kinships, umls) or a folder of train/valid/test TSV files"
)


@click.group("kg")
def kg() -> None:
    """Knowledge graphs, BetaE-style complex queries and pykeen link predictors (CQD)."""


@kg.command("train")
@click.option("--dataset", required=True, help=_DATASET_HELP)
@click.option(
    "--model",
    default="complex",
    show_default=True,
    help="a pykeen model that trains on plain triples (complex, distmult, rotate, tucker, ...)",
)
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--dim", type=int, default=200, show_default=True, help="embedding dimension (rank)")
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--lr", type=FINITE_FLOAT, default=0.1, show_default=True)
@click.option(
    "--regularizer-weight", type=FINITE_FLOAT, default=0.005, show_default=True, help="N3 weight"
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads while training")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder to save the model in [default: models/DATASET-MODEL]",
)
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
def train(
    dataset: str,
    model: str,
    epochs: int,
    dim: int,
    batch_size: int,
    lr: float,
    regularizer_weight: float,
    seed: int,
    threads: int | None,
    out: Path | None,
    device: str,
) -> None:
    """Train a link predictor (default: CQD's ComplEx-N3 recipe), save it and report test MRR."""
    from metalab.core.device import resolve_device
    from metalab.core.seeding import make_generator
    from metalab.kg.evaluation import evaluate_link_prediction
    from metalab.kg.graphs import load_graph
    from metalab.kg.predictors import PredictorConfig
    from metalab.kg.training import save_link_predictor, train_link_predictor

    resolved = resolve_device(device)
    graph = load_graph(dataset)
    config = PredictorConfig(
        model=model,
        dim=dim,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        regularizer_weight=regularizer_weight,
    )
    predictor = train_link_predictor(
        graph, config, generator=make_generator(seed, "init"), device=resolved, num_threads=threads
    )
    folder = save_link_predictor(predictor, out or Path("models") / f"{graph.name}-{model.lower()}")
    seconds = predictor.metadata["training"]["seconds"]
    click.echo(
        f"trained {model} on {graph.name} ({graph.num_entities} entities, "
        f"{graph.num_relations} relations) in {seconds:.1f} s on {resolved}"
    )
    if graph.test.shape[0]:  # a user's folder may ship an empty test file: the model still counts
        click.echo(_metrics_line("test", evaluate_link_prediction(predictor, graph, split="test")))
    else:
        click.echo("no test triples: link evaluation skipped")
    click.echo(f"saved to {folder}")


@kg.command("evaluate-links")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--dataset", default=None, help=f"{_DATASET_HELP} [default: the model's]")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
def evaluate_links(
    model: Path, dataset: str | None, split: str, as_json: bool, device: str
) -> None:
    """Filtered link-prediction MRR/Hits of a saved MODEL (1p, both directions)."""
    from metalab.core.device import resolve_device
    from metalab.kg.evaluation import evaluate_link_prediction
    from metalab.kg.training import load_link_predictor
    from metalab.kg.workflows import model_graph

    predictor = load_link_predictor(model, device=resolve_device(device))
    graph = model_graph(predictor, dataset, model)
    metrics = evaluate_link_prediction(predictor, graph, split=split)
    click.echo(json.dumps(metrics) if as_json else _metrics_line(split, metrics))


def _metrics_line(split: str, metrics: dict[str, float]) -> str:
    return (
        f"{split}: MRR {metrics['mrr']:.4f}  Hits@1 {metrics['hits@1']:.4f}  "
        f"Hits@3 {metrics['hits@3']:.4f}  Hits@10 {metrics['hits@10']:.4f}  "
        f"({int(metrics['triples'])} triples, filtered, both directions)"
    )


@kg.group("queries")
def queries() -> None:
    """Generate BetaE-style complex-query sets and summarize query sets."""


@queries.command("generate")
@click.option("--dataset", required=True, help=_DATASET_HELP)
@click.option("--per-structure", type=int, default=100, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--splits", default="valid,test", show_default=True, help="comma-separated: train,valid,test"
)
@click.option(
    "--structures", default="all", show_default=True, help="comma-separated BetaE names or 'all'"
)
@click.option("--max-answers", type=int, default=None, help="BetaE's cap on answers per query")
@click.option("--no-reciprocal", is_flag=True, help="do not walk inverse relations")
@click.option(
    "--max-attempts",
    type=int,
    default=None,
    help="candidates tried per structure [default: 200 × per-structure + 1000]",
)
@click.option("--seed", type=int, default=0, show_default=True)
def generate(
    dataset: str,
    per_structure: int,
    out: Path,
    splits: str,
    structures: str,
    max_answers: int | None,
    no_reciprocal: bool,
    max_attempts: int | None,
    seed: int,
) -> None:
    """Generate queries of the 14 BetaE structures with easy/hard answers into OUT."""
    from metalab.kg.graphs import load_graph
    from metalab.kg.querysets import format_stats_table, query_set_stats
    from metalab.kg.workflows import generate_query_set

    for flag, value in (
        ("--per-structure", per_structure),
        ("--max-answers", max_answers),
        ("--max-attempts", max_attempts),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    names = None if structures == "all" else [s.strip() for s in structures.split(",") if s.strip()]
    query_set = generate_query_set(
        load_graph(dataset),
        out,
        splits=[s.strip() for s in splits.split(",") if s.strip()],
        per_structure=per_structure,
        structures=names,
        max_answers=max_answers,
        reciprocal=not no_reciprocal,
        max_attempts=max_attempts,
        seed=seed,
    )
    click.echo(format_stats_table(query_set_stats(query_set)))
    short = {
        s: {k: v for k, v in g["accepted"].items() if v < per_structure}
        for s, g in query_set.meta["generation"].items()
    }
    for split, missing in short.items():
        if missing:
            click.echo(
                f"note: {split}: fewer than {per_structure} distinct queries found for "
                f"{', '.join(f'{k} ({v})' for k, v in missing.items())}"
            )
    click.echo(f"saved to {out}")


@queries.command("stats")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
def stats(folder: Path, as_json: bool) -> None:
    """Counts, answer sizes and single-missing-link share of a query-set FOLDER.

    FOLDER is one written by `queries generate` or a BetaE/Query2Box pickle folder.
    """
    from metalab.kg.querysets import format_stats_table, load_query_set, query_set_stats

    table = query_set_stats(load_query_set(folder))
    click.echo(json.dumps(table, indent=2) if as_json else format_stats_table(table))


@kg.command("answer")
@click.argument("query")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="saved predictor")
@click.option(
    "--solver", type=click.Choice(["beam", "co", "exact"]), default="beam", show_default=True
)
@click.option("--k", "beam_k", type=int, default=16, show_default=True, help="beam width")
@click.option("--top", type=int, default=10, show_default=True, help="answers to print")
@click.option("--tnorm", default="product", show_default=True, help="product, godel or lukasiewicz")
@click.option("--union", type=click.Choice(["max", "tconorm"]), default="max", show_default=True)
@click.option("--explain", "explain_flag", is_flag=True, help="show each answer's explanation")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option(
    "--dataset", default=None, help=f"{_DATASET_HELP}, to mark known edges [default: the model's]"
)
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
def answer(
    query: str,
    model: Path,
    solver: str,
    beam_k: int,
    top: int,
    tnorm: str,
    union: str,
    explain_flag: bool,
    as_json: bool,
    dataset: str | None,
    device: str,
) -> None:
    """Answer a complex QUERY with CQD (grammar: packages/metalab/kg/QUERIES.md).

    Example: metalab kg answer --model models/nations-complex --explain
    "treaties(usa, ?y) & embassy(?y, ?x)"
    """
    from metalab.core.device import resolve_device
    from metalab.kg.answering import answer_query, format_answers, known_edges
    from metalab.kg.solvers import SolverConfig
    from metalab.kg.training import load_link_predictor
    from metalab.kg.workflows import model_graph

    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    config = SolverConfig(solver=solver, k=beam_k, tnorm=tnorm, union=union)
    predictor = load_link_predictor(model, device=resolve_device(device))
    known = None
    has_source = bool(predictor.metadata.get("dataset_source"))
    if dataset is not None or (explain_flag and has_source):  # --dataset is checked if unused
        graph = model_graph(predictor, dataset, model)
        if explain_flag:
            known = known_edges(graph)
    result = answer_query(
        predictor, query, config, top=top, explain_answers=explain_flag, known=known
    )
    if as_json:
        click.echo(json.dumps(result.to_json(predictor), indent=2))
    else:
        click.echo(format_answers(result, predictor))


@kg.command("evaluate")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="saved predictor")
@click.option(
    "--queries",
    "folder",
    type=click.Path(path_type=Path),
    required=True,
    help="query-set folder (`metalab kg queries generate` or BetaE pickles)",
)
@click.option(
    "--solver",
    "solvers",
    default="beam",
    show_default=True,
    help="comma-separated: beam, co, exact",
)
@click.option("--split", default="test", show_default=True)
@click.option("--k", "beam_k", type=int, default=16, show_default=True, help="beam width")
@click.option("--tnorm", default="product", show_default=True)
@click.option("--co-steps", type=int, default=1000, show_default=True)
@click.option("--structures", default="all", show_default=True, help="comma-separated or 'all'")
@click.option("--json", "as_json", is_flag=True, help="print the tables as JSON")
@click.option("--device", default="auto", show_default=True, help=_DEVICE_HELP)
def evaluate(
    model: Path,
    folder: Path,
    solvers: str,
    split: str,
    beam_k: int,
    tnorm: str,
    co_steps: int,
    structures: str,
    as_json: bool,
    device: str,
) -> None:
    """Per-structure filtered MRR/Hits of CQD solvers on a query set (CQD Table 2)."""
    from metalab.core.device import resolve_device
    from metalab.kg.cqd_evaluation import evaluate_queries, format_structure_table
    from metalab.kg.querysets import load_query_set
    from metalab.kg.solvers import SolverConfig
    from metalab.kg.training import load_link_predictor

    names = [s.strip() for s in solvers.split(",") if s.strip()]
    if not names:
        raise ConfigError(f"--solver {solvers!r} names no solver; use beam, co and/or exact")
    configs = {n: SolverConfig(n, k=beam_k, tnorm=tnorm, co_steps=co_steps) for n in names}
    predictor = load_link_predictor(model, device=resolve_device(device))
    query_set = load_query_set(folder)
    wanted = None if structures == "all" else [s.strip() for s in structures.split(",")]
    tables = {
        name: evaluate_queries(predictor, query_set, config, split=split, structures=wanted)
        for name, config in configs.items()
    }
    click.echo(json.dumps(tables, indent=2) if as_json else format_structure_table(tables))
