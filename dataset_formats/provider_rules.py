"""Local re-implementation of Together's JSONL rules (specs/PROVIDERS.md §1.4).

Together's 3.x ``check_file`` is deliberately thin; these are the stricter 2.0/v1 checks that its
server enforces, so a file passing here should not be rejected after upload.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

MAX_FILE_BYTES = int(50.1 * (1 << 30))
MAX_PROBLEMS = 1000
_FORMATS: dict[str, tuple[str, ...]] = {
    "general": ("text",),
    "conversation": ("messages",),
    "instruction": ("prompt", "completion"),
    "preference_openai": ("input", "preferred_output", "non_preferred_output"),
}
_OPTIONAL_KEYS = {"conversation": {"tools"}}
_ROLES = ("system", "user", "assistant", "tool")


def _content_problem(content: Any, role: str) -> str | None:
    if isinstance(content, str):
        return None
    if not isinstance(content, list) or not content:
        return "content must be a string or a non-empty list of content parts"
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image_url" and role == "user":
            url = (part.get("image_url") or {}).get("url", "")
            if isinstance(url, str) and url.startswith(("data:image/jpeg;", "data:image/png;", "data:image/webp;")):
                continue
        return f"invalid content part {part!r} in a {role} message"
    return None


def _conversation_problems(messages: Any, require_assistant: bool) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages must be a non-empty list"]
    problems: list[str] = []
    previous = None
    for index, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            problems.append(f"message {index} is not an object")
            continue
        role = message.get("role")
        if role not in _ROLES:
            problems.append(f"message {index} has role {role!r}; allowed roles: {list(_ROLES)}")
        if role == previous:
            problems.append(f"messages {index - 1} and {index} are both {role!r}: roles must alternate")
        previous = role
        if "weight" in message and (type(message["weight"]) is not int or message["weight"] not in (0, 1)):
            problems.append(f"message {index} weight must be 0 or 1")
        if "content" in message:
            problem = _content_problem(message["content"], str(role))
            if problem:
                problems.append(f"message {index}: {problem}")
    if require_assistant and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append("the conversation has no assistant message")
    return problems


def _single_assistant(value: Any, key: str) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) != 1
        or not isinstance(value[0], dict)
        or value[0].get("role") != "assistant"
        or "content" not in value[0]
    ):
        return [f"{key} must be a list of exactly one assistant message with content"]
    problem = _content_problem(value[0]["content"], "assistant")
    return [f"{key}: {problem}"] if problem else []


def _line_problems(record: dict[str, Any], kind: str) -> list[str]:
    if kind == "general":
        return [] if isinstance(record["text"], str) else ["text must be a string"]
    if kind == "conversation":
        return _conversation_problems(record["messages"], require_assistant=True)
    if kind == "instruction":
        return [
            f"{key}: {problem}"
            for key in ("prompt", "completion")
            if (problem := _content_problem(record[key], "user" if key == "prompt" else "assistant"))
        ]
    prompt = record["input"]
    if not isinstance(prompt, dict) or "messages" not in prompt:
        return ["input must be an object with messages"]
    problems = _conversation_problems(prompt["messages"], require_assistant=False)
    messages = prompt["messages"]
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "assistant":
        problems.append("the last input message must not be an assistant message")
    return (
        problems
        + _single_assistant(record["preferred_output"], "preferred_output")
        + _single_assistant(record["non_preferred_output"], "non_preferred_output")
    )


def _detect(record: dict[str, Any]) -> tuple[str | None, str | None]:
    matches = [kind for kind, keys in _FORMATS.items() if all(key in record for key in keys)]
    if len(matches) > 1:
        return None, f"Found multiple dataset formats {matches}"
    if not matches:
        return None, f"Could not detect a format from keys {sorted(record)}"
    kind = matches[0]
    allowed = set(_FORMATS[kind]) | _OPTIONAL_KEYS.get(kind, set())
    extra = sorted(set(record) - allowed)
    return kind, (f'Found extra column "{extra[0]}"' if extra else None)


def check_together_jsonl(path: str | os.PathLike[str]) -> list[str]:
    """Problems Together would report for this training file; an empty list means it passes."""
    path = Path(path)
    if not path.is_file():
        return [f"{path} is not a regular file"]
    size = path.stat().st_size
    if size == 0 or size > MAX_FILE_BYTES:
        return [f"file size {size} is outside 1 byte .. 50.1 GiB"]
    if path.suffix != ".jsonl":
        return [f"extension {path.suffix!r} is not .jsonl"]
    problems: list[str] = []
    file_kind: str | None = None
    samples = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if len(problems) >= MAX_PROBLEMS:
                break
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"line {number}: not UTF-8")
                continue
            if not text.strip():
                continue
            try:
                record = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                problems.append(f"line {number}: Each line must be a JSON object ({exc})")
                continue
            if not isinstance(record, dict):
                problems.append(f"line {number}: Each line must be a JSON object")
                continue
            samples += 1
            kind, problem = _detect(record)
            if problem:
                problems.append(f"line {number}: {problem}")
            if kind is None:
                continue
            if file_kind is None:
                file_kind = kind
            elif kind != file_kind:
                problems.append(f"line {number}: format {kind} differs from earlier lines ({file_kind})")
            problems += [f"line {number}: {p}" for p in _line_problems(record, kind)]
    if samples < 1:
        problems.append("the file has no samples (at least 1 is required)")
    return problems
