"""Up-front refusal of option combinations that cannot produce valid lines."""

from __future__ import annotations

from dataset_formats.errors import IncompatibleOptions, MappingError
from dataset_formats.format_types import THINKING_STRATEGIES, TWO_MESSAGE_STRATEGIES, DataStrategy, FormatType
from dataset_formats.mapping import ColumnMapping

_JSON_ANSWER_FORMATS = frozenset(
    {
        FormatType.OPENAI_CHAT_JSON_SCHEMA_JSONL,
        FormatType.OPENAI_CHAT_TOOLCALL_JSONL,
        FormatType.HUGGINGFACE_CHAT_TEMPLATE_TOOLCALL_JSONL,
    }
)
_FLAT_FORMATS = frozenset({FormatType.TOGETHER_INSTRUCTION_JSONL, FormatType.TEXT_JSONL})


def check_compatibility(
    format_type: FormatType,
    strategy: DataStrategy,
    mapping: ColumnMapping,
    thinking_instructions: str | None,
    columns: list[str],
    *,
    user_template: bool = False,
) -> None:
    if thinking_instructions is not None and strategy not in TWO_MESSAGE_STRATEGIES:
        raise IncompatibleOptions(
            f"thinking_instructions are only used by two_message_cot and final_and_intermediate; "
            f"{strategy} has no turn to put them in (R1-style models think without instructions)"
        )
    if strategy is DataStrategy.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE and format_type in _JSON_ANSWER_FORMATS:
        raise IncompatibleOptions(
            f"{format_type} needs the answer to be a JSON object, but the R1 layout puts a <think> block in "
            f"front of it; use final_only, two_message_cot or final_and_intermediate"
        )
    if strategy in TWO_MESSAGE_STRATEGIES and format_type in _FLAT_FORMATS:
        raise IncompatibleOptions(
            f"{format_type} holds a single prompt and answer, not the extra reasoning turns of {strategy}; "
            f"use final_only or final_and_intermediate_r1_compatible"
        )
    if strategy is DataStrategy.FINAL_AND_INTERMEDIATE and format_type is FormatType.VERTEX_GEMINI:
        raise IncompatibleOptions(
            "vertex_gemini has one systemInstruction and no place for the second system message of "
            "final_and_intermediate; use two_message_cot"
        )
    if format_type is FormatType.DPO_PREFERENCE_JSONL:
        _check_preference(strategy, mapping, columns, user_template)
    elif mapping.messages is None and ((mapping.user is None and not user_template) or mapping.assistant is None):
        missing = [role for role in ("user", "assistant")
                   if getattr(mapping, role) is None and not (role == "user" and user_template)]
        raise MappingError(
            f"No {' or '.join(missing)} column found in {columns}; name it with a mapping override "
            f"(e.g. user=question, assistant=answer) or provide a messages column"
        )
    if strategy in THINKING_STRATEGIES:
        if mapping.messages is not None:
            raise IncompatibleOptions(
                f"{strategy} builds the conversation from user, reasoning and answer columns; a messages "
                f"column is passed through as is, so use final_only"
            )
        if mapping.thinking is None:
            raise MappingError(
                f"{strategy} needs a reasoning column, none found in {columns}; name it with a mapping "
                f"override (e.g. thinking=chain_of_thought)"
            )


def _check_preference(strategy: DataStrategy, mapping: ColumnMapping, columns: list[str], user_template: bool) -> None:
    if strategy is not DataStrategy.FINAL_ONLY:
        raise IncompatibleOptions(
            f"dpo_preference_jsonl pairs a preferred and a rejected answer and carries no reasoning; "
            f"use final_only, not {strategy}"
        )
    if mapping.chosen is None or mapping.rejected is None:
        raise IncompatibleOptions(
            f"dpo_preference_jsonl needs chosen and rejected columns, found neither pair in {columns}; "
            f"name them with a mapping override (chosen=..., rejected=...)"
        )
    if mapping.user is None and mapping.messages is None and not user_template:
        raise MappingError(f"dpo_preference_jsonl needs a prompt (user) or messages column; columns: {columns}")
