"""Which source column plays which role (system, user, assistant, ...)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from dataset_formats.errors import MappingError


@dataclass(frozen=True)
class ColumnMapping:
    system: str | None = None
    user: str | None = None
    assistant: str | None = None
    thinking: str | None = None
    messages: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ROLES: tuple[str, ...] = tuple(f.name for f in fields(ColumnMapping))

# Candidate names per role, best first. Lists are disjoint so one column never fits two roles.
_CANDIDATES: dict[str, tuple[str, ...]] = {
    "system": ("system", "system_message", "system_prompt"),
    "user": ("prompt", "question", "input", "instruction", "query", "user"),
    "assistant": ("completion", "answer", "output", "response", "assistant"),
    "thinking": ("reasoning", "thinking", "chain_of_thought", "rationale", "cot"),
    "messages": ("messages", "conversation", "conversations"),
    "chosen": ("chosen",),
    "rejected": ("rejected",),
    "id": ("id",),
}


def _resolve(column: str, columns: Sequence[str], role: str) -> str:
    if column in columns:
        return column
    folded = [c for c in columns if c.casefold() == column.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise MappingError(f"Column {column!r} given for {role!r} is not in the file; available columns: {list(columns)}")


def detect_mapping(columns: Sequence[str], override: Mapping[str, str] | None = None) -> ColumnMapping:
    """Guess the role of each column from common names (case-insensitive); ``override`` wins.

    An override value of ``""`` unmaps a role (e.g. ignore a ``system`` column). Several different
    columns fitting one role (``instruction`` and ``input``) is ambiguous unless overridden.
    """
    override = dict(override or {})
    unknown = sorted(set(override) - set(ROLES))
    if unknown:
        raise MappingError(f"Unknown mapping role(s) {unknown}; roles are {list(ROLES)}")
    chosen = {role: (_resolve(col, columns, role) if col else None) for role, col in override.items()}
    taken = {col for col in chosen.values() if col}
    by_folded: dict[str, list[str]] = {}
    for col in columns:
        by_folded.setdefault(col.strip().casefold(), []).append(col)
    for role, names in _CANDIDATES.items():
        if role in chosen:
            continue
        found = [c for name in names for c in by_folded.get(name, ()) if c not in taken]
        if len(found) > 1:
            raise MappingError(
                f"Columns {found} could all be the {role!r} column; choose one with a mapping override "
                f"such as {role}={found[0]!r}"
            )
        chosen[role] = found[0] if found else None
    return replace(ColumnMapping(), **chosen)
