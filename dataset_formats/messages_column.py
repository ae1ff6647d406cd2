"""A ``messages`` cell holding a whole conversation (JSON list of {role, content})."""

from __future__ import annotations

import msgspec

from dataset_formats.expressions import Text
from dataset_formats.row_errors import RowError
from dataset_formats.strategies import Message

ROLES = ("system", "user", "assistant")


def parse_messages(raw: str | None, column: str, system: str) -> list[Message]:
    """Decode and check a conversation; ``system`` is prepended when it has no system message.

    Roles must not repeat back to back (Together rejects "roles must alternate").
    """
    if not raw:
        raise RowError(column, "messages cell is empty")
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RowError(column, f"messages cell is not JSON: {exc}") from exc
    if not isinstance(value, list) or not value:
        raise RowError(column, "messages cell must be a non-empty JSON list of {role, content} objects")
    messages: list[Message] = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise RowError(column, f"message {index} needs a role among {list(ROLES)}")
        content = item.get("content")
        if not isinstance(content, str):
            raise RowError(column, f"message {index} needs a string content")
        if messages and messages[-1].role == item["role"]:
            raise RowError(column, f"messages {index - 1} and {index} are both {item['role']!r}; roles must alternate")
        messages.append(Message(item["role"], Text.of(content)))
    if messages[0].role != "system":
        messages.insert(0, Message("system", Text.of(system)))
    return messages
