"""Benchmark: CSV/Parquet -> openai_chat_jsonl (final_only) with dataset_formats.

Usage:  python benchmarks/bench_convert.py --rows 1000000,5000000 [--baseline-rows 50000]
Quick:  python benchmarks/bench_convert.py --rows 100000 --baseline-rows 10000
A/B:    python benchmarks/bench_convert.py --cases csv,parquet --repeat 5 --no-reference --baseline-rows 0

--repeat runs the chosen cases in turn that many times and reports the median times (and the
largest peak RSS), then every run's rows/s in order: other processes sharing the CPU make single
runs unreliable. Generated data is reused when it exists. Module imports happen before the clock
starts, in every case.

Every case runs in its own child process; wall and CPU time (all its threads) are measured inside
the child around the case, and peak RSS comes from os.wait4's rusage of that child alone. CPU time
varies far less than wall time on a busy machine. Data and outputs go to benchmarks/out/
(git-ignored). Cases:
  floor      plain streaming pyarrow CSV read (all columns as strings), nothing else
  csv        dataset_formats.convert CSV -> JSONL (with the Arrow pool serve and convert use)
  parquet    dataset_formats.convert Parquet -> JSONL (same)
  reference  stdlib csv + msgspec, row by row; its output must be byte-identical to ours
  baseline   pandas read_csv + iterrows + json.dumps, the usual way, on a subset
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SYSTEM = "You are a helpful assistant."

_WORDS = (  # noqa: SIM905 - a readable word list
    'the order shipping refund, invoice "premium" plan café naïve 日本語 サポート 🚀 emoji ✓ account '
    'password reset; delivery tracking number, customer\'s request "urgent" Zürich São Paulo of '
    "Ελληνικά русский текст déjà vu — dash … ellipsis to be or not and a is for with on at by "
    "it"
).split(" ")
_RARE_WORDS = ("tab\there", "C:\\Users\\path", "bell\x07char")  # rarer characters still get exercised


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS) if rng.random() > 0.002 else rng.choice(_RARE_WORDS)
        if rng.random() < 0.03:
            word += rng.choice(("\r\n", "\n", "\n\n"))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def generate_csv(path: Path, rows: int) -> None:
    """~1 KB rows: system, question, thinking, answer with commas, quotes, CRLF, newlines, non-ASCII."""
    rng = random.Random(7)
    systems = [_text(rng, 90) for _ in range(5)] + [""]  # empty cells fall back to the default
    pool = [(_text(rng, 150), _text(rng, 420), _text(rng, 330)) for _ in range(997)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(["system", "question", "thinking", "answer"])
        for i in range(rows):
            question, thinking, answer = pool[i % len(pool)]
            writer.writerow([systems[i % len(systems)], f"#{i} {question}", thinking, f"{answer} ({i})"])
    tmp.replace(path)


def generate_parquet(csv_path: Path, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from dataset_formats.readers import iter_batches

    batches = iter_batches(csv_path)
    first = next(batches)
    pending = [first]
    with pq.ParquetWriter(path, first.schema) as writer:
        for batch in batches:  # CSV batches are small: gather them into 65,536-row row groups
            pending.append(batch)
            if sum(b.num_rows for b in pending) >= 65536:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=65536)
                pending = []
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=65536)


# --- cases (run in a child process) ------------------------------------------------------------


def case_floor(source: Path, output: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from dataset_formats.readers import iter_batches

    return sum(batch.num_rows for batch in iter_batches(source))


def case_convert(source: Path, output: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from dataset_formats.convert import ConversionOptions, convert
    from dataset_formats.memory_pool import use_bulk_memory_pool

    use_bulk_memory_pool()
    result = convert(source, output, ConversionOptions())
    assert result.error_count == 0, result.row_errors[:3]
    return result.rows_written


def case_reference(source: Path, output: Path) -> int:
    """Straightforward implementation: stdlib csv + msgspec, one dict per row."""
    import msgspec

    encode = msgspec.json.Encoder().encode
    rows = 0
    with open(source, encoding="utf-8-sig", newline="") as f, open(output, "wb") as out:
        reader = csv.reader(f)
        next(reader)
        for system, question, _thinking, answer in reader:
            line = {
                "messages": [
                    {"role": "system", "content": system or DEFAULT_SYSTEM},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            out.write(encode(line) + b"\n")
            rows += 1
    return rows


def case_baseline(source: Path, output: Path, limit: int) -> int:
    """The usual way: pandas read_csv + iterrows + json.dumps."""
    import pandas as pd

    frame = pd.read_csv(source, nrows=limit, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    with open(output, "w", encoding="utf-8") as out:
        for _, row in frame.iterrows():
            line = {
                "messages": [
                    {"role": "system", "content": row["system"] or DEFAULT_SYSTEM},
                    {"role": "user", "content": row["question"]},
                    {"role": "assistant", "content": row["answer"]},
                ]
            }
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    return len(frame)


CASES = {"floor": case_floor, "csv": case_convert, "parquet": case_convert, "reference": case_reference}
CONVERT_MODULES = ("dataset_formats.convert", "dataset_formats.memory_pool")
CASE_MODULES = {"floor": ("dataset_formats.readers",), "csv": CONVERT_MODULES, "parquet": CONVERT_MODULES,
                "reference": ("msgspec",), "baseline": ("pandas",)}


def child(case: str, source: Path, output: Path, limit: int) -> None:
    if case == "generate":
        if not source.exists():
            generate_csv(source, limit)
        generate_parquet(source, output)
        return
    # A process imports once (the service before its first request); the clock measures the case,
    # not the 0.25-0.65 s it takes to import pyarrow, NumPy and the rest (pandas for the baseline).
    sys.path.insert(0, str(ROOT))
    import importlib

    for module in CASE_MODULES[case]:
        importlib.import_module(module)
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = case_baseline(source, output, limit) if case == "baseline" else CASES[case](source, output)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu_start}))


# --- parent ------------------------------------------------------------------------------------


def run_case(case: str, source: Path, output: Path, limit: int = 0) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--case", case, "--source", str(source), "--output", str(output)]
    cmd += ["--limit", str(limit)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"case {case} failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def report(name: str, result: dict[str, float], input_bytes: float) -> None:
    rows, seconds = result["rows"], result["seconds"]
    fraction = rows / result.get("total_rows", rows)
    mb_s = input_bytes * fraction / seconds / 1e6
    print(
        f"  {name:<34} {rows:>9,.0f} rows {seconds:8.2f} s {rows / seconds:>11,.0f} rows/s "
        f"{mb_s:8.1f} MB/s in  CPU {result['cpu']:5.2f} s  peak RSS {result['rss_mb']:7.1f} MB"
    )


def run_repeated(
    cases: list[tuple[str, Path, Path]], repeat: int
) -> tuple[list[dict[str, float]], list[list[dict[str, float]]]]:
    """Each case ``repeat`` times, interleaved; the median time and the largest peak RSS of each,
    and every run."""
    runs: list[list[dict[str, float]]] = [[] for _ in cases]
    for _ in range(repeat):
        for runs_of_case, (case, source, output) in zip(runs, cases, strict=True):
            runs_of_case.append(run_case(case, source, output))
    medians = [
        {
            "rows": r[0]["rows"],
            "seconds": statistics.median(run["seconds"] for run in r),
            "cpu": statistics.median(run["cpu"] for run in r),
            "rss_mb": max(run["rss_mb"] for run in r),
        }
        for r in runs
    ]
    return medians, runs


def bench(rows: int, baseline_rows: int, check_reference: bool, cases: list[str], repeat: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / f"bench_{rows}.csv"
    parquet = OUT / f"bench_{rows}.parquet"
    if not (source.exists() and parquet.exists()):
        print(f"generating {source.name} and {parquet.name} ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                "generate",
                "--source",
                str(source),
                "--output",
                str(parquet),
                "--limit",
                str(rows),
            ],
            check=True,
        )
    size = source.stat().st_size
    print(
        f"\n{rows:,} rows, CSV {size / 1e6:,.0f} MB ({size / rows:,.0f} B/row), Parquet "
        f"{parquet.stat().st_size / 1e6:,.0f} MB" + (f"; median of {repeat} runs" if repeat > 1 else "")
    )
    ours_csv = OUT / f"ours_csv_{rows}.jsonl"
    ours_parquet = OUT / f"ours_parquet_{rows}.jsonl"
    plan = {
        "floor": ("floor", source, OUT / "unused", "floor: pyarrow CSV streaming read", size),
        "csv": ("csv", source, ours_csv, "dataset_formats CSV -> JSONL", size),
        "parquet": ("parquet", parquet, ours_parquet, "dataset_formats Parquet -> JSONL", parquet.stat().st_size),
    }
    chosen = [plan[case] for case in cases]
    medians, runs = run_repeated([(c, src, out) for c, src, out, _, _ in chosen], repeat)
    results = dict(zip(cases, medians, strict=True))
    for case, (_, _, _, label, input_bytes) in zip(cases, chosen, strict=True):
        report(label, results[case], input_bytes)
    if repeat > 1:
        for case, runs_of_case in zip(cases, runs, strict=True):
            rates = ", ".join(f"{run['rows'] / run['seconds']:,.0f} ({run['cpu']:.2f} s CPU)" for run in runs_of_case)
            print(f"  {case} runs (rows/s, in order): {rates}")
    if "csv" in results:
        output_mb = ours_csv.stat().st_size / 1e6
        ratio = (f"; CSV convert / floor time: {results['csv']['seconds'] / results['floor']['seconds']:.2f}x"
                 if "floor" in results else "")
        print(f"  output {output_mb:,.0f} MB{ratio}")
    if "csv" in results and "parquet" in results:
        assert filecmp.cmp(ours_csv, ours_parquet, shallow=False), "CSV and Parquet outputs differ"
    ours = ours_csv if "csv" in results else ours_parquet if "parquet" in results else None
    if check_reference and ours is not None:
        reference_out = OUT / f"reference_{rows}.jsonl"
        reference = run_case("reference", source, reference_out)
        report("reference: stdlib csv + msgspec", reference, size)
        identical = filecmp.cmp(ours, reference_out, shallow=False)
        speed_up = reference["seconds"] / results["csv" if "csv" in results else "parquet"]["seconds"]
        print(f"  byte-identical to reference: {identical}; speed-up vs reference {speed_up:.1f}x")
        assert identical, "output differs from the reference implementation"
        reference_out.unlink()
    if baseline_rows and "csv" in results:
        baseline = run_case("baseline", source, OUT / "baseline.jsonl", min(baseline_rows, rows))
        baseline["total_rows"] = rows
        report("baseline: pandas iterrows+json", baseline, size)
        ours_rate = results["csv"]["rows"] / results["csv"]["seconds"]
        print(f"  CSV convert vs baseline: {ours_rate / (baseline['rows'] / baseline['seconds']):.1f}x faster")
    ours_csv.unlink(missing_ok=True)
    ours_parquet.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1000000", help="comma-separated row counts, e.g. 1000000,5000000")
    parser.add_argument("--baseline-rows", type=int, default=50000, help="subset size for pandas (0: skip)")
    parser.add_argument("--no-reference", action="store_true", help="skip the byte-identical reference check")
    parser.add_argument("--cases", default="floor,csv,parquet", help="comma-separated subset of floor,csv,parquet")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case, interleaved; medians are reported")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(args.case, args.source, args.output, args.limit)
        return
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    cases = args.cases.split(",")
    if unknown := set(cases) - {"floor", "csv", "parquet"}:
        parser.error(f"unknown cases: {sorted(unknown)}")
    for rows in (int(r) for r in args.rows.split(",")):
        bench(rows, args.baseline_rows, not args.no_reference, cases, max(args.repeat, 1))


if __name__ == "__main__":
    main()
