"""Query sets on disk: a documented JSON-lines format with names, and their statistics.

A query-set folder written by :func:`save_query_set` holds:

- ``README.md`` — this format, for whoever finds the folder;
- ``meta.json`` — ``{"format": "metalab.kg.queries/1", "dataset", "dataset_source", "seed",
  "reciprocal", "max_answers", "max_attempts", "per_structure",
  "counts": {split: {structure: n}},
  "generation": {split: {"accepted", "attempts", "dropped": {structure: {reason: n}}}}}``;
- ``vocab.json`` — ``{"entities": [...], "relations": [...]}`` (relations without inverses;
  the inverse of ``r`` is written ``r^-1``);
- ``{split}.jsonl`` for each generated split (``train``, ``valid``, ``test``), one query a line:
  ``{"structure": "pi", "query": [...], "easy": [names], "hard": [names],
  "hard_missing_links": [ints]}``.

``query`` is a nested list, operator first: ``["e", ENTITY]`` (an anchor),
``["p", RELATION, SUB]`` (follow RELATION from SUB's entities), ``["and", SUB, SUB, ...]``,
``["or", SUB, SUB, ...]``, ``["not", SUB]``. For example a ``pi`` query is
``["and", ["p", "r2", ["p", "r1", ["e", "a"]]], ["p", "r3", ["e", "b"]]]``.
``easy`` answers are reachable on the smaller graph (G_train for valid queries, G_valid for
test queries), ``hard`` ones only on the split's graph (BetaE's protocol; for negation
queries ``easy`` is the answer set on the smaller graph, as in BetaE's files; train queries
have no easy answers and all their answers on G_train as ``hard``).
``hard_missing_links[i]`` is the fewest links missing from the smaller graph on a grounding
that reaches ``hard[i]`` (1 = a single missing link explains the answer).

:func:`load_query_set` reads these folders and BetaE/Query2Box pickle folders
(:mod:`metalab.kg.betae`); :func:`query_set_stats` summarizes either.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalab.core.checkpoint import atomic_write_bytes, atomic_write_json
from metalab.core.errors import ConfigError, MetalabError
from metalab.kg.generation import GroundedQuery
from metalab.kg.graphs import INVERSE_SUFFIX, SPLITS, Vocabulary
from metalab.kg.queries import QueryFormatError, query_from_json, query_to_json, structure_name

__all__ = [
    "QUERY_SET_FORMAT",
    "QuerySet",
    "check_output_folder",
    "format_stats_table",
    "load_query_set",
    "query_set_stats",
    "save_query_set",
]

QUERY_SET_FORMAT = "metalab.kg.queries/1"


@dataclass
class QuerySet:
    """Queries per split over one vocabulary.

    Attributes:
        entities: entity names by id.
        relations: *query* relation names by id (``r``, ``r^-1``, ... for our files; BetaE's
            ``+r``/``-r`` names or ``r0, r1, ...`` for pickles).
        splits: ``{split: [GroundedQuery, ...]}``.
        meta: the ``meta.json`` content (or what a BetaE folder provides).
    """

    entities: Vocabulary
    relations: Vocabulary
    splits: dict[str, list[GroundedQuery]]
    meta: dict[str, Any] = field(default_factory=dict)


def _query_relations(base: Vocabulary) -> Vocabulary:
    return Vocabulary(
        tuple(n for name in base.names for n in (name, name + INVERSE_SUFFIX)), "relation"
    )


def save_query_set(
    query_set: QuerySet, folder: str | os.PathLike[str], *, base_relations: Vocabulary
) -> Path:
    """Write ``query_set`` in the documented format (see the module docstring).

    An earlier query set in ``folder`` is replaced (as ``kg train --out`` replaces a model).
    Its split files that the new set lacks are kept (a ``train.jsonl`` may have cost hours)
    but are no longer part of the set: readers read only the splits ``meta.json`` lists. A
    non-empty folder that is not a query set is refused, never emptied.

    Raises:
        ConfigError: ``folder`` is a file, or a non-empty folder that is not a query set.
    """
    path = Path(folder)
    check_output_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    ent, rel = query_set.entities, query_set.relations
    for split, queries in query_set.splits.items():
        lines = [
            json.dumps(
                {
                    "structure": q.structure,
                    "query": query_to_json(q.query, ent, rel),
                    "easy": [ent.name(e) for e in q.easy],
                    "hard": [ent.name(e) for e in q.hard],
                    "hard_missing_links": list(q.hard_missing_links),
                },
                ensure_ascii=False,
            )
            for q in queries
        ]
        atomic_write_bytes(path / f"{split}.jsonl", ("\n".join(lines) + "\n").encode())
    meta = {"format": QUERY_SET_FORMAT, **query_set.meta}
    meta["counts"] = {split: _counts(qs) for split, qs in query_set.splits.items()}
    atomic_write_json(path / "meta.json", meta)
    atomic_write_json(
        path / "vocab.json", {"entities": ent.to_json(), "relations": base_relations.to_json()}
    )
    atomic_write_bytes(path / "README.md", _readme().encode())
    return path


def check_output_folder(path: Path) -> None:
    """Refuse an output that is a file, or a non-empty folder that is not a query set."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{os.fspath(path)}: exists and is not a folder; choose another --out")
    if not path.is_dir() or not any(path.iterdir()):
        return
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != QUERY_SET_FORMAT:
        raise ConfigError(
            f"{os.fspath(path)}: folder is not empty and holds no metalab query set "
            "(meta.json); choose a new or empty --out"
        )


def _readme() -> str:
    doc = __doc__ or ""
    return "# metalab complex-query set\n\n" + doc.split("\n\n", 1)[1]


def _counts(queries: list[GroundedQuery]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in queries:
        counts[q.structure] = counts.get(q.structure, 0) + 1
    return counts


def load_query_set(folder: str | os.PathLike[str]) -> QuerySet:
    """Read a folder of our JSON-lines files, or of BetaE/Query2Box pickles.

    Raises:
        MetalabError: not a query-set folder, or a file is malformed (file and line named).
    """
    path = Path(folder)
    if not path.is_dir():
        raise MetalabError(f"{os.fspath(path)}: not a folder")
    if (path / "meta.json").is_file():
        return _load_ours(path)
    if any(path.glob("*-queries.pkl")):
        from metalab.kg.betae import load_betae_folder

        return load_betae_folder(path)
    raise MetalabError(
        f"{os.fspath(path)}: neither a metalab query set (meta.json) "
        "nor a BetaE folder (*-queries.pkl)"
    )


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetalabError(f"{os.fspath(file)}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetalabError(f"{os.fspath(file)}: not valid JSON ({exc})") from None


def _load_ours(path: Path) -> QuerySet:
    meta = _read_json(path / "meta.json")
    if not isinstance(meta, dict) or meta.get("format") != QUERY_SET_FORMAT:
        raise MetalabError(f"{os.fspath(path / 'meta.json')}: not a {QUERY_SET_FORMAT} file")
    vocab = _read_json(path / "vocab.json")
    try:
        entities = Vocabulary.from_json(vocab["entities"], kind="entity")
        relations = _query_relations(Vocabulary.from_json(vocab["relations"], kind="relation"))
    except (KeyError, TypeError, MetalabError) as exc:
        raise MetalabError(f"{os.fspath(path / 'vocab.json')}: {exc}") from None
    counts = meta.get("counts")
    if isinstance(counts, dict):  # only the splits meta.json lists: others may be stale
        listed = [s for s in SPLITS if s in counts]
    else:
        listed = [s for s in SPLITS if (path / f"{s}.jsonl").is_file()]
    splits = {}
    for split in listed:
        file = path / f"{split}.jsonl"
        if not file.is_file():
            raise MetalabError(f"{os.fspath(file)}: file not found (meta.json lists {split})")
        splits[split] = _read_split(file, entities, relations)
    return QuerySet(entities, relations, splits, meta)


def _read_split(file: Path, entities: Vocabulary, relations: Vocabulary) -> list[GroundedQuery]:
    out = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(_parse_line(json.loads(line), entities, relations))
        except json.JSONDecodeError as exc:
            raise MetalabError(f"{os.fspath(file)}:{number}: not valid JSON ({exc.msg})") from None
        except (MetalabError, KeyError, TypeError, ValueError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise MetalabError(f"{os.fspath(file)}:{number}: {detail}") from None
    return out


def _parse_line(record: Any, entities: Vocabulary, relations: Vocabulary) -> GroundedQuery:
    if not isinstance(record, dict):
        raise QueryFormatError("each line must be a JSON object")
    query = query_from_json(record["query"], entities, relations)
    name = structure_name(query) or "other"
    if record.get("structure", name) != name:
        raise QueryFormatError(f"query has structure {name!r}, line says {record['structure']!r}")
    links = tuple(int(x) for x in record.get("hard_missing_links", []))
    hard = tuple(entities.ids(record["hard"]))
    if links and len(links) != len(hard):
        raise QueryFormatError("hard_missing_links must have one entry per hard answer")
    return GroundedQuery(name, query, tuple(entities.ids(record["easy"])), hard, links)


def query_set_stats(query_set: QuerySet) -> dict[str, dict[str, dict[str, float]]]:
    """Per split and structure: query count, answer-set sizes and the single-missing-link share.

    ``single_link_share`` is the fraction of hard answers with ``hard_missing_links == 1``
    (NaN when the links are unknown, e.g. a BetaE folder without its graph files).
    """
    table: dict[str, dict[str, dict[str, float]]] = {}
    for split, queries in query_set.splits.items():
        groups: dict[str, list[GroundedQuery]] = {}
        for q in queries:
            groups.setdefault(q.structure, []).append(q)
        table[split] = {name: _group_stats(groups[name]) for name in _ordered(groups)}
        if queries:
            table[split]["all"] = _group_stats(queries)
    return table


def _ordered(groups: dict[str, Any]) -> list[str]:
    from metalab.kg.queries import STRUCTURES

    known = [n for n in STRUCTURES if n in groups]
    return known + sorted(n for n in groups if n not in STRUCTURES)


def _group_stats(queries: list[GroundedQuery]) -> dict[str, float]:
    hard = [len(q.hard) for q in queries]
    easy = [len(q.easy) for q in queries]
    links = [x for q in queries for x in q.hard_missing_links]
    known = all(len(q.hard_missing_links) == len(q.hard) for q in queries)
    return {
        "queries": float(len(queries)),
        "easy_mean": statistics.fmean(easy) if easy else 0.0,
        "hard_mean": statistics.fmean(hard) if hard else 0.0,
        "hard_median": float(statistics.median(hard)) if hard else 0.0,
        "hard_max": float(max(hard, default=0)),
        "hard_answers": float(sum(hard)),
        "single_link_share": (sum(1 for x in links if x == 1) / len(links))
        if known and links
        else float("nan"),
    }


def format_stats_table(stats: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table of :func:`query_set_stats`, one block per split."""
    lines = []
    header = (
        f"{'structure':<10}{'queries':>8}{'easy':>8}{'hard':>8}{'hard med':>9}"
        f"{'hard max':>9}{'1-link':>8}"
    )
    for split, rows in stats.items():
        lines += [f"[{split}]", header]
        for name, row in rows.items():
            share = row["single_link_share"]
            lines.append(
                f"{name:<10}{int(row['queries']):>8}{row['easy_mean']:>8.1f}{row['hard_mean']:>8.1f}"
                f"{row['hard_median']:>9.1f}{int(row['hard_max']):>9}"
                f"{'n/a' if share != share else f'{100 * share:.0f}%':>8}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()
