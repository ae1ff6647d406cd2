"""`finetune-service convert`: the data team's offline conversion, same library as the service."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dataset_formats.convert import ConversionOptions, convert
from dataset_formats.format_types import DataStrategy, FormatType
from dataset_formats.splits import parse_split
from dataset_formats.validation import validate


@dataclass(frozen=True)
class ConvertArgs:
    input: Path
    output: Path
    format_type: str
    strategy: str
    system: str | None
    system_template: str | None
    thinking_instructions: str | None
    split: str | None
    seed: int
    report: Path | None
    mapping: dict[str, str]


class Progress:
    """A one-line progress display on a terminal; silent when stderr is not one."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._start = time.monotonic()
        self._last = 0.0
        self._live = stream.isatty()

    def __call__(self, rows: int) -> None:
        now = time.monotonic()
        if self._live and now - self._last >= 0.2:
            self._last = now
            rate = rows / max(now - self._start, 1e-9)
            self._stream.write(f"\r{self._label}: {rows:,} rows ({rate:,.0f} rows/s)")
            self._stream.flush()

    def done(self) -> None:
        if self._live:
            self._stream.write("\n")


def output_for(base: Path, part: str | None) -> Path:
    if part is None:
        return base
    suffix = base.suffix or ".jsonl"
    return base.with_name(f"{base.stem}.{part}{suffix}")


def run_convert(args: ConvertArgs, stderr: TextIO = sys.stderr) -> dict[str, Any]:
    """Convert the input (each split part into its own file) and return the summary."""
    options = ConversionOptions(
        format_type=FormatType(args.format_type), data_strategy=DataStrategy(args.strategy),
        system_message=args.system, system_message_template=args.system_template,
        thinking_instructions=args.thinking_instructions, mapping=args.mapping,
    )
    spec = parse_split(args.split, seed=args.seed) if args.split else None
    parts: list[str | None] = list(spec.names) if spec else [None]
    started = time.monotonic()
    outputs: dict[str, Any] = {}
    summary: dict[str, Any] = {"input": str(args.input), "outputs": outputs}
    for part in parts:
        target = output_for(args.output, part)
        progress = Progress(stderr, f"{part or 'all'} -> {target.name}")
        result = convert(args.input, target, options, spec, part, progress)
        progress.done()
        outputs[str(target)] = {
            "split": part, "rows_written": result.rows_written, "rows_read": result.rows_read,
            "error_count": result.error_count, "row_errors": [e.to_dict() for e in result.row_errors[:10]],
            "system_message": result.system_message or result.system_message_template,
            "thinking_instructions": result.thinking_instructions,
        }
    summary["seconds"] = round(time.monotonic() - started, 3)
    if args.report:
        report = validate(args.input)
        args.report.write_text(json.dumps({"validation": report.to_dict(), "conversion": summary}, indent=2,
                                          ensure_ascii=False))
    return summary
