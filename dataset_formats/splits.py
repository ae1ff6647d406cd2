"""Deterministic train/test/validation assignment that streams and survives appended rows.

Each row's split depends only on the seed and the row itself (its id, or its content), so
appending rows never moves earlier ones. With a stratify column, the k-th row of each label is
placed by a golden-ratio sequence started at a per-label hash: per-label ratios then hold to
within a row or two even for rare labels, and depend only on earlier rows of that label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dataset_formats.errors import IncompatibleOptions, MappingError
from dataset_formats.row_hash import content_key, unit_hash
from dataset_formats.rowwise import iter_rows

_GOLDEN = (math.sqrt(5) - 1) / 2
FILTERED_OUT = -1


@dataclass(frozen=True)
class SplitSpec:
    ratios: dict[str, float]
    seed: int = 42
    id_column: str | None = None
    stratify_column: str | None = None
    filter_column: str | None = None
    filter_values: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.ratios:
            raise IncompatibleOptions("A split needs at least one named part, e.g. train=0.8,test=0.2")
        bad = {name: ratio for name, ratio in self.ratios.items() if not name or not 0 <= ratio <= 1}
        if bad:
            raise IncompatibleOptions(f"Split ratios must be named and between 0 and 1: {bad}")
        total = sum(self.ratios.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise IncompatibleOptions(f"Split ratios must sum to 1, they sum to {total:g}: {self.ratios}")
        if (self.filter_column is None) != (self.filter_values is None):
            raise IncompatibleOptions("filter_column and filter_values must be given together")

    @property
    def names(self) -> list[str]:
        return list(self.ratios)

    def to_dict(self) -> dict[str, object]:
        return {
            "ratios": dict(self.ratios),
            "seed": self.seed,
            "id_column": self.id_column,
            "stratify_column": self.stratify_column,
            "filter_column": self.filter_column,
            "filter_values": list(self.filter_values) if self.filter_values is not None else None,
        }


SPLIT_PRESETS: dict[str, SplitSpec] = {
    "train_test": SplitSpec({"train": 0.8, "test": 0.2}),
    "train_val": SplitSpec({"train": 0.8, "val": 0.2}),
    "train_test_val": SplitSpec({"train": 0.6, "test": 0.2, "val": 0.2}),
    "train_test_val_80": SplitSpec({"train": 0.8, "test": 0.1, "val": 0.1}),
    "all": SplitSpec({"all": 1.0}),
}


def parse_split(text: str, seed: int = 42) -> SplitSpec:
    """A preset name (``train_test``) or ``name=ratio`` pairs (``train=0.8,validation=0.2``)."""
    text = text.strip()
    if text in SPLIT_PRESETS:
        preset = SPLIT_PRESETS[text]
        return SplitSpec(dict(preset.ratios), seed=seed)
    ratios: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = math.nan
        if not sep or math.isnan(ratio) or name.strip() in ratios:
            raise IncompatibleOptions(
                f"Cannot read split {text!r}: use a preset ({', '.join(SPLIT_PRESETS)}) or unique "
                f"name=ratio pairs such as train=0.8,validation=0.2"
            )
        ratios[name.strip()] = ratio
    return SplitSpec(ratios, seed=seed)


@dataclass
class SplitAssigner:
    """Assigns split indices (positions in ``spec.names``) batch by batch, in file order."""

    spec: SplitSpec
    _label_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._bounds = np.cumsum(list(self.spec.ratios.values()))
        self._bounds[-1] = 1.0  # float rounding must not leave a sliver of rows unassigned

    def check_columns(self, columns: Sequence[str]) -> None:
        for role in ("id_column", "stratify_column", "filter_column"):
            column = getattr(self.spec, role)
            if column is not None and column not in columns:
                raise MappingError(f"Split {role} {column!r} is not in the file; available columns: {list(columns)}")

    def assign(self, batch: pa.RecordBatch) -> np.ndarray:
        spec = self.spec
        allowed = set(spec.filter_values or ())
        positions = np.empty(batch.num_rows, dtype=np.float64)
        keep = np.ones(batch.num_rows, dtype=bool)
        needs_content = spec.stratify_column is None and spec.id_column is None
        named = [c for c in (spec.id_column, spec.stratify_column, spec.filter_column) if c is not None]
        for index, row in enumerate(iter_rows(batch if needs_content else batch.select(named))):
            if spec.filter_column is not None and row.get(spec.filter_column) not in allowed:
                keep[index] = False
                continue
            if spec.stratify_column is not None:
                label = row.get(spec.stratify_column) or ""
                count = self._label_counts.get(label, 0)
                self._label_counts[label] = count + 1
                positions[index] = (unit_hash("label\x1f" + label, spec.seed) + count * _GOLDEN) % 1.0
            else:
                # An empty id is just another id value: such rows all land in one split.
                key = (row.get(spec.id_column) or "") if spec.id_column else content_key(row)
                positions[index] = unit_hash(key, spec.seed)
        indices = np.searchsorted(self._bounds, positions, side="right").astype(np.int64)
        indices = np.minimum(indices, len(self._bounds) - 1)
        indices[~keep] = FILTERED_OUT
        return indices
