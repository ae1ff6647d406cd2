"""Properties over arbitrary tables of strings (hypothesis)."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import msgspec
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_formats.columnar import escape
from dataset_formats.convert import ConversionOptions, convert
from dataset_formats.splits import SplitSpec

# Any text a spreadsheet can hold, including the characters that break naive writers.
cell = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40
).filter(lambda s: s.strip() != "")
table = st.lists(st.tuples(cell, cell), min_size=1, max_size=40)


def write_csv(rows: list[tuple[str, str]], folder: Path) -> Path:
    path = folder / "table.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerows(rows)
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=table)
def test_any_table_round_trips_through_chat_jsonl(rows: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = write_csv(rows, Path(folder))
        output = Path(folder) / "out.jsonl"
        result = convert(source, output, ConversionOptions(system_message="S"))
        lines = output.read_bytes().split(b"\n")
    assert lines[-1] == b"" and result.rows_written == len(rows) and result.error_count == 0
    parsed = [json.loads(line) for line in lines[:-1]]
    assert [(m["messages"][1]["content"], m["messages"][2]["content"]) for m in parsed] == rows
    assert all(m["messages"][0] == {"role": "system", "content": "S"} for m in parsed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=table, seed=st.integers(min_value=0, max_value=2**31), train=st.floats(min_value=0.05, max_value=0.9))
def test_split_parts_partition_the_rows(rows: list[tuple[str, str]], seed: int, train: float) -> None:
    spec = SplitSpec({"train": train, "test": round(1 - train, 10)}, seed=seed)
    seen: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        source = write_csv(rows, Path(folder))
        for part in spec.names:
            output = Path(folder) / f"{part}.jsonl"
            result = convert(source, output, ConversionOptions(system_message="S"), spec, part)
            assert sum(result.split_counts.values()) == len(rows)
            seen += output.read_text(encoding="utf-8").split("\n")[:-1]
    expected = sorted(json.dumps({"messages": [{"role": "system", "content": "S"},
                                               {"role": "user", "content": q},
                                               {"role": "assistant", "content": a}]},
                                 ensure_ascii=False, separators=(",", ":")) for q, a in rows)
    assert sorted(seen) == expected


# Mostly characters that need escaping, so they often start or end a value or follow each other.
escapable = st.text(alphabet=st.sampled_from([chr(c) for c in range(0x20)] + ['"', "\\", "a", "é", "🚀"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(escapable, min_size=1, max_size=30), data=st.data())
def test_escape_matches_msgspec(values: list[str], data: st.DataObject) -> None:
    array = pa.array([v.encode() for v in values], pa.binary())
    start = data.draw(st.integers(0, len(values) - 1))
    stop = data.draw(st.integers(start, len(values)))
    expected = [msgspec.json.encode(v)[1:-1] for v in values[start:stop]]
    assert escape(array.slice(start, stop - start)).to_pylist() == expected
