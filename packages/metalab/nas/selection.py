"""Architecture selection from a trained supernet: α magnitude vs perturbation (DARTS-PT).

* Magnitude (Liu et al. 2019, Sec. 2.4): per edge keep ``argmax_{o ≠ none} α_o``; in a
  DARTS cell each node keeps the 2 in-edges with the largest such α.
* Perturbation (Wang et al. 2021, Alg. 1, as in the reference code): edges in random
  order; for each op of the edge set its mixing weight to 0 (the others are not
  renormalized) and evaluate the supernet on the whole validation split, batch norm in
  train mode; keep the op whose removal hurts most (lowest accuracy, ties: highest
  loss); discretize the edge (one-hot) and fine-tune the supernet before the next edge.
  Topology (DARTS cell, Alg. 2): per node in random order, repeatedly delete the in-edge
  whose removal leaves the highest validation accuracy until 2 remain, fine-tuning in
  between. The perturbed supernets of one decision are evaluated in one ``vmap`` over
  their mixing weights (:func:`perturbation_scores`), or one by one (``batched=False``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from class_resolver import ClassResolver
from torch import Tensor
from torch.func import vmap

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.nas.network import Supernet
from metalab.nas.search import DartsSearch, darts_epoch
from metalab.nas.space import Cell, SearchSpace

__all__ = [
    "MagnitudeSelection",
    "PerturbationSelection",
    "SelectionResult",
    "SelectionRule",
    "magnitude_choices",
    "make_selection",
    "perturbation_scores",
    "selection_names",
    "selection_resolver",
]


@dataclass
class SelectionResult:
    """The selected cell and the record of how it was chosen."""

    cell: Cell
    decisions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def magnitude_choices(space: SearchSpace, alpha: Tensor) -> tuple[list[int], list[bool]]:
    """Per-edge ``argmax_{o ≠ none} α`` and, in DARTS cells, the top-k in-edges per node."""
    scores = alpha.detach().clone().float()
    if "none" in space.ops and len(space.ops) > 1:
        scores[:, space.ops.index("none")] = -float("inf")
    best, choices = scores.max(dim=-1)
    alive = [True] * len(space.edges)
    if space.keep_inputs is not None:
        for node in space.topology.intermediate:
            edges = space.topology.in_edges(node)
            ranked = sorted(edges, key=lambda e: -float(best[e]))
            for e in ranked[space.keep_inputs :]:
                alive[e] = False
    return [int(c) for c in choices], alive


def perturbation_scores(
    model: Supernet,
    candidates: Tensor,
    val: tuple[Tensor, Tensor],
    *,
    batch_size: int = 64,
    batched: bool = True,
) -> tuple[Tensor, Tensor]:
    """Validation (accuracy, loss) of the supernet under each candidate mixing-weight set.

    Args:
        model: the supernet (batch norm uses batch statistics, as in train mode).
        candidates: ``[P, E, O]`` mixing weights, one perturbed set per candidate.
        val: the whole validation split.
        batch_size: evaluation batch size (the batch statistics are per batch).
        batched: evaluate all ``P`` candidates in one ``vmap`` per batch, else one by one.

    Returns:
        ``(accuracy [P], mean loss [P])``.
    """
    x, y = val
    correct = torch.zeros(len(candidates), device=x.device)
    loss = torch.zeros(len(candidates), device=x.device)
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            if batched:
                logits = vmap(lambda w, xb=xb: model(xb, w))(candidates)
            else:
                logits = torch.stack([model(xb, w) for w in candidates])
            correct += (logits.argmax(-1) == yb).sum(-1)
            flat = logits.reshape(-1, logits.shape[-1])
            loss += (
                F.cross_entropy(flat, yb.repeat(len(candidates)), reduction="none")
                .view(len(candidates), -1)
                .sum(-1)
            )
    return correct / len(x), loss / len(x)


class SelectionRule:
    """Turns a trained supernet (a :class:`DartsSearch`) into a discrete cell."""

    name: ClassVar[str]

    def select(self, search: DartsSearch, *, generator: torch.Generator) -> SelectionResult:
        """Select a cell; the search itself is left unchanged."""
        raise NotImplementedError


class MagnitudeSelection(SelectionRule):
    """DARTS's rule: the strongest non-``none`` α per edge (top-2 edges per DARTS node)."""

    name = "magnitude"

    def select(self, search: DartsSearch, *, generator: torch.Generator) -> SelectionResult:
        """Read the cell off α (no training, ``generator`` unused)."""
        started = time.perf_counter()
        choices, alive = magnitude_choices(search.space, search.model.alpha)
        cell = search.space.cell_from_choices(choices, alive)
        return SelectionResult(cell, [], time.perf_counter() - started)


class PerturbationSelection(SelectionRule):
    """DARTS-PT: discretize edge by edge by the accuracy drop of removing each operation.

    Args:
        tune_epochs: supernet fine-tuning epochs after each decision (paper: 5).
        tune_lr: the fine-tuning SGD learning rate (paper: 0.0025, momentum 0.9, wd 3e-4).
        batched: evaluate an edge's perturbed supernets in one ``vmap``.
    """

    name = "perturbation"

    def __init__(self, tune_epochs: int = 5, tune_lr: float = 0.0025, batched: bool = True) -> None:
        if tune_epochs < 0 or tune_lr <= 0:
            raise ConfigError(
                f"need tune_epochs >= 0 and tune_lr > 0, got {tune_epochs}, {tune_lr}"
            )
        self.tune_epochs, self.tune_lr, self.batched = tune_epochs, tune_lr, batched

    def select(self, search: DartsSearch, *, generator: torch.Generator) -> SelectionResult:
        """Run Alg. 1 (and Alg. 2 for DARTS cells) on a copy of the search's supernet."""
        started = time.perf_counter()
        model = copy.deepcopy(search.model)
        tune = self._tuner(search, model, generator)
        decisions: list[dict[str, Any]] = []
        order = torch.randperm(len(search.space.edges), generator=generator).tolist()
        for step, edge in enumerate(order):
            decisions.append(self._decide_edge(search, model, edge))
            if step < len(order) - 1 or search.space.keep_inputs is not None:
                tune()
        if search.space.keep_inputs is not None:
            decisions += self._select_topology(search, model, tune, generator)
        choices = [model.decided[e] for e in range(len(search.space.edges))]
        alive = [e not in model.removed for e in range(len(search.space.edges))]
        cell = search.space.cell_from_choices(choices, alive)
        return SelectionResult(cell, decisions, time.perf_counter() - started)

    def _tuner(self, search: DartsSearch, model: Supernet, generator: torch.Generator) -> Any:
        w_opt = torch.optim.SGD(
            model.weight_parameters(),
            lr=self.tune_lr,
            momentum=0.9,
            weight_decay=search.config.w_weight_decay,
        )
        a_opt = None
        if not search.config.fixed_alpha:
            a_opt = torch.optim.Adam(
                model.arch_parameters(),
                lr=search.config.alpha_lr,
                betas=(0.5, 0.999),
                weight_decay=search.config.alpha_weight_decay,
            )

        def tune() -> None:
            for _ in range(self.tune_epochs):
                darts_epoch(
                    model,
                    search.data,
                    w_optimizer=w_opt,
                    a_optimizer=a_opt,
                    batch_size=search.config.batch_size,
                    generator=generator,
                    grad_clip=search.config.grad_clip,
                )

        return tune

    def _decide_edge(self, search: DartsSearch, model: Supernet, edge: int) -> dict[str, Any]:
        base = model.mixing_weights().detach()
        n_ops = base.shape[1]
        candidates = base.unsqueeze(0).repeat(n_ops, 1, 1)
        candidates[torch.arange(n_ops), edge, torch.arange(n_ops)] = 0.0
        acc, loss = perturbation_scores(
            model,
            candidates,
            search.data.val,
            batch_size=search.config.batch_size,
            batched=self.batched,
        )
        # lowest accuracy after removal = most important op; ties broken by highest loss
        chosen = int(torch.argmin(acc * 1e6 - loss))
        model.decided[edge] = chosen
        return {
            "edge": edge,
            "acc": acc.tolist(),
            "loss": loss.tolist(),
            "op": search.space.ops[chosen],
        }

    def _select_topology(
        self, search: DartsSearch, model: Supernet, tune: Any, generator: torch.Generator
    ) -> list[dict[str, Any]]:
        keep = search.space.keep_inputs or 0
        nodes = list(search.space.topology.intermediate)
        decisions = []
        for node in [nodes[i] for i in torch.randperm(len(nodes), generator=generator).tolist()]:
            while (
                len(
                    alive := [
                        e for e in search.space.topology.in_edges(node) if e not in model.removed
                    ]
                )
                > keep
            ):
                base = model.mixing_weights().detach()
                candidates = base.unsqueeze(0).repeat(len(alive), 1, 1)
                for k, e in enumerate(alive):
                    candidates[k, e] = 0.0
                acc, loss = perturbation_scores(
                    model,
                    candidates,
                    search.data.val,
                    batch_size=search.config.batch_size,
                    batched=self.batched,
                )
                # remove the edge whose removal leaves the best accuracy (ties: lowest loss)
                drop = alive[int(torch.argmax(acc * 1e6 - loss))]
                model.removed.add(drop)
                decisions.append({"node": node, "removed_edge": drop, "acc": acc.tolist()})
                tune()
        return decisions


selection_resolver: ClassResolver[SelectionRule] = ClassResolver(
    [MagnitudeSelection, PerturbationSelection], base=SelectionRule, suffix="Selection"
)


def selection_names() -> list[str]:
    """The registered selection rules."""
    return sorted(cls.name for cls in selection_resolver)


def make_selection(name: str, **options: Any) -> SelectionRule:
    """Build selection rule ``name`` (``magnitude`` or ``perturbation``) with ``options``.

    Raises:
        UnknownNameError: no such rule.
        ConfigError: an option the rule does not take.
    """
    try:
        cls = selection_resolver.lookup(name)
    except (KeyError, ValueError):
        raise UnknownNameError("selection rule", name, selection_names()) from None
    given = {k: v for k, v in options.items() if v is not None}
    if cls is MagnitudeSelection and given:
        raise ConfigError(f"selection 'magnitude' takes no options, got {', '.join(sorted(given))}")
    try:
        return cls(**given)
    except TypeError as exc:
        raise ConfigError(f"selection {name!r}: {exc}") from None
