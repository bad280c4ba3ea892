"""Experiment runners of the CQD solvers (``experiments/kg/cqd-*.toml``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

from metalab.core.claims import RunConfig, runner_params
from metalab.core.config import at_least, non_negative, nonempty
from metalab.core.figures import plot_curves
from metalab.core.runs import Run

__all__ = [
    "ExactVsBeamParams",
    "ExplanationsParams",
    "StructuresParams",
    "exact_vs_beam",
    "explanations",
    "last_atom_baseline",
    "structures",
]

_POSITIVE = ("2p", "3p", "ip", "pi", "up")


def _setup(p: Any, config: RunConfig) -> tuple[Any, Any, list[Any]]:
    """Train the CQD link predictor on ``p.dataset`` and generate its test queries."""
    from metalab.kg import PredictorConfig, generate_queries, load_graph, train_link_predictor

    graph = load_graph(p.dataset)
    predictor = train_link_predictor(
        graph,
        PredictorConfig(dim=p.dim, epochs=p.epochs),
        generator=config.generator("init"),
        device=config.torch_device,
        num_threads=getattr(p, "threads", 1) or None,
    )
    queries, _ = generate_queries(
        graph,
        split="test",
        per_structure=p.per_structure,
        structures=p.structures,
        generator=config.generator("queries"),
    )
    return graph, predictor, queries


def _mean_mrr(scores: torch.Tensor, queries: list[Any]) -> dict[str, float]:
    """Filtered MRR per structure of ``scores`` for grounded ``queries``."""
    from metalab.kg import metrics_by_structure, query_metrics, rank_answers

    ranks = rank_answers(scores.cpu(), [q.easy for q in queries], [q.hard for q in queries])
    table = metrics_by_structure([q.structure for q in queries], query_metrics(ranks))
    return {s: row["mrr"] for s, row in table.items()}


@dataclass
class ExactVsBeamParams:
    """Parameters of ``cqd-exact-vs-beam``."""

    dataset: str = "umls"
    dim: int = at_least(1, 200)
    epochs: int = at_least(1, 100)
    per_structure: int = at_least(1, 100)
    structures: list[str] = nonempty(lambda: list(_POSITIVE))
    ks: list[int] = nonempty(lambda: [1, 2, 4, 8, 16, 32, 64], ge=1)
    tnorm: str = "product"
    threads: int = non_negative(1)  # torch threads while training; 0 = torch default


@runner_params(ExactVsBeamParams)
def exact_vs_beam(config: RunConfig, run: Run) -> dict[str, float]:
    """Exact max-product inference vs CQD-Beam: objective gap and MRR as k grows.

    The exact solver maximizes CQD's objective (Arakelyan et al. 2021, Eq. 3) over all
    entities, so for every query and every answer its score is ≥ Beam's; Beam reaches it at
    ``k = N``. Metrics: ``min_gap`` (min over queries and entities of exact − beam, over all
    k; ≥ 0 up to round-off), ``gap_k<k>`` (mean over queries of the best-answer objective
    gap), ``gap_nonincreasing`` (1 when the mean gap never grows with k),
    ``gap_at_full_k`` (max gap at k = N), ``mrr_exact`` and ``mrr_k<k>``.
    """
    from metalab.kg import SolverConfig, solve

    p = config.typed(ExactVsBeamParams)
    graph, predictor, queries = _setup(p, config)
    trees = [q.query for q in queries]

    def mrr(scores: torch.Tensor) -> float:
        table = _mean_mrr(scores, queries)
        return sum(table.values()) / len(table)

    exact = solve(predictor, trees, SolverConfig("exact", tnorm=p.tnorm)).scores
    metrics = {"mrr_exact": mrr(exact), "queries": float(len(trees))}
    gaps, mrrs, min_gap = [], [], float("inf")
    ks = sorted({*p.ks, graph.num_entities})
    for k in ks:
        beam = solve(predictor, trees, SolverConfig("beam", k=k, tnorm=p.tnorm)).scores
        min_gap = min(min_gap, float((exact - beam).min()))
        gap = float((exact.max(1).values - beam.max(1).values).mean())
        gaps.append(gap)
        mrrs.append(mrr(beam))
        metrics[f"gap_k{k}"], metrics[f"mrr_k{k}"] = gap, mrrs[-1]
        if k == graph.num_entities:
            metrics["gap_at_full_k"] = float((exact - beam).abs().max())
        run.log(k, gap=gap, mrr=mrrs[-1], min_gap=min_gap)
    metrics["min_gap"] = min_gap
    metrics["gap_nonincreasing"] = float(all(b <= a + 1e-7 for a, b in itertools.pairwise(gaps)))
    _plot_gaps(run, p.dataset, ks, gaps, mrrs, metrics["mrr_exact"])
    return metrics


def _plot_gaps(
    run: Run, dataset: str, ks: list[int], gaps: list[float], mrrs: list[float], exact: float
) -> None:
    title = f"CQD-Beam vs exact on {dataset}"
    plot_curves(
        run.figure_path("gap_vs_k"),
        {"objective gap (exact − beam)": (ks, gaps)},
        xlabel="beam width k",
        ylabel="mean best-answer gap",
        title=title,
    )
    plot_curves(
        run.figure_path("mrr_vs_k"),
        {"beam": (ks, mrrs)},
        xlabel="beam width k",
        ylabel="MRR (mean over structures)",
        title=title,
        hlines={"exact": exact},
    )


@dataclass
class StructuresParams:
    """Parameters of ``cqd-structures``."""

    dataset: str = "umls"
    dim: int = at_least(1, 200)
    epochs: int = at_least(1, 100)
    per_structure: int = at_least(1, 100)
    structures: list[str] = nonempty(lambda: ["1p", "2p", "3p", "2i", "3i", "ip", "pi", "2u", "up"])
    k: int = at_least(1, 16)
    co_steps: int = at_least(1, 1000)
    co_regularizer: float = non_negative(0.01)
    tnorm: str = "product"
    threads: int = non_negative(1)  # torch threads while training; 0 = torch default


def last_atom_baseline(predictor: Any, trees: list[Any]) -> torch.Tensor:
    """Scores ``max_h φ(h, r, t)`` of the last atom's relation ``r`` alone (anchors ignored)."""
    from metalab.kg.queries import Projection

    rows = []
    for tree in trees:
        node = tree
        while not isinstance(node, Projection):
            node = node.args[0] if hasattr(node, "args") else node.arg
        rows.append(torch.sigmoid(predictor.relation_matrix(node.relation)).max(0).values)
    return torch.stack(rows)


@runner_params(StructuresParams)
def structures(config: RunConfig, run: Run) -> dict[str, float]:
    """Per-structure MRR of CQD-Beam, CQD-CO and exact inference vs a structure-blind baseline.

    Arakelyan et al. 2021, Table 2: a link predictor trained on single triples answers complex
    queries; Beam beats CO on chains (2p, 3p). Runs on ``p.dataset`` (``cqd-structures``: UMLS,
    ``cqd-structures-kinships``: Kinships). Metrics ``<solver>.<structure>`` (MRR),
    ``<solver>.avg``, ``beam_minus_co_2p``/``_3p``, ``<solver>.min_margin_over_baseline`` (the
    smallest per-structure MRR margin over the last-atom baseline, 1p excluded since there
    the baseline's atom is the whole query minus its anchor) and its min over solvers.
    """
    from metalab.kg import (
        SolverConfig,
        solve,
    )

    p = config.typed(StructuresParams)
    _, predictor, queries = _setup(p, config)
    trees = [q.query for q in queries]
    solvers = {
        name: SolverConfig(
            name, k=p.k, tnorm=p.tnorm, co_steps=p.co_steps, co_regularizer=p.co_regularizer
        )
        for name in ("beam", "co", "exact")
    }
    scores = {name: solve(predictor, trees, c).scores for name, c in solvers.items()}
    scores["baseline"] = last_atom_baseline(predictor, trees)
    metrics: dict[str, float] = {}
    for name, values in scores.items():
        table = _mean_mrr(values, queries)
        metrics.update({f"{name}.{structure}": v for structure, v in table.items()})
        metrics[f"{name}.avg"] = sum(table.values()) / len(table)
        run.log(None, solver=name, **table)
    metrics["beam_minus_co_2p"] = metrics["beam.2p"] - metrics["co.2p"]
    metrics["beam_minus_co_3p"] = metrics["beam.3p"] - metrics["co.3p"]
    for s in solvers:
        metrics[f"{s}.min_margin_over_baseline"] = min(
            metrics[f"{s}.{q}"] - metrics[f"baseline.{q}"] for q in p.structures if q != "1p"
        )
    metrics["min_margin_over_baseline"] = min(
        metrics[f"{s}.min_margin_over_baseline"] for s in solvers
    )
    return metrics


@dataclass
class ExplanationsParams:
    """Parameters of ``cqd-explanations``."""

    dataset: str = "umls"
    dim: int = at_least(1, 200)
    epochs: int = at_least(1, 100)
    per_structure: int = at_least(1, 50)
    structures: list[str] = nonempty(lambda: ["2p", "3p", "ip", "pi", "up"])
    k: int = at_least(1, 16)
    examples: int = non_negative(5)  # explanations written to examples.txt; 0 = none


@runner_params(ExplanationsParams)
def explanations(config: RunConfig, run: Run) -> dict[str, float]:
    """Explanations of CQD-Beam's hard answers: how many rest on a predicted (missing) link.

    Arakelyan et al. 2021, Sec. 5: the best branch per answer explains it. A hard answer is
    not an answer on the training graph, so for a negation-free query an explanation made of
    known training edges only would prove it easy: every hard answer's explanation must use
    at least one predicted link (``share_predicted`` = 1). Also reported: the share of atoms
    that are predicted, the share of explanations that re-score exactly, and examples by name
    in ``examples.txt``.
    """
    from metalab.kg import (
        SolverConfig,
        explain,
        known_edges,
        rescore_explanation,
        solve,
    )
    from metalab.kg.answering import _atom_text

    p = config.typed(ExplanationsParams)
    graph, predictor, queries = _setup(p, config)
    solver = SolverConfig("beam", k=p.k)
    solution = solve(predictor, [q.query for q in queries], solver)
    known = known_edges(graph)
    total = predicted = exact = atoms = predicted_atoms = 0
    lines: list[str] = []
    for index, query in enumerate(queries):
        for answer in query.hard:
            ex = explain(predictor, solution, index, answer, known=known)
            total += 1
            atoms += len(ex.atoms)
            predicted_atoms += sum(not a.known for a in ex.atoms)
            predicted += any(not a.known for a in ex.atoms)
            exact += rescore_explanation(predictor, ex, solver) == ex.score
            if len(lines) < 6 * p.examples and index % max(1, len(queries) // p.examples) == 0:
                lines.append(f"[{query.structure}] answer {graph.entities.name(answer)}:")
                lines += [
                    f"    {_atom_text(a, predictor)}  φ={a.truth:.3f} "
                    f"{'known' if a.known else 'PREDICTED'}"
                    for a in ex.atoms
                ]
    (run.dir / "examples.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "hard_answers": float(total),
        "share_predicted": predicted / max(1, total),
        "share_predicted_atoms": predicted_atoms / max(1, atoms),
        "share_rescored_exactly": exact / max(1, total),
    }
