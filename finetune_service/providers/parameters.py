"""Typed tunable-parameter schemas and the one validator every provider uses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from finetune_service.errors import ValidationFailed

ParamType = Literal["integer", "number", "boolean", "string", "enum"]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: ParamType
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[Any, ...] | None = None
    required: bool = False
    # Some provider values are "a number or one of these words" (Together's batch_size "max").
    also_accepts: tuple[str, ...] = ()

    def range_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        text = f"a{'n' if self.type == 'integer' else ''} {self.type}"
        if parts:
            text += " " + " and ".join(parts)
        if self.also_accepts:
            text += " or " + ", ".join(repr(a) for a in self.also_accepts)
        return text


def _check_one(spec: ParamSpec, value: Any) -> tuple[Any, str | None]:
    """Return (normalized value, error message or None)."""
    if isinstance(value, str) and value in spec.also_accepts:
        return value, None
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value, None
        return value, f"must be true or false, got {value!r}"
    if spec.type in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, f"must be {spec.range_text()}, got {value!r}"
        if spec.type == "integer":
            if isinstance(value, float) and not value.is_integer():
                return value, f"must be a whole number, got {value!r}"
            value = int(value)
        elif not math.isfinite(value):
            return value, f"must be a finite number, got {value!r}"
        too_low = spec.minimum is not None and (
            value <= spec.minimum if spec.exclusive_minimum else value < spec.minimum
        )
        too_high = spec.maximum is not None and value > spec.maximum
        if too_low or too_high:
            return value, f"must be {spec.range_text()}, got {value!r}"
        return value, None
    if spec.type == "enum":
        if spec.choices is not None and value not in spec.choices:
            return value, f"must be {spec.range_text()}, got {value!r}"
        return value, None
    if not isinstance(value, str):
        return value, f"must be a string, got {type(value).__name__}"
    if spec.choices is not None and value not in spec.choices:
        return value, f"must be {spec.range_text()}, got {value!r}"
    return value, None


def validate_parameters(
    provider: str, specs: Sequence[ParamSpec], values: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Check `values` against `specs`; return them with defaults filled in.

    Every problem is collected so the client fixes them all in one round trip.
    """
    by_name = {spec.name: spec for spec in specs}
    values = dict(values or {})
    errors: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            errors.append({
                "field": f"parameters.{name}",
                "message": f"unknown parameter for {provider}; known: {', '.join(sorted(by_name))}",
            })
            continue
        if value is None and not spec.required:
            continue
        normalized, problem = _check_one(spec, value)
        if problem:
            errors.append({"field": f"parameters.{name}", "message": problem})
        else:
            result[name] = normalized
    for spec in specs:
        if spec.name not in result and spec.name not in values:
            if spec.required:
                errors.append({"field": f"parameters.{spec.name}", "message": "is required"})
            elif spec.default is not None:
                result[spec.name] = spec.default
    if errors:
        summary = "; ".join(f"{e['field']} {e['message']}" for e in errors)
        raise ValidationFailed(f"Invalid {provider} parameters: {summary}", errors=errors,
                               param=errors[0]["field"])
    return result
