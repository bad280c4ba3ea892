"""Link predictors through pykeen, and the uniform batched scoring interface the solvers use.

The default is the CQD recipe (Arakelyan et al. 2021, Sec. 4 and App. A; Lacroix et al. 2018):
ComplEx trained on reciprocal triples with 1-vs-all cross-entropy (pykeen's LCWA loop),
Adagrad lr 0.1, embeddings initialized N(0, 1e-3) and the N3 regularizer
``weight · Σ |x|³`` = pykeen's ``PowerSumRegularizer(p=3, normalize=False)``. Any pykeen
model (ComplEx, DistMult, RotatE, TuckER, ...) is chosen by name through pykeen's
``model_resolver``.

Scores are indexed by *query relation ids* (relation ``k`` is ``2k``, its inverse ``2k+1``;
see :mod:`metalab.kg.graphs`): with reciprocal training these are pykeen's internal ids;
without, an inverse relation is scored as head prediction of the forward one.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from metalab.core.errors import ConfigError, UnknownNameError, first_line
from metalab.kg.graphs import Vocabulary

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "LinkPredictor",
    "PredictorConfig",
    "build_pykeen_model",
    "resolve_model_class",
]

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of score/intermediate tensors per scoring chunk
_WORKSPACE_FACTOR = 4  # scores + pykeen's intermediates per scored (row, entity) pair


@dataclass(frozen=True)
class PredictorConfig:
    """How to build and train a link predictor (defaults: the CQD ComplEx-N3 recipe).

    Attributes:
        model: a pykeen model name (``complex``, ``distmult``, ``rotate``, ``tucker``, ...).
        dim: embedding dimension (complex dimension for ComplEx/RotatE; CQD calls it rank).
        epochs: training epochs.
        batch_size: (head, relation) rows per LCWA batch (CQD used 1000 on FB15k-237; on
            the small bundled graphs 500 gave higher and steadier MRR, see kg-link-prediction).
        lr: learning rate.
        optimizer: a pykeen/torch optimizer name (Adagrad in CQD).
        loss: a pykeen loss name (cross-entropy over all tails = CQD's 1-vs-all objective).
        training_loop: ``lcwa`` (1-vs-all) or ``slcwa`` (negative sampling).
        regularizer_weight: N3 weight (``PowerSumRegularizer(p=3, normalize=False)``); 0 = none.
        init_std: std of the N(0, σ²) entity/relation initialization; ``None`` = pykeen's default.
        reciprocal: train on reciprocal triples (pykeen ``create_inverse_triples``).
    """

    model: str = "complex"
    dim: int = 200
    epochs: int = 100
    batch_size: int = 500
    lr: float = 0.1
    optimizer: str = "adagrad"
    loss: str = "crossentropy"
    training_loop: str = "lcwa"
    regularizer_weight: float = 0.005
    init_std: float | None = 1e-3
    reciprocal: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.regularizer_weight < 0:
            raise ConfigError("lr must be > 0 and regularizer_weight ≥ 0")
        if self.init_std is not None and self.init_std <= 0:
            raise ConfigError(f"init_std must be > 0 or None, got {self.init_std}")


# pykeen models that need more than the (head, relation, tail) ids of a KGInfo: they would
# fail with a traceback when built or trained here, so they are refused by name with why.
UNSUPPORTED_MODELS = {
    "complexliteral": "needs numeric literals besides triples",
    "distmultliteral": "needs numeric literals besides triples",
    "distmultliteralgated": "needs numeric literals besides triples",
    "compgcn": "needs the training graph's triples inside the model (message passing)",
    "rgcn": "needs the training graph's triples inside the model (message passing)",
    "nodepiece": "needs the training graph's triples to tokenize entities",
    "inductivenodepiece": "needs separate inductive training/inference graphs",
    "inductivenodepiecegnn": "needs separate inductive training/inference graphs",
    "cooccurrencefiltered": "wraps another model and needs the training triples",
    "fixed": "is pykeen's parameter-free test fixture, not a trainable link predictor",
}


def supported_models() -> list[str]:
    """The pykeen model names that train on plain triples here (all but the unsupported)."""
    from pykeen.models import model_resolver

    return sorted(set(model_resolver.options) - set(UNSUPPORTED_MODELS))


def resolve_model_class(name: str) -> type:
    """The pykeen model class for ``name`` (any spelling pykeen's resolver accepts).

    Raises:
        ConfigError: a pykeen model that needs inputs other than triples.
        UnknownNameError: no such pykeen model (the supported ones are listed).
    """
    from pykeen.models import model_resolver

    try:
        cls = model_resolver.lookup(name)
    except (KeyError, ValueError):
        raise UnknownNameError("pykeen model", name, supported_models()) from None
    key = model_resolver.normalize_cls(cls)
    if key in UNSUPPORTED_MODELS:
        raise ConfigError(
            f"pykeen model {name!r} {UNSUPPORTED_MODELS[key]}; not supported here "
            "(use complex, distmult, rotate, tucker, ...)"
        )
    return cls


def _normal_init(tensor: torch.Tensor, *, std: float, **_model_defaults: Any) -> torch.Tensor:
    """N(0, std²) init; ignores the keyword arguments a model passes to its own default init."""
    return torch.nn.init.normal_(tensor, std=std)


def build_pykeen_model(
    config: PredictorConfig, *, num_entities: int, num_relations: int, random_seed: int | None
) -> Any:
    """Instantiate the pykeen model of ``config`` for a graph of the given size.

    Initializer and N3 regularizer are passed only to models whose constructor takes them
    (TuckER, for instance, has no ``regularizer`` argument).

    Args:
        config: the predictor configuration.
        num_entities: number of entities.
        num_relations: number of base relations (inverses are added when ``config.reciprocal``).
        random_seed: seed for pykeen's initialization; ``None`` when weights are loaded after.

    Raises:
        UnknownNameError: unknown model name.
        ConfigError: the model cannot be built with these settings.
    """
    from pykeen.losses import loss_resolver
    from pykeen.regularizers import PowerSumRegularizer
    from pykeen.triples import KGInfo
    from pykeen.utils import NoRandomSeedNecessary

    cls = resolve_model_class(config.model)
    accepted = set(inspect.signature(cls.__init__).parameters)  # type: ignore[misc]
    kwargs: dict[str, Any] = {"embedding_dim": config.dim}
    if config.init_std is not None:
        init = functools.partial(_normal_init, std=config.init_std)
        kwargs.update(
            {k: init for k in ("entity_initializer", "relation_initializer") if k in accepted}
        )
    if config.regularizer_weight > 0 and "regularizer" in accepted:
        kwargs["regularizer"] = PowerSumRegularizer(
            p=3.0, normalize=False, weight=config.regularizer_weight
        )
    try:
        loss = loss_resolver.make(config.loss)
    except (KeyError, ValueError):
        raise UnknownNameError("pykeen loss", config.loss, sorted(loss_resolver.options)) from None
    info = KGInfo(
        num_entities=num_entities,
        num_relations=num_relations,
        create_inverse_triples=config.reciprocal,
    )
    seed = NoRandomSeedNecessary if random_seed is None else random_seed
    try:
        return cls(triples_factory=info, loss=loss, random_seed=seed, **kwargs)
    except (TypeError, ValueError, NotImplementedError) as exc:
        first = first_line(exc)
        raise ConfigError(f"cannot build pykeen model {config.model!r}: {first}") from None


class LinkPredictor:
    """A trained pykeen model with its vocabularies and a batched scoring interface.

    Every method takes *query relation ids* (``2k`` = relation ``k``, ``2k+1`` = its inverse)
    and returns raw scores (logits); solvers apply their own normalization (e.g. sigmoid).
    Scoring is chunked so that no chunk allocates more than ``memory_budget`` bytes of
    scores and intermediates (an estimate: ``rows × columns × 16`` bytes), and runs under
    ``torch.no_grad`` on the model's device. :meth:`score_embeddings` is differentiable.
    """

    def __init__(
        self,
        model: Any,
        *,
        entities: Vocabulary,
        relations: Vocabulary,
        config: PredictorConfig,
        metadata: dict[str, Any] | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self.model = model.eval()
        self.entities, self.relations, self.config = entities, relations, config
        self.metadata = dict(metadata or {})
        self.memory_budget = int(memory_budget)

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def num_entities(self) -> int:
        """Number of entities (columns of :meth:`score_tails`)."""
        return len(self.entities)

    @property
    def num_query_relations(self) -> int:
        """Number of query relation ids (relations and their inverses)."""
        return 2 * len(self.relations)

    @property
    def query_relations(self) -> Vocabulary:
        """Names of the query relation ids (``r``, ``r^-1``, ...)."""
        from metalab.kg.graphs import INVERSE_SUFFIX

        names = [n for name in self.relations.names for n in (name, name + INVERSE_SUFFIX)]
        return Vocabulary(tuple(names), "relation")

    def to(self, device: torch.device | str) -> LinkPredictor:
        """Move the model to ``device`` (in place) and return ``self``."""
        self.model.to(device)
        return self

    def rows_per_chunk(self, columns: int) -> int:
        """How many score rows of ``columns`` entries fit the memory budget (at least 1)."""
        per_row = max(1, columns) * _WORKSPACE_FACTOR * 4
        return max(1, self.memory_budget // per_row)

    # ------------------------------------------------------------------ scoring
    def score_tails(
        self,
        heads: torch.Tensor,
        relations: torch.Tensor,
        *,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of all (or candidate) tails for a batch of (head, query relation) pairs.

        Args:
            heads: ``[B]`` entity ids.
            relations: ``[B]`` query relation ids.
            candidates: ``None`` (all entities), ``[K]`` tail ids shared by the batch, or
                ``[B, K]`` tail ids per row.

        Returns:
            ``[B, N]`` (or ``[B, K]``) float32 scores on the model's device.
        """
        heads, relations = self._check(heads, "entity"), self._check(relations, "relation")
        if heads.shape != relations.shape or heads.dim() != 1:
            raise ConfigError("heads and relations must be 1-d tensors of the same length")
        if candidates is not None:
            candidates = self._check(candidates, "entity")
        columns = self.num_entities if candidates is None else candidates.shape[-1]
        step = self.rows_per_chunk(columns)
        chunks = []
        with torch.no_grad():
            for start in range(0, heads.shape[0], step):
                part = None
                if candidates is not None:
                    part = candidates if candidates.dim() == 1 else candidates[start : start + step]
                chunks.append(
                    self._score_chunk(
                        heads[start : start + step], relations[start : start + step], part
                    )
                )
        if not chunks:
            return torch.empty(0, columns, device=self.device)
        return torch.cat(chunks)

    def score_triples(
        self, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor
    ) -> torch.Tensor:
        """Scores ``[B]`` of the triples ``(heads[i], relations[i], tails[i])``."""
        tails = self._check(tails, "entity")
        return self.score_tails(heads, relations, candidates=tails[:, None])[:, 0]

    def relation_matrix(self, relation: int, *, heads: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[H, N]`` of every (head, tail) pair of one query relation."""
        if heads is None:
            heads = torch.arange(self.num_entities, device=self.device)
        return self.score_tails(heads, torch.full_like(heads, int(relation)))

    # ------------------------------------------------------------------ embeddings (CQD-CO)
    def entity_embeddings(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Entity representations (complex for ComplEx/RotatE), all entities if ``ids`` is None."""
        reps = self._single_representation("entity_representations")
        out: torch.Tensor = reps(indices=None if ids is None else self._check(ids, "entity"))
        return out

    def score_embeddings(
        self, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor
    ) -> torch.Tensor:
        """Scores of (free) head embeddings against tail embeddings, differentiable.

        Args:
            heads: ``[B, *dims]`` head representations (e.g. CQD-CO's relaxed variable embeddings).
            relations: ``[B]`` query relation ids.
            tails: ``[K, *dims]`` representations, scored against every row.

        Returns:
            ``[B, K]`` scores (equal to :meth:`score_tails` when the embeddings are entities').
        """
        rel_reps = self._single_representation("relation_representations")
        internal, swap = self._internal_relations(self._check(relations, "relation"))
        h, r, t = heads[:, None], rel_reps(indices=internal)[:, None], tails[None, :]
        scores = self.model.interaction(h=h, r=r, t=t)
        if bool(swap.any()):  # inverse relation without reciprocal training: score(t, r, h)
            scores = torch.where(swap[:, None], self.model.interaction(h=t, r=r, t=h), scores)
        return scores

    # ------------------------------------------------------------------ internals
    def _score_chunk(
        self, heads: torch.Tensor, relations: torch.Tensor, candidates: torch.Tensor | None
    ) -> torch.Tensor:
        internal, swap = self._internal_relations(relations)
        out = torch.empty(
            heads.shape[0],
            self.num_entities if candidates is None else candidates.shape[-1],
            device=self.device,
        )
        fwd = ~swap
        if bool(fwd.any()):
            cand = candidates if candidates is None or candidates.dim() == 1 else candidates[fwd]
            batch = torch.stack([heads[fwd], internal[fwd]], dim=1)
            out[fwd] = self.model.score_t(hr_batch=batch, tails=cand).float()
        if bool(swap.any()):
            cand = candidates if candidates is None or candidates.dim() == 1 else candidates[swap]
            batch = torch.stack([internal[swap], heads[swap]], dim=1)
            out[swap] = self.model.score_h(rt_batch=batch, heads=cand).float()
        return out

    def _internal_relations(self, relations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pykeen relation ids and a mask of rows to score as head prediction."""
        if self.config.reciprocal:
            return relations, torch.zeros_like(relations, dtype=torch.bool)
        return relations // 2, relations % 2 == 1

    def _single_representation(self, attribute: str) -> Any:
        reps = getattr(self.model, attribute, None)
        if reps is None or len(reps) != 1:
            raise ConfigError(
                f"model {self.config.model!r} has no single {attribute[:-16]} "
                "embedding table; embedding-level scoring needs one"
            )
        return reps[0]

    def _check(self, ids: torch.Tensor, kind: str) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        bound = self.num_entities if kind == "entity" else self.num_query_relations
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= bound):
            raise ConfigError(
                f"{kind} ids must lie in [0, {bound}), got range "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )
        return ids
