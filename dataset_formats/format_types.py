"""Output format and data strategy identifiers (wire values shared with Kiln AI) and their catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FormatType(StrEnum):
    OPENAI_CHAT_JSONL = "openai_chat_jsonl"
    OPENAI_CHAT_JSON_SCHEMA_JSONL = "openai_chat_json_schema_jsonl"
    OPENAI_CHAT_TOOLCALL_JSONL = "openai_chat_toolcall_jsonl"
    HUGGINGFACE_CHAT_TEMPLATE_JSONL = "huggingface_chat_template_jsonl"
    HUGGINGFACE_CHAT_TEMPLATE_TOOLCALL_JSONL = "huggingface_chat_template_toolcall_jsonl"
    VERTEX_GEMINI = "vertex_gemini"
    TOGETHER_INSTRUCTION_JSONL = "together_instruction_jsonl"
    TEXT_JSONL = "text_jsonl"
    DPO_PREFERENCE_JSONL = "dpo_preference_jsonl"


class DataStrategy(StrEnum):
    FINAL_ONLY = "final_only"
    TWO_MESSAGE_COT = "two_message_cot"
    FINAL_AND_INTERMEDIATE = "final_and_intermediate"
    FINAL_AND_INTERMEDIATE_R1_COMPATIBLE = "final_and_intermediate_r1_compatible"


THINKING_STRATEGIES = frozenset(
    {
        DataStrategy.TWO_MESSAGE_COT,
        DataStrategy.FINAL_AND_INTERMEDIATE,
        DataStrategy.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE,
    }
)
# Strategies that add a second user turn and therefore need a conversation-shaped format.
TWO_MESSAGE_STRATEGIES = frozenset({DataStrategy.TWO_MESSAGE_COT, DataStrategy.FINAL_AND_INTERMEDIATE})


@dataclass(frozen=True)
class FormatInfo:
    description: str
    example: dict[str, Any]


_SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
_USER = {"role": "user", "content": "Where is my order?"}
_ANSWER = {"role": "assistant", "content": "It ships tomorrow."}
_JSON_ANSWER = '{"status":"shipping","eta_days":1}'

FORMAT_TYPE_INFO: dict[FormatType, FormatInfo] = {
    FormatType.OPENAI_CHAT_JSONL: FormatInfo(
        "OpenAI/Together chat messages with a plain-text assistant answer.",
        {"messages": [_SYSTEM, _USER, _ANSWER]},
    ),
    FormatType.OPENAI_CHAT_JSON_SCHEMA_JSONL: FormatInfo(
        "OpenAI chat messages whose assistant answer is a JSON object (structured output).",
        {"messages": [_SYSTEM, _USER, {"role": "assistant", "content": _JSON_ANSWER}]},
    ),
    FormatType.OPENAI_CHAT_TOOLCALL_JSONL: FormatInfo(
        "OpenAI chat messages whose answer is a `task_response` tool call carrying the JSON object.",
        {
            "messages": [
                _SYSTEM,
                _USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "task_response", "arguments": _JSON_ANSWER},
                        }
                    ],
                },
            ]
        },
    ),
    FormatType.HUGGINGFACE_CHAT_TEMPLATE_JSONL: FormatInfo(
        "Hugging Face chat-template `conversations` list with a plain-text answer.",
        {"conversations": [_SYSTEM, _USER, _ANSWER]},
    ),
    FormatType.HUGGINGFACE_CHAT_TEMPLATE_TOOLCALL_JSONL: FormatInfo(
        "Hugging Face `conversations` whose answer is a `task_response` tool call with object arguments.",
        {
            "conversations": [
                _SYSTEM,
                _USER,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "type": "function",
                            "function": {
                                "name": "task_response",
                                "id": "3f2a9c1d0",
                                "arguments": {"status": "shipping", "eta_days": 1},
                            },
                        }
                    ],
                },
            ]
        },
    ),
    FormatType.VERTEX_GEMINI: FormatInfo(
        "Google Vertex AI Gemini tuning: systemInstruction plus user/model `contents`.",
        {
            "systemInstruction": {"role": "system", "parts": [{"text": "You are a helpful assistant."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Where is my order?"}]},
                {"role": "model", "parts": [{"text": "It ships tomorrow."}]},
            ],
        },
    ),
    FormatType.TOGETHER_INSTRUCTION_JSONL: FormatInfo(
        "Together instruction format: the prompt (system and user text) and the completion.",
        {"prompt": "You are a helpful assistant.\n\nWhere is my order?", "completion": "It ships tomorrow."},
    ),
    FormatType.TEXT_JSONL: FormatInfo(
        "Plain text for continued pre-training: every message's text joined by a blank line.",
        {"text": "You are a helpful assistant.\n\nWhere is my order?\n\nIt ships tomorrow."},
    ),
    FormatType.DPO_PREFERENCE_JSONL: FormatInfo(
        "Together/OpenAI preference (DPO) pairs: input messages, preferred and non-preferred answer.",
        {
            "input": {"messages": [_SYSTEM, _USER]},
            "preferred_output": [_ANSWER],
            "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
        },
    ),
}
