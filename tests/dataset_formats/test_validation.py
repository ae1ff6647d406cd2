from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from dataset_formats.validation import validate

Writer = Callable[[str, bytes], Path]


def test_report_numbers(write_bytes: Writer) -> None:
    data = (
        "question,answer,note\n"
        "hello,world,NA\n"  # 5 + 5 + 2 = 12 chars
        "hello,world,NA\n"  # duplicate of the row above
        ",empty question,\n"  # 0 + 14 + 0 = 14
        "café?,日本語,x\n"  # 5 + 3 + 1 = 9
    )
    report = validate(write_bytes("v.csv", data.encode()), max_errors_shown=5)
    assert report.row_count == 4 and report.columns == ["question", "answer", "note"]
    question = report.column_stats["question"]
    assert (question.non_empty, question.empty, question.min_length, question.max_length) == (3, 1, 5, 5)
    assert question.mean_length == 5.0
    answer = report.column_stats["answer"]
    assert (answer.min_length, answer.max_length) == (3, 14) and math.isclose(answer.mean_length or 0, 27 / 4)
    assert report.column_stats["note"].empty == 1
    assert report.duplicate_rows == 1
    assert report.total_characters == 12 + 12 + 14 + 9
    assert report.estimated_tokens == math.ceil(47 / 4)
    assert report.row_length_percentiles == {"p50": 12, "p90": 14, "p95": 14, "p99": 14, "max": 14}
    assert report.mapping is not None and (report.mapping.user, report.mapping.assistant) == ("question", "answer")
    assert report.error_count == 1
    assert report.row_errors[0].to_dict() == {"row": 3, "column": "question", "message": "'question' is empty"}
    assert json.loads(json.dumps(report.to_dict()))["column_stats"]["question"]["empty"] == 1


def test_errors_are_all_counted_but_only_first_shown(write_bytes: Writer) -> None:
    rows = "".join(f"q{i},\n" for i in range(250))
    report = validate(write_bytes("v.csv", ("prompt,completion\n" + rows).encode()), max_errors_shown=10)
    assert report.error_count == 250 and len(report.row_errors) == 10
    assert [e.row for e in report.row_errors] == list(range(1, 11))


def test_messages_and_mapping_problems(sample: Callable[[str], Path], write_bytes: Writer) -> None:
    chat = validate(sample("support_chat.jsonl"))
    assert chat.row_count == 6 and chat.error_count == 0 and chat.mapping and chat.mapping.messages == "messages"
    bad = validate(write_bytes("m.jsonl", b'{"messages": "[oops"}\n{"messages": [{"role":"user","content":"x"}]}\n'))
    assert bad.error_count == 1 and bad.row_errors[0].row == 1
    ambiguous = validate(write_bytes("a.csv", b"instruction,input,output\na,b,c\n"))
    assert ambiguous.mapping is None and ambiguous.mapping_error and "instruction" in ambiguous.mapping_error


def test_long_rows_use_percentile_buckets_within_one_percent(write_bytes: Writer) -> None:
    lengths = [10_000 + 37 * i for i in range(100)]
    data = "text\n" + "".join("x" * n + "\n" for n in lengths)
    report = validate(write_bytes("long.csv", data.encode()))
    p50 = report.row_length_percentiles["p50"]
    assert sorted(lengths)[49] <= p50 <= sorted(lengths)[49] * 1.01
    assert report.row_length_percentiles["max"] == max(lengths)
