"""Format renderers: a chat (list of messages) becomes the JSON shape of one output line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dataset_formats.expressions import JsonObject, Text, ToolCallId
from dataset_formats.format_types import FormatType
from dataset_formats.row_errors import RowError
from dataset_formats.strategies import Message

TOOL_NAME = "task_response"
TEXT_SEPARATOR = "\n\n"

Renderer = Callable[[Sequence[Message], str | None], dict[str, Any]]


def _plain(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _last_assistant(messages: Sequence[Message]) -> Message:
    if not messages or messages[-1].role != "assistant":
        raise RowError(None, "the conversation must end with an assistant message")
    return messages[-1]


def _openai_chat(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    return {"messages": _plain(messages)}


def _openai_json_schema(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    answer = JsonObject(_last_assistant(messages).content, answer_column, as_string=True)
    return {"messages": [*_plain(messages[:-1]), {"role": "assistant", "content": answer}]}


def _openai_toolcall(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    arguments = JsonObject(_last_assistant(messages).content, answer_column, as_string=True)
    call = {"id": "call_1", "type": "function", "function": {"name": TOOL_NAME, "arguments": arguments}}
    return {"messages": [*_plain(messages[:-1]), {"role": "assistant", "content": None, "tool_calls": [call]}]}


def _huggingface(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    return {"conversations": _plain(messages)}


def _huggingface_toolcall(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    answer = _last_assistant(messages).content
    function = {
        "name": TOOL_NAME,
        "id": ToolCallId(answer),
        "arguments": JsonObject(answer, answer_column, as_string=False),
    }
    call = {"type": "function", "function": function}
    return {"conversations": [*_plain(messages[:-1]), {"role": "assistant", "tool_calls": [call]}]}


_VERTEX_ROLES = {"user": "user", "assistant": "model"}


def _vertex_gemini(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    if not messages or messages[0].role != "system":
        raise RowError(None, "vertex_gemini needs the conversation to start with a system message")
    contents = []
    for message in messages[1:]:
        if message.role not in _VERTEX_ROLES:
            raise RowError(None, f"vertex_gemini cannot carry a {message.role!r} message after the first")
        contents.append({"role": _VERTEX_ROLES[message.role], "parts": [{"text": message.content}]})
    return {
        "systemInstruction": {"role": "system", "parts": [{"text": messages[0].content}]},
        "contents": contents,
    }


def _together_instruction(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    answer = _last_assistant(messages)
    return {
        "prompt": Text.join(TEXT_SEPARATOR, (m.content for m in messages[:-1])),
        "completion": answer.content,
    }


def _text(messages: Sequence[Message], answer_column: str | None) -> dict[str, Any]:
    return {"text": Text.join(TEXT_SEPARATOR, (m.content for m in messages))}


RENDERERS: dict[FormatType, Renderer] = {
    FormatType.OPENAI_CHAT_JSONL: _openai_chat,
    FormatType.OPENAI_CHAT_JSON_SCHEMA_JSONL: _openai_json_schema,
    FormatType.OPENAI_CHAT_TOOLCALL_JSONL: _openai_toolcall,
    FormatType.HUGGINGFACE_CHAT_TEMPLATE_JSONL: _huggingface,
    FormatType.HUGGINGFACE_CHAT_TEMPLATE_TOOLCALL_JSONL: _huggingface_toolcall,
    FormatType.VERTEX_GEMINI: _vertex_gemini,
    FormatType.TOGETHER_INSTRUCTION_JSONL: _together_instruction,
    FormatType.TEXT_JSONL: _text,
}


def render_preference(prompt: Sequence[Message], chosen: Text, rejected: Text) -> dict[str, Any]:
    """Together/OpenAI preference line; the prompt must end on a user turn."""
    if not prompt or prompt[-1].role != "user":
        raise RowError(None, "the preference prompt must end with a user message")
    return {
        "input": {"messages": _plain(prompt)},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }
