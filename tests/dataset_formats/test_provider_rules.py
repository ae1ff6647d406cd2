from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dataset_formats.provider_rules import check_together_jsonl


def write(tmp_path: Path, records: list[Any], name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def m(role: str, content: str = "x") -> dict[str, str]:
    return {"role": role, "content": content}


def test_valid_formats_pass(tmp_path: Path) -> None:
    assert check_together_jsonl(write(tmp_path, [{"messages": [m("system"), m("user"), m("assistant")]}])) == []
    assert check_together_jsonl(write(tmp_path, [{"prompt": "p", "completion": "c"}])) == []
    assert check_together_jsonl(write(tmp_path, [{"text": "t"}])) == []
    preference = {
        "input": {"messages": [m("user")]},
        "preferred_output": [m("assistant")],
        "non_preferred_output": [m("assistant")],
    }
    assert check_together_jsonl(write(tmp_path, [preference])) == []


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"messages": [m("system"), m("system"), m("user"), m("assistant")]}, "roles must alternate"),
        ({"messages": [m("system"), m("user")]}, "no assistant message"),
        ({"messages": [m("user"), m("robot")]}, "allowed roles"),
        ({"messages": [m("user"), {"role": "assistant", "content": "x", "weight": 2}]}, "weight"),
        ({"messages": [m("user"), {"role": "assistant", "content": None}]}, "content must be"),
        ({"messages": [m("user"), m("assistant")], "extra": 1}, 'Found extra column "extra"'),
        ({"text": "t", "prompt": "p", "completion": "c"}, "multiple dataset formats"),
        ({"question": "q"}, "Could not detect a format"),
        (
            {
                "input": {"messages": [m("user"), m("assistant")]},
                "preferred_output": [m("assistant")],
                "non_preferred_output": [m("assistant")],
            },
            "must not be an assistant",
        ),
        (
            {
                "input": {"messages": [m("user")]},
                "preferred_output": [m("assistant"), m("assistant")],
                "non_preferred_output": [m("assistant")],
            },
            "exactly one assistant",
        ),
    ],
)
def test_problems_are_reported(tmp_path: Path, record: dict[str, Any], problem: str) -> None:
    problems = check_together_jsonl(write(tmp_path, [record]))
    assert any(problem in p and p.startswith("line 1:") for p in problems), problems


def test_file_level_problems(tmp_path: Path) -> None:
    assert "not a regular file" in check_together_jsonl(tmp_path / "missing.jsonl")[0]
    (tmp_path / "empty.jsonl").write_text("")
    assert "size" in check_together_jsonl(tmp_path / "empty.jsonl")[0]
    assert ".jsonl" in check_together_jsonl(write(tmp_path, [{"text": "t"}], "t.json"))[0]
    mixed = write(tmp_path, [{"text": "t"}, [1], {"prompt": "p", "completion": "c"}])
    problems = check_together_jsonl(mixed)
    assert any(p.startswith("line 2: Each line must be a JSON object") for p in problems)
    assert any(p.startswith("line 3: format instruction differs") for p in problems)
