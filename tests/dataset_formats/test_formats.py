"""Every format type x data strategy on the sample data, with hand-written golden lines."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dataset_formats.convert import ConversionOptions, convert, iter_lines
from dataset_formats.errors import IncompatibleOptions
from dataset_formats.format_types import FORMAT_TYPE_INFO, DataStrategy, FormatType
from dataset_formats.provider_rules import check_together_jsonl

F, D = FormatType, DataStrategy
S1 = "You are Acme's support assistant. Be concise, friendly and accurate."
Q1 = "Where is my order #1042?"
R1 = "The customer wants a shipping status. Order #1042 shipped on Monday, so I should give the tracking steps."
A1 = "Your order #1042 shipped on Monday. You can track it under Account → Orders."
TI = "Think step by step, explaining your reasoning."
FINAL = "Considering the above, return a final result."
WRAPPED = f"The input is:\n<user_input>\n{Q1}\n</user_input>\n\n{TI}"
THINK = f"<think>\n{R1}\n</think>\n\n{A1}"


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


CHATS = {
    D.FINAL_ONLY: [msg("system", S1), msg("user", Q1), msg("assistant", A1)],
    D.TWO_MESSAGE_COT: [
        msg("system", S1),
        msg("user", WRAPPED),
        msg("assistant", R1),
        msg("user", FINAL),
        msg("assistant", A1),
    ],
    D.FINAL_AND_INTERMEDIATE: [
        msg("system", S1),
        msg("user", Q1),
        msg("system", TI),
        msg("assistant", R1),
        msg("user", FINAL),
        msg("assistant", A1),
    ],
    D.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE: [msg("system", S1), msg("user", Q1), msg("assistant", THINK)],
}


def vertex(chat: list[dict[str, str]]) -> dict[str, Any]:
    role = {"user": "user", "assistant": "model"}
    return {
        "systemInstruction": {"role": "system", "parts": [{"text": chat[0]["content"]}]},
        "contents": [{"role": role[m["role"]], "parts": [{"text": m["content"]}]} for m in chat[1:]],
    }


def expected_first_line(format_type: FormatType, strategy: DataStrategy) -> dict[str, Any]:
    chat = CHATS[strategy]
    if format_type is F.OPENAI_CHAT_JSONL:
        return {"messages": chat}
    if format_type is F.HUGGINGFACE_CHAT_TEMPLATE_JSONL:
        return {"conversations": chat}
    if format_type is F.VERTEX_GEMINI:
        return vertex(chat)
    if format_type is F.TOGETHER_INSTRUCTION_JSONL:
        return {"prompt": f"{S1}\n\n{Q1}", "completion": chat[-1]["content"]}
    assert format_type is F.TEXT_JSONL
    return {"text": f"{S1}\n\n{Q1}\n\n{chat[-1]['content']}"}


TEXT_FORMATS = [
    F.OPENAI_CHAT_JSONL,
    F.HUGGINGFACE_CHAT_TEMPLATE_JSONL,
    F.VERTEX_GEMINI,
    F.TOGETHER_INSTRUCTION_JSONL,
    F.TEXT_JSONL,
]
INCOMPATIBLE = {
    (F.VERTEX_GEMINI, D.FINAL_AND_INTERMEDIATE),
    (F.TOGETHER_INSTRUCTION_JSONL, D.TWO_MESSAGE_COT),
    (F.TOGETHER_INSTRUCTION_JSONL, D.FINAL_AND_INTERMEDIATE),
    (F.TEXT_JSONL, D.TWO_MESSAGE_COT),
    (F.TEXT_JSONL, D.FINAL_AND_INTERMEDIATE),
    (F.OPENAI_CHAT_JSON_SCHEMA_JSONL, D.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE),
    (F.OPENAI_CHAT_TOOLCALL_JSONL, D.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE),
    (F.HUGGINGFACE_CHAT_TEMPLATE_TOOLCALL_JSONL, D.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE),
    *((F.DPO_PREFERENCE_JSONL, d) for d in D if d is not D.FINAL_ONLY),
}
TOGETHER_FORMATS = {
    F.OPENAI_CHAT_JSONL,
    F.OPENAI_CHAT_JSON_SCHEMA_JSONL,
    F.TOGETHER_INSTRUCTION_JSONL,
    F.TEXT_JSONL,
    F.DPO_PREFERENCE_JSONL,
}


@pytest.mark.parametrize(
    ("format_type", "strategy"), [c for c in itertools.product(TEXT_FORMATS, D) if c not in INCOMPATIBLE]
)
@pytest.mark.parametrize("source", ["support_qa.csv", "support_qa.parquet"])
def test_text_formats_golden(
    sample: Callable[[str], Path], tmp_path: Path, format_type: FormatType, strategy: DataStrategy, source: str
) -> None:
    out = tmp_path / "out.jsonl"
    result = convert(sample(source), out, ConversionOptions(format_type=format_type, data_strategy=strategy))
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == result.rows_written == 30 and result.error_count == 0
    assert json.loads(lines[0]) == expected_first_line(format_type, strategy)
    # row 4 has an empty system cell: the default system message is used for it
    assert "You are a helpful assistant." in lines[3].decode()
    if format_type in TOGETHER_FORMATS:
        assert check_together_jsonl(out) == []


@pytest.mark.parametrize(("format_type", "strategy"), sorted(INCOMPATIBLE))
def test_incompatible_combinations_fail_up_front(
    sample: Callable[[str], Path], tmp_path: Path, format_type: FormatType, strategy: DataStrategy
) -> None:
    source = "preferences.csv" if format_type is F.DPO_PREFERENCE_JSONL else "support_qa.csv"
    out = tmp_path / "out.jsonl"
    with pytest.raises(IncompatibleOptions) as info:
        convert(sample(source), out, ConversionOptions(format_type=format_type, data_strategy=strategy))
    assert str(strategy) in info.value.detail or str(format_type) in info.value.detail
    assert not out.exists()


@pytest.mark.parametrize("strategy", [D.FINAL_ONLY, D.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE])
def test_thinking_instructions_rejected_where_unused(
    sample: Callable[[str], Path], tmp_path: Path, strategy: DataStrategy
) -> None:
    options = ConversionOptions(data_strategy=strategy, thinking_instructions="Reason first.")
    with pytest.raises(IncompatibleOptions, match="thinking_instructions"):
        convert(sample("support_qa.csv"), tmp_path / "o.jsonl", options)


def test_custom_thinking_instructions_are_used_and_reported(sample: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    options = ConversionOptions(data_strategy=D.FINAL_AND_INTERMEDIATE, thinking_instructions="Reason first.")
    result = convert(sample("support_qa.csv"), out, options)
    assert result.thinking_instructions == "Reason first."
    assert json.loads(out.read_text().splitlines()[0])["messages"][2] == msg("system", "Reason first.")
    default = convert(sample("support_qa.csv"), out, ConversionOptions(data_strategy=D.TWO_MESSAGE_COT))
    assert default.thinking_instructions == TI
    assert convert(sample("support_qa.csv"), out, ConversionOptions()).thinking_instructions is None


def test_thinking_strategy_without_reasoning_is_a_row_error(write_bytes: Callable[[str, bytes], Path]) -> None:
    path = write_bytes("a.csv", b"question,reasoning,answer\nq1,r1,a1\nq2,,a2\n")
    options = ConversionOptions(data_strategy=D.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE)
    result = convert(path, path.with_name("o.jsonl"), options)
    assert (result.rows_written, result.error_count) == (1, 1)
    assert result.row_errors[0].to_dict() == {
        "row": 2,
        "column": "reasoning",
        "message": "the thinking column 'reasoning' is empty",
    }


JSON_ROWS = (
    "question,reasoning,answer\n"
    '"Classify: my card was charged twice",Money twice.,"{""category"": ""billing"", ""urgent"": true}"\n'
    '"Classify: hello",Greeting.,not json\n'
    '"Classify: café",Food.,"[1, 2]"\n'
    '"Classify: app crash",A bug.,"{""category"":""bug"",""tags"":[""ios"",""日本""]}"\n'
)


@pytest.fixture
def json_answers(write_bytes: Callable[[str, bytes], Path]) -> Path:
    return write_bytes("structured.csv", JSON_ROWS.encode())


def _lines(path: Path, format_type: FormatType, strategy: DataStrategy = D.FINAL_ONLY) -> list[dict[str, Any]]:
    out = path.with_name(f"{format_type}.jsonl")
    result = convert(path, out, ConversionOptions(format_type=format_type, data_strategy=strategy))
    assert result.error_count == 2 and [e.row for e in result.row_errors] == [2, 3]
    assert all(e.column == "answer" and "JSON object" in e.message for e in result.row_errors)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_json_schema_format(json_answers: Path) -> None:
    lines = _lines(json_answers, F.OPENAI_CHAT_JSON_SCHEMA_JSONL)
    assert lines[0]["messages"][2] == msg("assistant", '{"category":"billing","urgent":true}')
    assert lines[1]["messages"][2] == msg("assistant", '{"category":"bug","tags":["ios","日本"]}')
    assert check_together_jsonl(json_answers.with_name(f"{F.OPENAI_CHAT_JSON_SCHEMA_JSONL}.jsonl")) == []


def test_openai_toolcall_format(json_answers: Path) -> None:
    lines = _lines(json_answers, F.OPENAI_CHAT_TOOLCALL_JSONL)
    assert lines[0] == {
        "messages": [
            msg("system", "You are a helpful assistant."),
            msg("user", "Classify: my card was charged twice"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "task_response", "arguments": '{"category":"billing","urgent":true}'},
                    }
                ],
            },
        ]
    }


def test_huggingface_toolcall_format(json_answers: Path) -> None:
    lines = _lines(json_answers, F.HUGGINGFACE_CHAT_TEMPLATE_TOOLCALL_JSONL, D.TWO_MESSAGE_COT)
    first = lines[0]["conversations"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user", "assistant"]
    call = first[-1]["tool_calls"][0]
    assert first[-1]["role"] == "assistant" and call["type"] == "function"
    assert call["function"]["name"] == "task_response"
    assert call["function"]["arguments"] == {"category": "billing", "urgent": True}
    assert len(call["function"]["id"]) == 9 and call["function"]["id"].isalnum()
    again = _lines(json_answers, F.HUGGINGFACE_CHAT_TEMPLATE_TOOLCALL_JSONL, D.TWO_MESSAGE_COT)
    assert again[0] == lines[0]  # ids are deterministic


def test_dpo_preference_format(sample: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "dpo.jsonl"
    result = convert(sample("preferences.csv"), out, ConversionOptions(format_type=F.DPO_PREFERENCE_JSONL))
    assert result.rows_written == 8 and result.error_count == 0
    assert json.loads(out.read_text().splitlines()[0]) == {
        "input": {
            "messages": [msg("system", "You are a helpful assistant."), msg("user", "How do I reset my password?")]
        },
        "preferred_output": [
            msg("assistant", 'Click "Forgot password" on the login page and follow the emailed link.')
        ],
        "non_preferred_output": [msg("assistant", "Just make a new account.")],
    }
    assert check_together_jsonl(out) == []


def test_dpo_without_chosen_rejected_is_incompatible(sample: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(IncompatibleOptions, match="chosen and rejected"):
        convert(sample("support_qa.csv"), tmp_path / "o.jsonl", ConversionOptions(format_type=F.DPO_PREFERENCE_JSONL))


@pytest.mark.parametrize(
    "format_type",
    [
        F.OPENAI_CHAT_JSONL,
        F.HUGGINGFACE_CHAT_TEMPLATE_JSONL,
        F.VERTEX_GEMINI,
        F.TOGETHER_INSTRUCTION_JSONL,
        F.TEXT_JSONL,
    ],
)
def test_messages_column_passthrough(sample: Callable[[str], Path], tmp_path: Path, format_type: FormatType) -> None:
    out = tmp_path / "chat.jsonl"
    result = convert(sample("support_chat.jsonl"), out, ConversionOptions(format_type=format_type))
    assert result.rows_written == 6 and result.error_count == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert len(lines) == 6  # U+2028 inside a message did not split a line
    if format_type is F.OPENAI_CHAT_JSONL:
        assert lines[0]["messages"][0] == msg("system", "You are a helpful assistant.")  # prepended
        assert [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
        assert lines[1]["messages"][0] == msg("system", "You are Café Lumière's assistant. Reply in French.")
        assert lines[4]["messages"][1]["content"] == "Line one\u2028still line one? (U+2028 inside)"
    if format_type is F.TOGETHER_INSTRUCTION_JSONL:
        assert lines[3] == {
            "prompt": "You are a helpful assistant.\n\nパスワードを忘れました。",
            "completion": "ログイン画面の「パスワードをお忘れですか？」からリセットできます。",  # noqa: RUF001
        }
    if format_type is F.VERTEX_GEMINI:
        assert [c["role"] for c in lines[0]["contents"]] == ["user", "model", "user", "model"]
    if format_type in TOGETHER_FORMATS:
        assert check_together_jsonl(out) == []


def test_bad_messages_cells_are_row_errors(write_bytes: Callable[[str, bytes], Path]) -> None:
    good = [msg("user", "hi"), msg("assistant", "hello")]
    records = [
        {"messages": good},
        {"messages": "not json ["},
        {"messages": [msg("user", "a"), msg("user", "b"), msg("assistant", "c")]},
        {"messages": [msg("robot", "a")]},
        {"messages": [msg("user", "only a question")]},
        {"messages": good},
    ]
    path = write_bytes("m.jsonl", "\n".join(json.dumps(r) for r in records).encode())
    result = convert(path, path.with_name("o.jsonl"), ConversionOptions())
    assert result.rows_written == 2
    assert [(e.row, e.column) for e in result.row_errors] == [
        (2, "messages"),
        (3, "messages"),
        (4, "messages"),
        (5, "messages"),
    ]
    assert "alternate" in result.row_errors[1].message
    assert "end with an assistant message" in result.row_errors[3].message
    assert check_together_jsonl(path.with_name("o.jsonl")) == []


def test_format_catalogue_examples_match_their_format() -> None:
    assert set(FORMAT_TYPE_INFO) == set(FormatType)
    assert FORMAT_TYPE_INFO[F.OPENAI_CHAT_JSONL].example["messages"][0]["role"] == "system"
    assert set(FORMAT_TYPE_INFO[F.DPO_PREFERENCE_JSONL].example) == {
        "input",
        "preferred_output",
        "non_preferred_output",
    }
    assert all(info.description.endswith(".") and "\n" not in info.description for info in FORMAT_TYPE_INFO.values())
    assert [str(s) for s in D] == [
        "final_only",
        "two_message_cot",
        "final_and_intermediate",
        "final_and_intermediate_r1_compatible",
    ]


@pytest.mark.parametrize(("format_type", "strategy"), [c for c in itertools.product(F, D) if c not in INCOMPATIBLE])
def test_fast_and_per_row_paths_write_identical_bytes(
    write_bytes: Callable[[str, bytes], Path], format_type: FormatType, strategy: DataStrategy
) -> None:
    tricky = [
        "plain",
        "",
        'quote " backslash \\ slash /',
        "tab\tnl\ncr\rcrlf\r\n",
        "ctrl \x00\x01\x08\x0c\x1f\x7f",
        "unicode café 日本語 🚀 \u2028\u2029 \ufeff",
        '{"json": [1, "x\\ny"]}',
        "</script>&<>",
    ]
    import csv
    import io

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["system", "prompt", "reasoning", "completion", "chosen", "rejected"])
    for i, text in enumerate(tricky * 3):
        writer.writerow(
            [
                tricky[(i + 1) % len(tricky)],
                f"q{i} {text}",
                f"r {text}",
                f'{{"a": {json.dumps(text)}}}',
                f"c {text}",
                f"x {text}",
            ]
        )
    path = write_bytes("tricky.csv", buffer.getvalue().encode())
    options = ConversionOptions(format_type=format_type, data_strategy=strategy)
    fast = b"".join(iter_lines(path, options, batch_rows=5))
    slow = b"".join(iter_lines(path, options, rowwise=True, batch_rows=7))
    assert fast == slow and fast.count(b"\n") >= 20
