"""Read the published BetaE / Query2Box query files through a restricted unpickler.

The KGReasoning releases (BetaE's ``FB15k-237-betae``... and the Query2Box sets converted
to the same layout, ``*-q2b``) are pickles of dicts, sets and tuples of ints:
``{split}-queries.pkl`` (``{structure tuple: {query tuple, ...}}``),
``{split}-easy-answers.pkl`` and ``{split}-hard-answers.pkl`` (``{query tuple: {entity, ...}}``;
the train split has ``train-answers.pkl``), and optionally ``id2ent.pkl``/``id2rel.pkl``
(names), ``stats.txt`` (``numentity: N`` / ``numrelations: R``) and the id-triple files
``train.txt``/``valid.txt``/``test.txt``.

Plain ``pickle.load`` runs whatever callable a file names. :class:`RestrictedUnpickler`
resolves only builtin container and scalar types (and ``collections.defaultdict``/
``OrderedDict``, which BetaE's generator pickles), so a hostile file is refused.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metalab.core.errors import MetalabError
from metalab.kg.generation import GraphIndex, GroundedQuery
from metalab.kg.graphs import SPLITS, Vocabulary
from metalab.kg.queries import QueryFormatError, from_betae, structure_name
from metalab.kg.querysets import QuerySet

__all__ = [
    "ALLOWED_GLOBALS",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_betae_folder",
    "safe_load_pickle",
]

ALLOWED_GLOBALS = frozenset(
    {
        ("builtins", name)
        for name in (
            "dict",
            "set",
            "frozenset",
            "list",
            "tuple",
            "int",
            "float",
            "complex",
            "str",
            "bool",
        )
    }
    | {("collections", "defaultdict"), ("collections", "OrderedDict")}
)

_PYTHON2_MODULES = {"__builtin__": "builtins"}


class UnsafePickleError(MetalabError):
    """A pickle names a global outside :data:`ALLOWED_GLOBALS`, or is corrupt."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only builtin containers and scalars.

    ``bytes``/``bytearray`` are left out on purpose: called with a huge int they allocate
    that many bytes (protocol ≥ 3 stores bytes without calling them).
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed global ``module.name``; refuse everything else."""
        module = _PYTHON2_MODULES.get(module, module)  # protocol-2 files name ``__builtin__``
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load global {module}.{name}")


def safe_load_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: the file would call a forbidden global, or is not a valid pickle
            (the message names the file).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise MetalabError(f"{os.fspath(file)}: cannot read ({exc.strerror or exc})") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(
            f"{os.fspath(file)}: {exc} (only builtin containers and scalars are accepted)"
        ) from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsafePickleError(
            f"{os.fspath(file)}: corrupt or unsupported pickle ({type(exc).__name__}: {first})"
        ) from None


def _load_dict(path: Path) -> dict[Any, Any]:
    data = safe_load_pickle(path)
    if not isinstance(data, dict):
        raise MetalabError(f"{os.fspath(path)}: expected a dict, found {type(data).__name__}")
    return data


def _names(folder: Path, stem: str, count: int, prefix: str) -> tuple[str, ...]:
    path = folder / f"{stem}.pkl"
    if not path.is_file():
        return tuple(f"{prefix}{i}" for i in range(count))
    table = _load_dict(path)
    return tuple(str(table.get(i, f"{prefix}{i}")) for i in range(count))


def _stats_counts(folder: Path, queries: dict[str, list[GroundedQuery]]) -> tuple[int, int]:
    counts: dict[str, int] = {}
    stats = folder / "stats.txt"
    if stats.is_file():
        for line in stats.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if value.strip().isdigit():
                counts[key.strip()] = int(value)
    ents = [e for qs in queries.values() for q in qs for e in (*q.easy, *q.hard)]
    rels = [r for qs in queries.values() for q in qs for r in _relations(q.query)]
    return (
        counts.get("numentity", max(ents, default=-1) + 1),
        counts.get("numrelations", max(rels, default=-1) + 1),
    )


def _relations(query: Any) -> list[int]:
    rel = [query.relation] if hasattr(query, "relation") else []
    children = getattr(query, "args", None) or ([query.arg] if hasattr(query, "arg") else [])
    return rel + [r for child in children for r in _relations(child)]


def _read_split(folder: Path, split: str) -> list[GroundedQuery]:
    queries = _load_dict(folder / f"{split}-queries.pkl")
    if split == "train" and not (folder / "train-easy-answers.pkl").is_file():
        easy: dict[Any, Any] = {}
        hard = _load_dict(folder / "train-answers.pkl")
    else:
        easy = _load_dict(folder / f"{split}-easy-answers.pkl")
        hard = _load_dict(folder / f"{split}-hard-answers.pkl")
    out = []
    for structure, group in queries.items():
        try:
            name = structure_name(from_betae(structure)) or str(structure)
            for query in sorted(group, key=repr):
                out.append(
                    GroundedQuery(
                        name,
                        from_betae(query),
                        tuple(sorted(easy.get(query, ()))),
                        tuple(sorted(hard.get(query, ()))),
                    )
                )
        except (QueryFormatError, TypeError, ValueError) as exc:
            raise MetalabError(f"{os.fspath(folder / f'{split}-queries.pkl')}: {exc}") from None
    return out


def load_betae_folder(folder: str | os.PathLike[str]) -> QuerySet:
    """Read a BetaE/Query2Box folder (KGReasoning layout) as a :class:`QuerySet`.

    When ``train.txt``, ``valid.txt`` and ``test.txt`` (id triples in the query relation
    space) are present, each hard answer's ``hard_missing_links`` is computed on them.
    """
    path = Path(folder)
    splits = {s: _read_split(path, s) for s in SPLITS if (path / f"{s}-queries.pkl").is_file()}
    num_entities, num_relations = _stats_counts(path, splits)
    entities = Vocabulary(_names(path, "id2ent", num_entities, "e"), "entity")
    relations = Vocabulary(_names(path, "id2rel", num_relations, "r"), "relation")
    if all((path / f"{s}.txt").is_file() for s in SPLITS):
        splits = {s: _with_missing_links(path, s, qs, num_entities) for s, qs in splits.items()}
    meta = {"format": "betae-pickles", "dataset": path.name, "dataset_source": os.fspath(path)}
    return QuerySet(entities, relations, splits, meta)


def _read_id_triples(file: Path) -> np.ndarray:
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            parts = line.split()
            if len(parts) != 3 or not all(p.isdigit() for p in parts):
                raise MetalabError(f"{os.fspath(file)}:{number}: expected three integer ids")
            rows.append([int(p) for p in parts])
    data = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    reverse = np.stack([data[:, 2], data[:, 1] ^ 1, data[:, 0]], axis=1)  # BetaE's 2k/2k+1 pairs
    return np.unique(np.concatenate([data, reverse]), axis=0)


def _with_missing_links(
    path: Path, split: str, queries: list[GroundedQuery], num_entities: int
) -> list[GroundedQuery]:
    if split == "train":
        return queries
    parts = SPLITS[: SPLITS.index(split) + 1]
    full = np.unique(np.concatenate([_read_id_triples(path / f"{s}.txt") for s in parts]), axis=0)
    small = np.unique(
        np.concatenate([_read_id_triples(path / f"{s}.txt") for s in parts[:-1]]), axis=0
    )
    base = int(full[:, 1].max()) + 1

    def key(t: np.ndarray) -> np.ndarray:
        return (t[:, 0] * base + t[:, 1]) * num_entities + t[:, 2]

    index = GraphIndex(
        torch.from_numpy(full), num_entities, missing=~np.isin(key(full), key(small))
    )
    out = []
    for q in queries:
        links = index.missing_links(q.query)[list(q.hard)]
        links = np.where(np.isfinite(links), links, -1)  # -1: not reachable on the given graph
        out.append(
            GroundedQuery(q.structure, q.query, q.easy, q.hard, tuple(int(x) for x in links))
        )
    return out
