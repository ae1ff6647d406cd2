from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_formats.convert import ConversionOptions, convert
from dataset_formats.errors import MalformedFile, MappingError
from dataset_formats.format_types import DataStrategy, FormatType
from dataset_formats.plan import build_plan


def test_result_reports_everything_used(sample: Callable[[str], Path], tmp_path: Path) -> None:
    progress: list[int] = []
    result = convert(
        sample("support_qa.csv"), tmp_path / "o.jsonl", ConversionOptions(), progress=progress.append, batch_rows=8
    )
    assert progress == [8, 16, 24, 30]
    data = result.to_dict()
    assert data["rows_read"] == data["rows_written"] == 30 and data["error_count"] == 0
    assert data["format_type"] == "openai_chat_jsonl" and data["data_strategy"] == "final_only"
    assert data["mapping"]["user"] == "question" and data["mapping"]["thinking"] == "reasoning"
    assert data["system_message_column"] == "system" and data["split"] is None


def test_errors_counted_beyond_those_shown(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    source.write_text("prompt,completion\n" + "".join(f"q{i},{'' if i % 2 else 'a'}\n" for i in range(40)))
    result = convert(source, tmp_path / "o.jsonl", ConversionOptions(), max_errors_shown=3)
    assert (result.rows_written, result.error_count, len(result.row_errors)) == (20, 20, 3)
    assert [e.row for e in result.row_errors] == [2, 4, 6]


def test_malformed_file_leaves_no_output(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    source.write_text("question,answer\n" + "q,a\n" * 10 + 'q,"never closed\n' + "q,a\n" * 5)
    out = tmp_path / "o.jsonl"
    with pytest.raises(MalformedFile) as info:
        convert(source, out, ConversionOptions())
    assert info.value.row == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_parquet_with_invalid_utf8_leaves_no_output(tmp_path: Path) -> None:
    answers = [b"a"] * 50 + [b"\xff"] + [b"a"] * 5  # found after earlier batches were written
    source = tmp_path / "a.parquet"
    table = pa.table({"question": ["q"] * 56, "answer": pa.array(answers, pa.binary()).view(pa.string())})
    pq.write_table(table, source)
    with pytest.raises(MalformedFile, match="UTF8"):
        convert(source, tmp_path / "o.jsonl", ConversionOptions(), batch_rows=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


def test_missing_roles_are_mapping_errors(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    source.write_text("text,label\nx,y\n")
    with pytest.raises(MappingError, match="user or assistant"):
        convert(source, tmp_path / "o.jsonl", ConversionOptions())
    result = convert(source, tmp_path / "o.jsonl", ConversionOptions(mapping={"user": "text", "assistant": "label"}))
    assert json.loads((tmp_path / "o.jsonl").read_text())["messages"][2] == {"role": "assistant", "content": "y"}
    assert result.mapping.user == "text"


def test_plain_text_shapes_take_the_columnar_path() -> None:
    columns = ["system", "question", "reasoning", "answer"]
    assert build_plan(ConversionOptions(), columns).columnar
    assert build_plan(ConversionOptions(FormatType.VERTEX_GEMINI, DataStrategy.TWO_MESSAGE_COT), columns).columnar
    assert not build_plan(ConversionOptions(FormatType.OPENAI_CHAT_JSON_SCHEMA_JSONL), columns).columnar
    assert not build_plan(ConversionOptions(), ["messages"]).columnar


def test_csv_and_parquet_give_identical_output(sample: Callable[[str], Path], tmp_path: Path) -> None:
    options = ConversionOptions(FormatType.VERTEX_GEMINI, DataStrategy.TWO_MESSAGE_COT)
    convert(sample("support_qa.csv"), tmp_path / "a.jsonl", options)
    convert(sample("support_qa.parquet"), tmp_path / "b.jsonl", options)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_oversized_batches_are_split_before_rendering(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dataset_formats import convert as convert_module

    monkeypatch.setattr(convert_module, "_MAX_BATCH_BYTES", 2000)
    source = tmp_path / "a.csv"
    source.write_text("prompt,completion\n" + "".join(f"q{i},{'a' * 50}\n" for i in range(300)))
    sizes = [len(b) for b in convert_module.iter_batches(source)]
    pieces = [b.num_rows for batch in convert_module.iter_batches(source) for b in convert_module._bounded(batch)]
    assert sizes == [300] and sum(pieces) == 300 and max(pieces) < 50 and min(pieces) > 10
    result = convert(source, tmp_path / "o.jsonl", ConversionOptions())
    assert result.rows_written == 300 and len((tmp_path / "o.jsonl").read_text().splitlines()) == 300
