"""Turn conversion options plus the file's columns into a line plan: a shape and its preconditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dataset_formats.columnar import compilable
from dataset_formats.compatibility import check_compatibility
from dataset_formats.expressions import Col, Row, Text
from dataset_formats.format_types import TWO_MESSAGE_STRATEGIES, DataStrategy, FormatType
from dataset_formats.formats import RENDERERS, render_preference
from dataset_formats.mapping import ColumnMapping, detect_mapping
from dataset_formats.messages_column import parse_messages
from dataset_formats.row_errors import RowError
from dataset_formats.strategies import DEFAULT_THINKING_INSTRUCTIONS, Message, build_chat
from dataset_formats.system_message import SystemMessageGenerator, parse_template


@dataclass(frozen=True)
class ConversionOptions:
    format_type: FormatType = FormatType.OPENAI_CHAT_JSONL
    data_strategy: DataStrategy = DataStrategy.FINAL_ONLY
    system_message: str | None = None
    system_message_template: str | None = None
    use_system_column: bool = True
    thinking_instructions: str | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    # Build each user turn from the row with a template (e.g. "{question} ({product})") instead of a user column.
    user_message_template: str | None = None


@dataclass(frozen=True)
class LinePlan:
    format_type: FormatType
    mapping: ColumnMapping
    system: SystemMessageGenerator
    system_text: Text
    thinking_instructions: str | None
    required: tuple[tuple[str, str], ...]  # (role, column) pairs that must be non-empty
    static_shape: dict[str, Any] | None  # None: built per row from the messages column
    user_template: Text | None = None  # the user turn, when built from a template

    @property
    def template_columns(self) -> list[str]:
        """Columns the user template reads (besides the mapped ones)."""
        return sorted(self.user_template.columns()) if self.user_template is not None else []

    @property
    def columnar(self) -> bool:
        """True when every leaf is plain text, so whole batches can be assembled with Arrow compute."""
        return self.static_shape is not None and compilable(self.static_shape)

    def shape_for(self, row: Row) -> dict[str, Any]:
        if self.static_shape is not None:
            return self.static_shape
        assert self.mapping.messages is not None
        column = self.mapping.messages
        chat = parse_messages(row.get(column), column, self.system_text.evaluate(row))
        if self.format_type is not FormatType.DPO_PREFERENCE_JSONL and chat[-1].role != "assistant":
            raise RowError(column, "the conversation must end with an assistant message to train on")
        return _render(self.format_type, chat, self.mapping)


def _col(column: str | None) -> Text:
    assert column is not None
    return Text.of(Col(column))


def _render(format_type: FormatType, chat: list[Message], mapping: ColumnMapping) -> dict[str, Any]:
    if format_type is FormatType.DPO_PREFERENCE_JSONL:
        return render_preference(chat, _col(mapping.chosen), _col(mapping.rejected))
    return RENDERERS[format_type](chat, mapping.assistant)


def build_plan(options: ConversionOptions, columns: Sequence[str]) -> LinePlan:
    columns = list(columns)
    strategy = options.data_strategy
    templated = options.user_message_template is not None
    # A user template replaces the user column; its columns may be any of the file's.
    mapping = detect_mapping(columns, {"user": "", **options.mapping} if templated else options.mapping)
    check_compatibility(options.format_type, strategy, mapping, options.thinking_instructions, columns,
                        user_template=templated)
    user_template = (parse_template(options.user_message_template, columns, "User message template")
                     if options.user_message_template is not None else None)
    system = SystemMessageGenerator.choose(
        options.system_message, options.system_message_template, mapping.system, options.use_system_column
    )
    system_text = system.text(columns)
    instructions = (
        options.thinking_instructions or DEFAULT_THINKING_INSTRUCTIONS if strategy in TWO_MESSAGE_STRATEGIES else None
    )
    preference = options.format_type is FormatType.DPO_PREFERENCE_JSONL
    roles = ["messages"] if mapping.messages else ["user"] if preference else ["user", "assistant"]
    if user_template is not None and "user" in roles:
        roles.remove("user")
    if preference:
        roles += ["chosen", "rejected"]
    if strategy is not DataStrategy.FINAL_ONLY:
        roles.append("thinking")
    required = tuple((role, getattr(mapping, role)) for role in roles)
    static_shape = None
    if mapping.messages is None:
        user = user_template if user_template is not None else _col(mapping.user)
        if preference:
            chat = [Message("system", system_text), Message("user", user)]
        else:
            reasoning = _col(mapping.thinking) if strategy is not DataStrategy.FINAL_ONLY else None
            chat = build_chat(strategy, system_text, user, _col(mapping.assistant), reasoning, instructions)
        static_shape = _render(options.format_type, chat, mapping)
    return LinePlan(options.format_type, mapping, system, system_text, instructions, required, static_shape,
                    user_template)
