"""Data strategies: how one example (input, reasoning, answer) becomes a chat, as Kiln AI does it."""

from __future__ import annotations

from dataclasses import dataclass

from dataset_formats.expressions import Text
from dataset_formats.format_types import DataStrategy

DEFAULT_THINKING_INSTRUCTIONS = "Think step by step, explaining your reasoning."
COT_FINAL_ANSWER_PROMPT = "Considering the above, return a final result."


@dataclass(frozen=True)
class Message:
    role: str
    content: Text


def build_chat(
    strategy: DataStrategy,
    system: Text,
    user: Text,
    answer: Text,
    reasoning: Text | None = None,
    thinking_instructions: str | None = None,
) -> list[Message]:
    """Messages for one example; ``reasoning`` is required by every strategy but ``final_only``."""
    if strategy is DataStrategy.FINAL_ONLY:
        return [Message("system", system), Message("user", user), Message("assistant", answer)]
    if reasoning is None:
        raise ValueError(f"{strategy} needs a reasoning text")
    if strategy is DataStrategy.FINAL_AND_INTERMEDIATE_R1_COMPATIBLE:
        return [
            Message("system", system),
            Message("user", user),
            Message("assistant", Text.of("<think>\n", reasoning, "\n</think>\n\n", answer)),
        ]
    instructions = thinking_instructions or DEFAULT_THINKING_INSTRUCTIONS
    if strategy is DataStrategy.TWO_MESSAGE_COT:
        opening = [
            Message("system", system),
            Message("user", Text.of("The input is:\n<user_input>\n", user, "\n</user_input>\n\n", instructions)),
        ]
    else:
        # Legacy layout: the instructions follow the user turn as a second system message, so no two
        # consecutive messages share a role (Together rejects that).
        opening = [Message("system", system), Message("user", user), Message("system", Text.of(instructions))]
    return [
        *opening,
        Message("assistant", reasoning),
        Message("user", Text.of(COT_FINAL_ANSWER_PROMPT)),
        Message("assistant", answer),
    ]
