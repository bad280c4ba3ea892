"""Experiment runners of ``experiments/kg/`` (see each TOML file for the claim it checks)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from metalab.core.claims import RunConfig, runner_params
from metalab.core.config import at_least, non_negative, nonempty, positive
from metalab.core.figures import plot_curves
from metalab.core.runs import Run

__all__ = ["LinkPredictionParams", "link_prediction"]


@dataclass
class LinkPredictionParams:
    """Parameters of ``kg-link-prediction`` (defaults: CQD's ComplEx-N3 recipe at dim 200)."""

    datasets: list[str] = nonempty(lambda: ["umls", "kinships", "nations"])
    model: str = "complex"
    dim: int = at_least(1, 200)
    epochs: int = at_least(1, 100)
    batch_size: int = at_least(1, 500)
    lr: float = positive(0.1)
    regularizer_weight: float = non_negative(0.005)
    init_std: float = positive(1e-3)
    threads: int = non_negative(1)  # torch threads while training; 0 = torch default
    eval_batch_size: int = at_least(1, 256)
    targets: dict[str, float] = field(default_factory=dict)


@runner_params(LinkPredictionParams)
def link_prediction(config: RunConfig, run: Run) -> dict[str, float]:
    """Train the CQD link predictor on each dataset and report filtered test MRR/Hits.

    Arakelyan et al. 2021 (CQD), Sec. 4: ComplEx + N3, reciprocal relations, 1-vs-all
    cross-entropy, Adagrad. Each dataset is a resumable stage; metrics are
    ``<dataset>.test_mrr``, ``.test_hits@{1,3,10}``, ``.valid_mrr``, ``.train_seconds`` and,
    for each dataset with a target MRR in ``targets``, ``.mrr_minus_target`` (the checks).
    """
    p = config.typed(LinkPredictionParams)
    metrics: dict[str, float] = {}
    curves = {}
    for dataset in p.datasets:
        result = run.stage(f"train-{dataset}", functools.partial(_train_one, dataset, p, config))
        for key, value in result.items():
            if key != "losses":
                metrics[f"{dataset}.{key}"] = value
        if dataset in p.targets:
            metrics[f"{dataset}.mrr_minus_target"] = result["test_mrr"] - p.targets[dataset]
        curves[dataset] = (list(range(1, len(result["losses"]) + 1)), result["losses"])
        run.log(None, dataset=dataset, **{k: v for k, v in result.items() if k != "losses"})
    plot_curves(
        run.figure_path("training_loss"),
        curves,
        xlabel="epoch",
        ylabel="cross-entropy + N3",
        title="ComplEx-N3 training loss",
        logy=True,
    )
    return metrics


def _train_one(dataset: str, p: LinkPredictionParams, config: RunConfig) -> dict[str, Any]:
    from metalab.kg.evaluation import evaluate_link_prediction
    from metalab.kg.graphs import load_graph
    from metalab.kg.predictors import PredictorConfig
    from metalab.kg.training import train_link_predictor

    graph = load_graph(dataset)
    predictor_config = PredictorConfig(
        model=p.model,
        dim=p.dim,
        epochs=p.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        regularizer_weight=p.regularizer_weight,
        init_std=p.init_std,
    )
    predictor = train_link_predictor(
        graph,
        predictor_config,
        generator=config.generator(f"init/{dataset}"),
        device=config.torch_device,
        num_threads=p.threads or None,
    )
    test = evaluate_link_prediction(predictor, graph, split="test", batch_size=p.eval_batch_size)
    valid = evaluate_link_prediction(predictor, graph, split="valid", batch_size=p.eval_batch_size)
    out: dict[str, Any] = {f"test_{k}": v for k, v in test.items() if k != "triples"}
    out["valid_mrr"] = valid["mrr"]
    out["train_seconds"] = predictor.metadata["training"]["seconds"]
    out["losses"] = predictor.metadata["training"]["losses"]
    return out
