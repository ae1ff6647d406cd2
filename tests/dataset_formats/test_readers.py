from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_formats import json_reader
from dataset_formats.csv_reader import _ends_with_closed_field
from dataset_formats.errors import MalformedFile, UnsupportedFileType
from dataset_formats.readers import detect_file_type, iter_batches

Writer = Callable[[str, bytes], Path]


def rows(path: Path, **kwargs: object) -> list[dict[str, str | None]]:
    return [row for batch in iter_batches(path, **kwargs) for row in batch.to_pylist()]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.csv", "csv"), ("b.TSV", "tsv"), ("c.parquet", "parquet"), ("d.jsonl", "jsonl"), ("e.json", "json")],
)
def test_detect_file_type(name: str, expected: str) -> None:
    assert detect_file_type(name) == expected


def test_detect_file_type_lists_supported_types() -> None:
    with pytest.raises(UnsupportedFileType) as info:
        detect_file_type("data.xlsx")
    assert "data.xlsx" in info.value.detail
    assert ".csv" in info.value.detail and ".parquet" in info.value.detail and ".jsonl" in info.value.detail


def test_csv_bom_na_strings_and_everything_as_string(write_bytes: Writer) -> None:
    path = write_bytes("a.csv", b'\xef\xbb\xbfid,a,b,c\r\n007,NA,null,\r\n1.50,N/A,"",true\r\n')
    batches = list(iter_batches(path))
    assert batches[0].schema.names == ["id", "a", "b", "c"]
    assert all(field.type == pa.string() for field in batches[0].schema)
    assert rows(path) == [
        {"id": "007", "a": "NA", "b": "null", "c": ""},
        {"id": "1.50", "a": "N/A", "b": "", "c": "true"},
    ]


def test_csv_quoted_commas_quotes_newlines_and_crlf(write_bytes: Writer) -> None:
    data = 'q,a\r\n"Hi, there","He said ""yes""\r\nthen\nleft"\r\n"日本語 café 🚀","x\u2028y"\r\n'
    path = write_bytes("a.csv", data.encode())
    assert rows(path) == [
        {"q": "Hi, there", "a": 'He said "yes"\r\nthen\nleft'},
        {"q": "日本語 café 🚀", "a": "x\u2028y"},
    ]


@pytest.mark.parametrize(
    ("data", "kwargs"),
    [
        (b"a;b\n1;2,5\n", {}),  # sniffed from the header
        (b"a\tb\n1\t2,5\n", {"file_type": "tsv"}),
        (b"a|b\n1|2,5\n", {"delimiter": "|"}),
    ],
)
def test_csv_delimiters(write_bytes: Writer, data: bytes, kwargs: dict[str, str]) -> None:
    path = write_bytes("a.csv", data)
    assert rows(path, **kwargs) == [{"a": "1", "b": "2,5"}]


@pytest.mark.parametrize("block_size", [64, 128, 256])
def test_csv_quoted_crlf_exactly_at_block_boundary(write_bytes: Writer, block_size: int) -> None:
    """apache/arrow#51368: pyarrow drops the \\n of a quoted \\r\\n split across two blocks."""
    head = b"a,b\r\n" + b'p,"q"\r\n' * 3
    filler = block_size - 1 - len(head) - len(b'x,"')
    value = b"y" * filler + b"\r\nz"
    data = head + b'x,"' + value + b'"\r\n' + b'p,"q"\r\n' * 40
    assert data.index(b"\r\nz") == block_size - 1  # the \r is the last byte of the first block
    path = write_bytes("a.csv", data)
    got = rows(path, csv_block_size=block_size)
    expected = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert got == expected
    assert got[3]["b"] == value.decode()


def test_csv_many_crlf_values_across_many_small_blocks(write_bytes: Writer) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["a", "b"])
    expected = [[f"r{i}", "x" * (i % 23) + "\r\n" + "y" * (i % 7)] for i in range(300)]
    writer.writerows(expected)
    path = write_bytes("a.csv", out.getvalue().encode())
    got = [[r["a"], r["b"]] for r in rows(path, csv_block_size=97)]
    assert got == expected


def test_csv_unbalanced_quote_reports_row_and_line(write_bytes: Writer) -> None:
    path = write_bytes("a.csv", b'a,b\n1,2\n3,"open\n4,5\n')
    with pytest.raises(MalformedFile) as info:
        rows(path)
    assert (info.value.row, info.value.line) == (2, 3)
    assert "quote" in info.value.detail.lower()


@pytest.mark.parametrize(
    "body",
    [b'1,"x""\n', b'1,2\n3,"""\n', b'1,"\r\n', b'1,"a\n"",""\n', b'1,"\n"\n2,"\n', b'1,"""""\n'],
)
def test_csv_quote_left_open_at_the_end_is_refused(write_bytes: Writer, body: bytes) -> None:
    # Each file ends in an open quoted field whose end still looks a little like a closed one.
    with pytest.raises(MalformedFile) as info:
        rows(write_bytes("a.csv", b"a,b\n" + body))
    assert "quote" in info.value.detail.lower()


def test_csv_one_column_quote_left_open_at_the_end_is_refused(write_bytes: Writer) -> None:
    # One column: the open field follows a line break, and its tail reads as ',"\n"\n' closed.
    with pytest.raises(MalformedFile, match="quote"):
        rows(write_bytes("a.csv", b'a\n"x,"\n"\n'))


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n", b"\r"])
def test_csv_closed_multiline_last_field_is_read(write_bytes: Writer, ending: bytes) -> None:
    path = write_bytes("a.csv", b'a,b\n1,"x\n""y"""' + ending)
    assert rows(path) == [{"a": "1", "b": 'x\n"y"'}]


@settings(max_examples=400, deadline=None)
@given(body=st.text(alphabet='x,"\n\r', max_size=12))
def test_csv_end_read_as_closed_field_is_never_open(tmp_path_factory: pytest.TempPathFactory, body: str) -> None:
    """Whenever the reader's shortcut takes the end of a two-column file for a closed quoted field,
    stdlib csv agrees that no quote is open at the end."""
    path = tmp_path_factory.mktemp("csv") / "a.csv"
    path.write_bytes(b"a,b\n" + body.encode())
    try:
        last = list(pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True)).to_batches())[-1]
    except (pa.ArrowInvalid, IndexError):
        return  # pyarrow refuses the file (or reads no row): the shortcut is never asked
    value = last.column(1).cast(pa.string())[-1].as_py()
    if value is None or not _ends_with_closed_field(path, value.encode(), ","):
        return
    try:
        list(csv.reader(io.StringIO(body, newline=""), strict=True))
    except csv.Error as error:
        assert "unexpected end of data" not in str(error)


def test_csv_wrong_column_count_reports_row_and_line(write_bytes: Writer) -> None:
    path = write_bytes("a.csv", b'a,b\n1,"two\nlines"\n3\n4,5\n')
    with pytest.raises(MalformedFile) as info:
        rows(path)
    assert (info.value.row, info.value.line) == (2, 4)
    assert "Expected 2 fields" in info.value.detail and "found 1" in info.value.detail


def test_csv_invalid_utf8_reports_line(write_bytes: Writer) -> None:
    path = write_bytes("a.csv", b"a,b\n1,2\n3,\xff\n")
    with pytest.raises(MalformedFile) as info:
        rows(path)
    assert info.value.line == 3 and "UTF-8" in info.value.detail


def test_csv_empty_file_and_duplicate_header(write_bytes: Writer) -> None:
    with pytest.raises(MalformedFile, match="empty"):
        rows(write_bytes("a.csv", b""))
    with pytest.raises(MalformedFile, match="unique"):
        rows(write_bytes("b.csv", b"a,a\n1,2\n"))


def test_csv_header_only_still_gives_columns(write_bytes: Writer) -> None:
    batches = list(iter_batches(write_bytes("a.csv", b"question,answer\n")))
    assert [b.num_rows for b in batches] == [0] and batches[0].schema.names == ["question", "answer"]


def test_csv_batches_are_bounded(sample: Callable[[str], Path]) -> None:
    sizes = [b.num_rows for b in iter_batches(sample("support_qa.csv"), batch_rows=7)]
    assert sum(sizes) == 30 and max(sizes) <= 7


def test_parquet_values_cast_to_strings(tmp_path: Path) -> None:
    table = pa.table(
        {
            "n": pa.array([1, None, 3]),
            "f": pa.array([1.5, 2.0, None]),
            "flag": pa.array([True, False, None]),
            "tags": pa.array([["a", "b"], [], None]),
            "meta": pa.array([{"k": "v"}, {"k": "é"}, None]),
            "s": pa.array(["NA", "", None], pa.large_string()),
            "d": pa.array(["x", "y", "x"]).dictionary_encode(),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=2)
    batches = list(iter_batches(path, batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 1]
    assert all(field.type == pa.string() for b in batches for field in b.schema)
    got = [row for b in batches for row in b.to_pylist()]
    assert got[0] == {
        "n": "1",
        "f": "1.5",
        "flag": "true",
        "tags": '["a","b"]',
        "meta": '{"k":"v"}',
        "s": "NA",
        "d": "x",
    }
    assert got[1] == {"n": None, "f": "2", "flag": "false", "tags": "[]", "meta": '{"k":"é"}', "s": "", "d": "y"}
    assert got[2]["n"] == "3" and got[2]["tags"] is None and got[2]["s"] is None


def test_parquet_and_csv_samples_read_the_same(sample: Callable[[str], Path]) -> None:
    assert rows(sample("support_qa.parquet")) == rows(sample("support_qa.csv"))


def test_jsonl_splits_on_newline_only_and_skips_blank_lines(write_bytes: Writer) -> None:
    data = '{"a":"x\u2028y\u2029z"}\n\n  \r\n{"a":"second","n":2,"l":[1,{"b":null}]}\r\n'
    path = write_bytes("a.jsonl", data.encode())
    assert rows(path) == [
        {"a": "x\u2028y\u2029z", "n": None, "l": None},
        {"a": "second", "n": "2", "l": '[1,{"b":null}]'},
    ]


@pytest.mark.parametrize(
    ("line", "message"), [("[1,2]", "JSON object"), ('{"a":', "Invalid JSON"), ("3", "JSON object")]
)
def test_jsonl_bad_line_reports_line_number(write_bytes: Writer, line: str, message: str) -> None:
    path = write_bytes("a.jsonl", ('{"a":"1"}\n\n' + line + "\n").encode())
    with pytest.raises(MalformedFile) as info:
        rows(path)
    assert info.value.line == 3 and message in info.value.detail


def test_json_array_streams_objects(write_bytes: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_reader, "_CHUNK", 7)  # force many refills mid-object
    records = [{"q": f'question {i}, "quoted" é', "a": i} for i in range(20)]
    path = write_bytes("a.json", json.dumps(records, ensure_ascii=False, indent=1).encode())
    assert rows(path, batch_rows=6) == [{"q": r["q"], "a": str(r["a"])} for r in records]


@pytest.mark.parametrize(("text", "row"), [('{"a": 1}', None), ('[{"a": 1}, 2]', 2), ('[{"a": 1} {"a": 2}]', 2)])
def test_json_array_errors(write_bytes: Writer, text: str, row: int | None) -> None:
    with pytest.raises(MalformedFile) as info:
        rows(write_bytes("a.json", text.encode()))
    assert info.value.row == row


def test_csv_record_longer_than_a_block_is_read_by_retrying(write_bytes: Writer) -> None:
    long_value = 'long, "quoted"\r\n' * 40  # ~650 bytes, ten times the block
    quoted = long_value.replace('"', '""')
    body = "".join(f'r{i},"{quoted if i == 30 else i}"\r\n' for i in range(60))
    path = write_bytes("a.csv", ("a,b\r\n" + body).encode())
    got = rows(path, csv_block_size=64, batch_rows=4)
    assert [r["a"] for r in got] == [f"r{i}" for i in range(60)]
    assert got[30]["b"] == long_value and got[31]["b"] == "31"


@pytest.mark.parametrize("seed", range(6))
def test_csv_random_crlf_placements_match_stdlib(write_bytes: Writer, seed: int) -> None:
    """Whichever read path is chosen (native, or the boundary-safe stream), values stay exact."""
    import random

    rng = random.Random(seed)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=rng.choice(["\r\n", "\n"]))
    writer.writerow(["a", "b"])
    expected = [
        [f"r{i}", "".join(rng.choice(["x", "\r\n", '"', ",", "é", "\n"]) for _ in range(rng.randrange(30)))]
        for i in range(200)
    ]
    writer.writerows(expected)
    path = write_bytes("a.csv", out.getvalue().encode())
    for block_size in (61, 64, 89, 128):
        assert [[r["a"], r["b"]] for r in rows(path, csv_block_size=block_size)] == expected


def test_csv_boundary_check_finds_cr_at_block_end(write_bytes: Writer) -> None:
    from dataset_formats.csv_reader import _block_ends_in_cr

    path = write_bytes("a.csv", b"a,b\r\n" + b"x" * 58 + b"\r\n")
    assert _block_ends_in_cr(path, 64) and not _block_ends_in_cr(path, 63) and not _block_ends_in_cr(path, 65)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'a,b\n1,2\n3,"open without newline', True),
        (b'a,b\n1,2\n3,"open\nand more\n', True),
        (b'a,b\n1,2\n3,"closed\nlate"', False),
        (b'a,b\n1,2\n3,5" screen\n', False),  # a stray quote inside an unquoted field is data
    ],
)
def test_csv_quote_left_open_at_end_of_file(write_bytes: Writer, data: bytes, error: bool) -> None:
    path = write_bytes("a.csv", data)
    if error:
        with pytest.raises(MalformedFile) as info:
            rows(path)
        assert (info.value.row, info.value.line) == (2, 3) and "never closed" in info.value.detail
    else:
        assert len(rows(path)) == 2


def test_column_hint_skips_other_columns_but_still_checks_rows(write_bytes: Writer, tmp_path: Path) -> None:
    path = write_bytes("a.csv", b"a,b,c,d\n1,2,3,4\n5,6,7,8\n")
    assert rows(path, columns=["b"]) == [{"b": "2", "d": "4"}, {"b": "6", "d": "8"}]
    broken = write_bytes("b.csv", b"a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(MalformedFile) as info:
        rows(broken, columns=["a"])
    assert info.value.row == 2
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), parquet)
    assert rows(parquet, columns=["b"]) == [{"b": "x"}]


def test_parquet_with_many_small_row_groups_reads_every_row_in_order(tmp_path: Path) -> None:
    path = tmp_path / "small_groups.parquet"
    pq.write_table(pa.table({"n": list(range(1000))}), path, row_group_size=7)
    assert [int(r["n"] or -1) for r in rows(path, batch_rows=50)] == list(range(1000))


def test_parquet_with_invalid_utf8_is_malformed(tmp_path: Path) -> None:
    # Writers can store bytes that are not UTF-8 in a string column; they are checked on other threads.
    values = [b"fine"] * 20 + [b"caf\xe9"] + [b"fine"] * 5
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"s": pa.array(values, pa.binary()).view(pa.string())}), path, row_group_size=8)
    batches = iter_batches(path, batch_rows=4)
    assert [b.num_rows for b in itertools.islice(batches, 5)] == [4] * 5  # the rows before it
    with pytest.raises(MalformedFile, match=r"Cannot read the Parquet file: .*UTF8"):
        next(batches)
