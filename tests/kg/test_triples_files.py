"""Triples files that would silently corrupt names: Unicode line breaks, stray BOMs, headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from metalab.cli.main import cli
from metalab.kg import GraphFileError, load_graph, read_triples_file
from tests.kg.conftest import HAND_TEST, write_graph_folder


def _read(tmp_path: Path, data: bytes) -> list[tuple[str, str, str]]:
    file = tmp_path / "t.tsv"
    file.write_bytes(data)
    return read_triples_file(file)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # mis-converted cp1252: "Café…" whose ellipsis became U+0085 (NEXT LINE)
        ("a\tr\tb\nc\tr\tCaf\u0085\n", r"t\.tsv:2: character U\+0085 \(NEXT LINE\) at column 8; "
         r"probably cp1252 '…' converted as Latin-1; export the file as UTF-8$"),
        ("a\tr\tb\u2028x\nc\tr\td\n", r"t\.tsv:1: character U\+2028 \(LINE SEPARATOR\) at col"),
        ("a\tr\tb\nc\tr\td\u2029\n", r"t\.tsv:2: character U\+2029 \(PARAGRAPH SEPARATOR\)"),
        ("a\x0cb\tr\tc\n", r"t\.tsv:1: character U\+000C \(FORM FEED\) at column 2; names canno"),
        ("a\tr\tb\n\x0b\n", r"t\.tsv:2: character U\+000B \(LINE TABULATION\)"),  # not blank
        ("a\x1e\tr\tb\n", r"t\.tsv:1: character U\+001E \(control character\)"),
        ("a\x00\tr\tb\n", r"t\.tsv:1: character U\+0000 \(NUL\) at column 2; is the file UTF-16"),
        ("a\tr\tb\rc\tr\td\n", r"t\.tsv:1: character U\+000D .* a lone carriage return"),
        ("a\tr\tb\ufeff\n", r"t\.tsv:1: character U\+FEFF \(ZERO WIDTH NO-BREAK SPACE\)"),
        ("a\tr\tb\n\ufeff\ufeffc\tr\td\n", r"t\.tsv:2: character U\+FEFF .* at column 2;"),
    ],
)  # fmt: skip
def test_characters_no_name_may_hold_are_refused_with_line_and_code(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(GraphFileError, match=message) as info:
        _read(tmp_path, text.encode("utf-8"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_says_so_instead_of_reading_nul_names(
    tmp_path: Path, encoding: str
) -> None:
    with pytest.raises(GraphFileError, match=r"t\.tsv:1: character U\+0000 \(NUL\).*UTF-16"):
        _read(tmp_path, "a\tr\tb\nc\tr\td\n".encode(encoding))


def test_line_numbers_agree_between_decode_and_field_errors(tmp_path: Path) -> None:
    # form feeds and U+0085 used to count as line breaks in one path and not the other
    with pytest.raises(GraphFileError, match=r"t\.tsv:2: character U\+000C"):
        _read(tmp_path, b"a\tr\tb\n\x0c\n\n")
    with pytest.raises(GraphFileError, match=r"t\.tsv:3: not UTF-8"):
        _read(tmp_path, b"a\tr\tb\n\nc\tr\t\xe9\n")
    with pytest.raises(GraphFileError, match=r"t\.tsv:3: expected 3 tab-separated fields"):
        _read(tmp_path, b"a\tr\tb\n\nc\tr\n")


def test_line_ends_and_line_start_boms_are_repaired(tmp_path: Path) -> None:
    expected = [("a", "r", "b"), ("c", "r", "d")]
    assert _read(tmp_path, b"a\tr\tb\r\nc\tr\td\r\n") == expected
    assert _read(tmp_path, b"a\tr\tb\r\r\nc\tr\td") == expected  # CRLF converted twice
    # `cat a.tsv b.tsv`: the second file's BOM is mid-file, not part of the name "c"
    assert _read(tmp_path, b"\xef\xbb\xbfa\tr\tb\n\xef\xbb\xbfc\tr\td\n") == expected


def test_a_concatenated_bom_adds_no_second_entity(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    before = load_graph(folder)
    test = folder / "test.txt"  # `cat test.txt more.txt`, more.txt saved with a BOM
    test.write_bytes(test.read_bytes() + b"\xef\xbb\xbf" + "\t".join(HAND_TEST[0]).encode())
    graph = load_graph(folder)
    assert graph.entities == before.entities and graph.relations == before.relations
    assert graph.triple_names(graph.test) == [*HAND_TEST, HAND_TEST[0]]


@pytest.mark.parametrize(
    "content",
    [
        "s\tr\to\ns\tr\tt\n",  # the names recur: a graph over entities s, o, t
        "source\trelation\ttarget\nsource\trelation\tother\n",
        "x\tr\ty\nh\tr\tt\n",  # a header-like line that is not the first is always a triple
    ],
)
def test_header_words_whose_names_recur_are_a_real_first_triple(
    tmp_path: Path, content: str
) -> None:
    rows = _read(tmp_path, content.encode())
    assert rows == [tuple(line.split("\t")) for line in content.splitlines()]


@pytest.mark.parametrize(
    "content",
    [
        "s\tr\to\na\tb\tc\n",
        "source\trelation\ttarget\nsource2\trelated\ttarget2\n",
        "Head\tRelation\tTail\nhead\trelation\ttail\n",  # names are case-sensitive
    ],
)
def test_header_words_whose_names_do_not_recur_are_a_header(tmp_path: Path, content: str) -> None:
    with pytest.raises(GraphFileError, match=r"t\.tsv:1: looks like a header line"):
        _read(tmp_path, content.encode())


def test_a_name_recurs_only_in_its_own_role(tmp_path: Path) -> None:
    # "r" occurs again, but as an entity: the header's relation column does not recur
    with pytest.raises(GraphFileError, match="looks like a header line"):
        _read(tmp_path, b"s\tr\to\nr\tq\tx\n")
    assert _read(tmp_path, b"s\tr\to\nx\tq\to\n")[0] == ("s", "r", "o")  # entity o recurs


def test_header_names_recurring_in_another_split_file_make_a_triple(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "test.txt").write_text("s\tr\to\n")  # read alone, a header
    with pytest.raises(GraphFileError, match="looks like a header line"):
        read_triples_file(folder / "test.txt")
    (folder / "train.txt").write_text((folder / "train.txt").read_text() + "s\tr\tb\n")
    graph = load_graph(folder)  # s and r recur in train.txt: a triple of the graph
    assert graph.triple_names(graph.test) == [("s", "r", "o")]


def test_a_header_repeated_in_every_split_is_still_a_header(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    for split in ("train", "valid", "test"):
        file = folder / f"{split}.txt"
        file.write_text("head\trelation\ttail\n" + file.read_text())
    with pytest.raises(GraphFileError, match=r"train\.txt:1: looks like a header line"):
        load_graph(folder)


def test_a_bad_character_is_a_one_line_cli_error(tmp_path: Path) -> None:
    folder = write_graph_folder(tmp_path / "g")
    (folder / "valid.txt").write_text("d\tp\tCaf\u0085\n", encoding="utf-8")
    out = tmp_path / "q"
    result = CliRunner().invoke(
        cli, ["kg", "queries", "generate", "--dataset", str(folder), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("Error: ") and "valid.txt:1: character U+0085" in lines[0]
    assert not out.exists()
