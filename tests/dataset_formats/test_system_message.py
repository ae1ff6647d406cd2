from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from dataset_formats.convert import ConversionOptions, convert
from dataset_formats.errors import IncompatibleOptions, MappingError
from dataset_formats.system_message import DEFAULT_SYSTEM_MESSAGE


def systems(path: Path) -> list[str]:
    return [json.loads(line)["messages"][0]["content"] for line in path.read_text().splitlines()]


def test_default_column_explicit_and_template(sample: Callable[[str], Path], tmp_path: Path) -> None:
    src, out = sample("support_qa.csv"), tmp_path / "o.jsonl"
    by_column = convert(src, out, ConversionOptions())
    assert (by_column.system_message, by_column.system_message_column) == (None, "system")
    column_values = systems(out)
    assert column_values[0].startswith("You are Acme's") and column_values[3] == DEFAULT_SYSTEM_MESSAGE
    assert column_values[4] == "Vous êtes l'assistant du Café Lumière."

    ignored = convert(src, out, ConversionOptions(use_system_column=False))
    assert ignored.system_message == DEFAULT_SYSTEM_MESSAGE and set(systems(out)) == {DEFAULT_SYSTEM_MESSAGE}

    explicit = convert(src, out, ConversionOptions(system_message="Be brief."))
    assert explicit.system_message == "Be brief." and set(systems(out)) == {"Be brief."}

    template = "You answer for {product} ({rating}/5). {{Braces}} stay."
    templated = convert(src, out, ConversionOptions(system_message_template=template))
    assert templated.system_message_template == template and templated.system_message is None
    assert systems(out)[0] == "You answer for Acme Store (5/5). {Braces} stay."
    assert systems(out)[4] == "You answer for Café Lumière (5/5). {Braces} stay."


def test_template_with_missing_column(sample: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    with pytest.raises(MappingError) as info:
        convert(sample("support_qa.csv"), out, ConversionOptions(system_message_template="For {brand}."))
    assert "'brand'" in info.value.detail and "product" in info.value.detail
    assert not out.exists()


def test_message_and_template_together_are_incompatible(sample: Callable[[str], Path], tmp_path: Path) -> None:
    options = ConversionOptions(system_message="a", system_message_template="b {product}")
    with pytest.raises(IncompatibleOptions, match="not both"):
        convert(sample("support_qa.csv"), tmp_path / "o.jsonl", options)
    with pytest.raises(IncompatibleOptions, match="format spec"):
        convert(
            sample("support_qa.csv"), tmp_path / "o.jsonl", ConversionOptions(system_message_template="{rating:>3}")
        )
