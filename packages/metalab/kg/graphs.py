"""Knowledge graphs: vocabularies, nested train ⊂ valid ⊂ test graphs and reciprocal relations.

A :class:`KnowledgeGraph` holds three id-triple tensors (``train``, ``valid``, ``test``) over
one entity and one relation :class:`Vocabulary`. It comes from pykeen's bundled datasets
(``nations``, ``kinships``, ``umls``; read offline through pykeen) or from a folder of
tab-separated name triples (``train.txt``/``valid.txt``/``test.txt``, or ``.tsv``).

Reciprocal relations (CQD, Arakelyan et al. 2021, Sec. 4; BetaE's query graphs): every
triple ``(s, p, o)`` also gives ``(o, p⁻¹, s)``. In the *query relation* id space used by
queries, solvers and the scoring interface, relation ``k`` is ``2k`` and its inverse is
``2k + 1`` (named ``name^-1``) — the convention of BetaE's data and of pykeen's models
trained with inverse triples, so no remapping is ever needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.kg.triples_files import GraphFileError, read_triples_file, read_triples_files

__all__ = [
    "BUNDLED_DATASETS",
    "INVERSE_SUFFIX",
    "SPLITS",
    "GraphFileError",
    "KnowledgeGraph",
    "Vocabulary",
    "inverse_relation",
    "load_graph",
    "read_triples_file",
    "with_reciprocals",
]

BUNDLED_DATASETS = ("kinships", "nations", "umls")
SPLITS = ("train", "valid", "test")
INVERSE_SUFFIX = "^-1"
_FILE_SUFFIXES = (".txt", ".tsv")


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of unique names; id ``i`` is ``names[i]``.

    Args:
        names: the names in id order (must be unique and non-empty strings).
        kind: what the names are (``"entity"``, ``"relation"``), used in error messages.
    """

    names: tuple[str, ...]
    kind: str = "entity"
    _index: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        index = {name: i for i, name in enumerate(self.names)}
        if len(index) != len(self.names):
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})[:3]
            raise ConfigError(f"{self.kind} vocabulary has duplicate names: {', '.join(dupes)}")
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def id(self, name: str) -> int:
        """The id of ``name``; an unknown name raises :class:`UnknownNameError` with suggestions."""
        try:
            return self._index[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names) from None

    def ids(self, names: Iterable[str]) -> list[int]:
        """The ids of several names."""
        return [self.id(name) for name in names]

    def name(self, index: int) -> str:
        """The name of id ``index``."""
        if not 0 <= int(index) < len(self.names):
            raise ConfigError(f"{self.kind} id {index} out of range [0, {len(self.names)})")
        return self.names[int(index)]

    def to_json(self) -> list[str]:
        """JSON form: the list of names in id order."""
        return list(self.names)

    @classmethod
    def from_json(cls, data: Any, *, kind: str = "entity") -> Vocabulary:
        """Inverse of :meth:`to_json`; rejects anything but a list of strings."""
        if not isinstance(data, list) or not all(isinstance(n, str) and n for n in data):
            raise ConfigError(f"{kind} vocabulary must be a list of non-empty strings")
        return cls(tuple(data), kind)


def inverse_relation(relation: int | torch.Tensor) -> Any:
    """The query-relation id of the inverse of ``relation`` (``2k ↔ 2k+1``)."""
    return relation ^ 1


def with_reciprocals(triples: torch.Tensor) -> torch.Tensor:
    """Map base-id triples ``(s, k, o)`` to ``(s, 2k, o)`` plus ``(o, 2k+1, s)``.

    Args:
        triples: ``[n, 3]`` long tensor of base relation ids.

    Returns:
        ``[2n, 3]`` triples in the query relation id space (forward rows first).
    """
    s, k, o = triples.unbind(1)
    forward = torch.stack([s, 2 * k, o], dim=1)
    backward = torch.stack([o, 2 * k + 1, s], dim=1)
    return torch.cat([forward, backward])


@dataclass(frozen=True)
class KnowledgeGraph:
    """Entity/relation vocabularies and the train/valid/test triples (base relation ids).

    The nested graphs of the BetaE protocol are ``G_train = train``,
    ``G_valid = train ∪ valid`` and ``G_test = train ∪ valid ∪ test`` (:meth:`graph`).
    """

    name: str
    entities: Vocabulary
    relations: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    source: str = ""

    def __post_init__(self) -> None:
        reserved = [n for n in self.relations.names if n.endswith(INVERSE_SUFFIX)]
        if reserved:
            raise ConfigError(
                f"relation {reserved[0]!r} ends with {INVERSE_SUFFIX!r}, which names inverse"
                " relations in queries; rename it in the triples"
            )

    @property
    def num_entities(self) -> int:
        """Number of entities."""
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        """Number of base relations (without inverses)."""
        return len(self.relations)

    @property
    def query_relations(self) -> Vocabulary:
        """Relations and their inverses in query-id order: ``r``, ``r^-1``, ``r2``, ..."""
        names = [n for name in self.relations.names for n in (name, name + INVERSE_SUFFIX)]
        return Vocabulary(tuple(names), "relation")

    def split(self, name: str) -> torch.Tensor:
        """The triples of one split (``train``, ``valid`` or ``test``)."""
        if name not in SPLITS:
            raise UnknownNameError("split", name, SPLITS)
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def graph(self, upto: str, *, reciprocal: bool = True) -> torch.Tensor:
        """Triples of the nested graph up to ``upto`` (``G_valid = train ∪ valid``, ...).

        Args:
            upto: the last split included.
            reciprocal: return query-relation ids with inverse triples added; else base ids.
        """
        parts = list(SPLITS[: SPLITS.index(upto) + 1]) if upto in SPLITS else [upto]
        triples = torch.unique(torch.cat([self.split(p) for p in parts]), dim=0)
        return with_reciprocals(triples) if reciprocal else triples

    def triple_names(
        self, triples: torch.Tensor, *, query_ids: bool = False
    ) -> list[tuple[str, ...]]:
        """Names of id triples (base relation ids, or query-relation ids if ``query_ids``)."""
        rel = self.query_relations if query_ids else self.relations
        return [
            (self.entities.names[h], rel.names[r], self.entities.names[t])
            for h, r, t in triples.tolist()
        ]


def _split_file(folder: Path, split: str) -> Path:
    found = [folder / f"{split}{suffix}" for suffix in _FILE_SUFFIXES]
    found = [path for path in found if path.is_file()]
    if len(found) > 1:
        raise GraphFileError(
            f"{os.fspath(folder)}: both {found[0].name} and {found[1].name} exist; "
            f"keep one {split} file"
        )
    if found:
        return found[0]
    folders = [folder / f"{split}{suffix}" for suffix in _FILE_SUFFIXES]
    for path in folders:
        if path.is_dir():
            raise GraphFileError(
                f"{os.fspath(path)}: is a directory; the {split} split must be a triples file"
            )
    names = " or ".join(path.name for path in folders)
    raise GraphFileError(
        f"{os.fspath(folder)}: no {names} found "
        f"(a graph folder needs train, valid and test .txt or .tsv files)"
    )


def _load_folder(folder: Path) -> KnowledgeGraph:
    # one reading of all three files: a header-like first line is a triple when its names recur
    named = dict(
        zip(SPLITS, read_triples_files([_split_file(folder, s) for s in SPLITS]), strict=True)
    )
    if not named["train"]:
        raise GraphFileError(f"{os.fspath(_split_file(folder, 'train'))}: no triples")
    entities = Vocabulary(
        tuple(sorted({e for rows in named.values() for h, _, t in rows for e in (h, t)})), "entity"
    )
    relations = Vocabulary(
        tuple(sorted({r for rows in named.values() for _, r, _ in rows})), "relation"
    )
    tensors = {split: _id_tensor(rows, entities, relations) for split, rows in named.items()}
    # an absolute source lets a saved model find its graph again from any working directory
    source = os.fspath(folder.resolve())
    return KnowledgeGraph(folder.resolve().name, entities, relations, source=source, **tensors)


def _id_tensor(
    rows: Sequence[tuple[str, str, str]], ent: Vocabulary, rel: Vocabulary
) -> torch.Tensor:
    ids = [(ent.id(h), rel.id(r), ent.id(t)) for h, r, t in rows]
    return torch.tensor(ids, dtype=torch.long).reshape(-1, 3)


def _load_bundled(name: str) -> KnowledgeGraph:
    from pykeen.datasets import UMLS, Kinships, Nations

    dataset = {"kinships": Kinships, "nations": Nations, "umls": UMLS}[name]()
    factory, valid, test = dataset.training, dataset.validation, dataset.testing
    assert valid is not None  # the bundled datasets all ship a validation split
    ent_ids: dict[str, int] = dict(factory.entity_to_id)
    rel_ids: dict[str, int] = dict(factory.relation_to_id)
    entities = Vocabulary(tuple(sorted(ent_ids, key=lambda n: ent_ids[n])))
    relations = Vocabulary(tuple(sorted(rel_ids, key=lambda n: rel_ids[n])), "relation")
    return KnowledgeGraph(
        name,
        entities,
        relations,
        train=factory.mapped_triples.long().clone(),
        valid=valid.mapped_triples.long().clone(),
        test=test.mapped_triples.long().clone(),
        source=f"pykeen:{name}",
    )


def load_graph(dataset: str | os.PathLike[str]) -> KnowledgeGraph:
    """Load a bundled pykeen dataset by name, or a folder of TSV triples files.

    Args:
        dataset: ``nations``, ``kinships``, ``umls`` (case-insensitive), or the path of a
            folder holding ``train``, ``valid`` and ``test`` files (``.txt`` or ``.tsv``) of
            ``head<TAB>relation<TAB>tail`` names.

    Raises:
        UnknownNameError: not a bundled name and not an existing folder.
        GraphFileError: a triples file is missing or malformed.
    """
    text = os.fspath(dataset)
    if text.lower() in BUNDLED_DATASETS and not Path(text).is_dir():
        return _load_bundled(text.lower())
    path = Path(text)
    if path.is_dir():
        return _load_folder(path)
    if path.exists():
        raise GraphFileError(f"{text}: expected a folder of train/valid/test triples files")
    raise UnknownNameError("dataset (bundled name or folder)", text, BUNDLED_DATASETS)
