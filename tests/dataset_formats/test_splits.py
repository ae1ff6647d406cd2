from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import pyarrow as pa
import pytest

from dataset_formats.convert import ConversionOptions, convert
from dataset_formats.errors import IncompatibleOptions, MappingError
from dataset_formats.splits import FILTERED_OUT, SPLIT_PRESETS, SplitAssigner, SplitSpec, parse_split


def batch(n: int, start: int = 0, label_every: int = 10) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "id": [f"id-{i}" for i in range(start, start + n)],
            "text": [f"row {i}" for i in range(start, start + n)],
            "label": ["rare" if i % label_every == 0 else "common" for i in range(start, start + n)],
            "lang": ["en" if i % 3 else "fr" for i in range(start, start + n)],
        }
    )


def assign(spec: SplitSpec, *batches: pa.RecordBatch) -> list[int]:
    assigner = SplitAssigner(spec)
    return [int(i) for b in batches for i in assigner.assign(b)]


def test_presets_match_kiln() -> None:
    assert {name: spec.ratios for name, spec in SPLIT_PRESETS.items()} == {
        "train_test": {"train": 0.8, "test": 0.2},
        "train_val": {"train": 0.8, "val": 0.2},
        "train_test_val": {"train": 0.6, "test": 0.2, "val": 0.2},
        "train_test_val_80": {"train": 0.8, "test": 0.1, "val": 0.1},
        "all": {"all": 1.0},
    }


def test_parse_split() -> None:
    assert parse_split("train=0.8,validation=0.2").ratios == {"train": 0.8, "validation": 0.2}
    assert parse_split("train_test_val", seed=7) == SplitSpec({"train": 0.6, "test": 0.2, "val": 0.2}, seed=7)
    with pytest.raises(IncompatibleOptions, match="sum to 1"):
        parse_split("train=0.8,test=0.3")
    with pytest.raises(IncompatibleOptions, match="name=ratio"):
        parse_split("train:0.8")
    with pytest.raises(IncompatibleOptions, match="together"):
        SplitSpec({"all": 1.0}, filter_column="lang")


def test_deterministic_and_ratios_within_tolerance() -> None:
    spec = SplitSpec({"train": 0.6, "test": 0.2, "val": 0.2})
    first = assign(spec, batch(20000))
    assert first == assign(spec, batch(20000)) == assign(spec, batch(5000), batch(15000, start=5000))
    counts = collections.Counter(first)
    assert abs(counts[0] / 20000 - 0.6) < 0.02 and abs(counts[1] / 20000 - 0.2) < 0.02
    assert first != assign(SplitSpec(spec.ratios, seed=1), batch(20000))


def test_stable_when_rows_are_appended() -> None:
    for spec in (
        SplitSpec({"train": 0.8, "test": 0.2}),
        SplitSpec({"train": 0.8, "test": 0.2}, stratify_column="label"),
    ):
        before = assign(spec, batch(1000))
        after = assign(spec, batch(1000), batch(500, start=1000))
        assert after[:1000] == before


def test_id_column_makes_assignment_independent_of_content() -> None:
    spec = SplitSpec({"train": 0.5, "test": 0.5}, id_column="id")
    edited = batch(500).set_column(1, "text", pa.array(["edited"] * 500))
    assert assign(spec, batch(500)) == assign(spec, edited)
    assert assign(SplitSpec(spec.ratios), batch(500)) != assign(SplitSpec(spec.ratios), edited)


def test_stratification_keeps_per_label_ratios() -> None:
    data = batch(1000, label_every=20)  # 50 rare rows
    got = assign(SplitSpec({"train": 0.8, "test": 0.2}, stratify_column="label"), data)
    labels = data.column("label").to_pylist()
    for label, total in (("rare", 50), ("common", 950)):
        test_rows = sum(1 for g, lab in zip(got, labels, strict=True) if lab == label and g == 1)
        assert abs(test_rows - 0.2 * total) <= 2, (label, test_rows)


def test_filter_excludes_rows() -> None:
    data = batch(300)
    got = assign(SplitSpec({"all": 1.0}, filter_column="lang", filter_values=("fr",)), data)
    langs = data.column("lang").to_pylist()
    assert [g == FILTERED_OUT for g in got] == [lang != "fr" for lang in langs]


def test_missing_split_columns_fail_up_front() -> None:
    with pytest.raises(MappingError, match="'nope'"):
        SplitAssigner(SplitSpec({"all": 1.0}, stratify_column="nope")).check_columns(["id"])


def test_convert_writes_each_split_once(tmp_path: Path) -> None:
    source = tmp_path / "qa.csv"
    with open(source, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer", "lang"])
        writer.writerows([[f"q{i}", f"a{i}", "en" if i % 4 else "de"] for i in range(400)])
    spec = SplitSpec({"train": 0.6, "test": 0.2, "val": 0.2}, filter_column="lang", filter_values=("en",))
    seen: list[str] = []
    for name in spec.names:
        out = tmp_path / f"{name}.jsonl"
        result = convert(source, out, ConversionOptions(), split=spec, split_name=name)
        lines = [json.loads(line)["messages"][1]["content"] for line in out.read_text().splitlines()]
        assert result.rows_written == len(lines) == result.split_counts[name]
        assert result.rows_filtered == 100 and sum(result.split_counts.values()) == 300
        assert result.to_dict()["split"]["ratios"] == spec.ratios
        seen += lines
    assert sorted(seen) == sorted(f"q{i}" for i in range(400) if i % 4)
    with pytest.raises(IncompatibleOptions, match="not one of"):
        convert(source, tmp_path / "x.jsonl", ConversionOptions(), split=spec, split_name="holdout")
    with pytest.raises(IncompatibleOptions, match="both"):
        convert(source, tmp_path / "x.jsonl", ConversionOptions(), split=spec)
