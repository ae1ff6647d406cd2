from __future__ import annotations

import pytest

from dataset_formats.errors import MappingError
from dataset_formats.mapping import ColumnMapping, detect_mapping


@pytest.mark.parametrize(
    ("columns", "user", "assistant"),
    [
        (["prompt", "completion"], "prompt", "completion"),
        (["Question", "ANSWER"], "Question", "ANSWER"),
        (["input", "output"], "input", "output"),
        (["instruction", "response"], "instruction", "response"),
    ],
)
def test_detects_common_pairs_case_insensitively(columns: list[str], user: str, assistant: str) -> None:
    mapping = detect_mapping(columns)
    assert (mapping.user, mapping.assistant) == (user, assistant)


def test_detects_every_role() -> None:
    columns = ["id", "system_message", "question", "chain_of_thought", "answer", "conversations", "chosen", "rejected"]
    assert detect_mapping(columns) == ColumnMapping(
        system="system_message",
        user="question",
        assistant="answer",
        thinking="chain_of_thought",
        messages="conversations",
        chosen="chosen",
        rejected="rejected",
        id="id",
    )
    assert detect_mapping(["Rationale"]).thinking == "Rationale"
    assert detect_mapping(["notes", "misc"]) == ColumnMapping()


def test_override_wins_and_can_unmap() -> None:
    mapping = detect_mapping(["question", "answer", "body", "system"], {"user": "body", "system": ""})
    assert (mapping.user, mapping.assistant, mapping.system) == ("body", "answer", None)
    assert detect_mapping(["Body", "answer"], {"user": "body"}).user == "Body"  # case-insensitive fallback


def test_override_naming_absent_column() -> None:
    with pytest.raises(MappingError) as info:
        detect_mapping(["question", "answer"], {"assistant": "reply"})
    assert "'reply'" in info.value.detail and "['question', 'answer']" in info.value.detail


def test_ambiguous_and_unknown_roles() -> None:
    with pytest.raises(MappingError, match=r"instruction.*input"):
        detect_mapping(["instruction", "input", "output"])
    assert detect_mapping(["instruction", "input", "output"], {"user": "input"}).user == "input"
    with pytest.raises(MappingError, match="Unknown mapping role"):
        detect_mapping(["q"], {"question": "q"})
