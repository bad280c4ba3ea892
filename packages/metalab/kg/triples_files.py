r"""Reading ``head<TAB>relation<TAB>tail`` files without silently corrupting names.

User files arrive as spreadsheet exports (a BOM, CRLF, a header row), as concatenations
(``cat a.tsv b.tsv`` leaves the second file's BOM mid-file) and as mis-converted text
(cp1252 decoded as Latin-1 gives C1 controls such as U+0085; UTF-16 without a BOM decodes
as names full of NULs). Where the intent is unambiguous the reader repairs it (a BOM at a
line start, ``\r`` line ends); anything else that would turn into a wrong name is refused
with ``file:line``. Lines are split on ``\n`` only, so every error counts lines the same
way (``str.splitlines`` would also split on U+0085, U+2028, form feeds, ...).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metalab.core.errors import MetalabError

__all__ = ["GraphFileError", "read_triples_file", "read_triples_files"]

Triple = tuple[str, str, str]


class GraphFileError(MetalabError):
    """A triples file is missing or malformed; the message names the file and line."""


# Never part of a name: C0 controls but tab (the separator), DEL, C1 controls (U+0085 is
# NEXT LINE), the Unicode line/paragraph separators and a BOM that does not start a line.
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_CHAR_NAMES = {"\x00": "NUL", "\x0b": "LINE TABULATION", "\x0c": "FORM FEED",
               "\r": "CARRIAGE RETURN", "\x85": "NEXT LINE"}  # fmt: skip

# Column names that header lines of triple exports use (compared case-insensitively).
_HEADER_WORDS = frozenset(
    ("head", "relation", "tail", "subject", "predicate", "object", "rel", "source", "target",
     "h", "r", "t", "s", "p", "o")
)  # fmt: skip


@dataclass(frozen=True)
class _Rows:
    """The triples of one file and the line number of its first triple (0: none)."""

    file: Path
    triples: list[Triple]
    first_line: int


def read_triples_file(path: str | os.PathLike[str]) -> list[Triple]:
    r"""Read ``head<TAB>relation<TAB>tail`` lines (UTF-8, no header; blank lines skipped).

    A UTF-8 byte-order mark at the start of a line is dropped (spreadsheet exports write
    one, concatenated files carry one mid-file), as is a ``\r`` before the line end. A first
    line made only of column names (``head relation tail``, ``s p o``, ...) is refused as a
    header when none of its names occurs again in the file (in the same role: entity or
    relation), since real names recur and a header's do not.

    Raises:
        GraphFileError: the file is missing, not UTF-8, has a header line, a control or
            line-separator character, or a line without three non-empty tab-separated names
            (the message names the file and line).
    """
    rows = _parse(Path(path))
    _refuse_headers([rows])
    return rows.triples


def read_triples_files(paths: Sequence[str | os.PathLike[str]]) -> list[list[Triple]]:
    """Read the files of one graph; a header-like first line is judged against all of them."""
    files = [_parse(Path(path)) for path in paths]
    _refuse_headers(files)
    return [rows.triples for rows in files]


def _parse(file: Path) -> _Rows:
    text = _read_utf8(file)
    triples: list[Triple] = []
    first_line = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        bom = raw.startswith("\ufeff")  # a concatenated file's BOM: drop it
        line = raw.rstrip("\r")[bom:]
        _refuse_bad_characters(file, number, line, int(bom))
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 3:
            raise GraphFileError(
                f"{os.fspath(file)}:{number}: expected 3 tab-separated fields "
                f"(head, relation, tail), found {len(fields)}: {line.strip()[:60]!r}"
            )
        if not all(fields):
            which = ("head", "relation", "tail")[[bool(f) for f in fields].index(False)]
            raise GraphFileError(f"{os.fspath(file)}:{number}: empty {which} name")
        first_line = first_line or number
        triples.append((fields[0], fields[1], fields[2]))
    return _Rows(file, triples, first_line)


def _refuse_bad_characters(file: Path, number: int, line: str, offset: int) -> None:
    """One line naming the first character no name may hold, its column and a likely cause."""
    found = _FORBIDDEN.search(line)
    if found is None:
        return
    char = found.group()
    name = _CHAR_NAMES.get(char) or unicodedata.name(char, "control character")
    if char == "\x00":
        hint = "is the file UTF-16? save it as UTF-8"
    elif char == "\r":
        hint = "a lone carriage return; end lines with \\n or \\r\\n"
    elif "\x80" <= char <= "\x9f" and _cp1252(char):
        hint = f"probably cp1252 {_cp1252(char)!r} converted as Latin-1; export the file as UTF-8"
    else:
        hint = "names cannot hold control characters, line separators or byte-order marks"
    raise GraphFileError(
        f"{os.fspath(file)}:{number}: character U+{ord(char):04X} ({name}) at column "
        f"{found.start() + offset + 1}; {hint}"
    )


def _cp1252(char: str) -> str:
    """What a C1 control was in cp1252 text wrongly decoded as Latin-1 ('' if undefined)."""
    return bytes([ord(char)]).decode("cp1252", errors="ignore")


def _is_header(fields: Triple) -> bool:
    words = {f.lower() for f in fields}
    return len(words) == len(fields) and words <= _HEADER_WORDS


def _refuse_headers(files: Sequence[_Rows]) -> None:
    """Refuse a first line of column names whose names occur nowhere else in ``files``.

    A graph naming an entity "head" or a relation "r" is possible, so header words alone do
    not decide: a real triple's names recur (an entity in another triple, its relation on
    other edges), a header's do not. Header-like first lines of the other files do not
    count as recurrences (an export repeats its header in every split).
    """
    candidates = [rows for rows in files if rows.triples and _is_header(rows.triples[0])]
    if not candidates:
        return
    entities: Counter[str] = Counter()
    relations: Counter[str] = Counter()
    for rows in files:
        for h, r, t in rows.triples[1:] if any(rows is c for c in candidates) else rows.triples:
            entities.update((h, t))
            relations[r] += 1
    for rows in candidates:
        h, r, t = rows.triples[0]
        if h not in entities and t not in entities and r not in relations:
            raise GraphFileError(
                f"{os.fspath(rows.file)}:{rows.first_line}: looks like a header line "
                f"({h} {r} {t}); triples files have no header (columns: head, relation, tail), "
                "delete it"
            )


def _read_utf8(file: Path) -> str:
    """The file's text without a leading UTF-8 BOM; one-line errors otherwise."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise GraphFileError(f"{os.fspath(file)}: file not found") from None
    except IsADirectoryError:
        raise GraphFileError(f"{os.fspath(file)}: is a directory, not a triples file") from None
    except PermissionError as exc:
        raise GraphFileError(f"{os.fspath(file)}: cannot read ({type(exc).__name__})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise GraphFileError(f"{os.fspath(file)}: file is UTF-16; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1  # the same count as the "\n" split above
        raise GraphFileError(
            f"{os.fspath(file)}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save the file as UTF-8"
        ) from None
