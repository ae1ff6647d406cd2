"""Benchmark: streamed chat completions straight from an upstream vs. through the service.

Usage:  python benchmarks/bench_streaming.py [--n 200] [--concurrency 16] [--warmup 20] [--rounds 5]

Three processes on loopback: the OpenAI emulator (tests/emulators/openai.py, the upstream; it
streams without artificial delay, so every millisecond measured is transport and processing),
the service (started by the function behind `finetune-service serve`; its OpenAI provider points
at the emulator), and this client (the real `openai` SDK, one AsyncOpenAI per path).

* direct:  SDK -> emulator                    model `gpt-4o-mini`
* through: SDK -> service -> SDK -> emulator  model `openai/gpt-4o-mini`
* sandbox: SDK -> service (offline Sandbox)   model `sandbox/sandbox-chat-small` (for reference)

Latency: `--n` sequential streamed completions per path, direct and through interleaved (the
order flips every pair so drift hits both). TTFT = request sent -> first content delta; total =
request sent -> end of stream. Added latency = through percentile - direct percentile.
Throughput: `--n` completions at `--concurrency`, completions per second, best of `--rounds` rounds
(the paths take turns, so a slow spell on this shared machine hits both);
with the service's CPU time per completion (from /proc, Linux) to show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UPSTREAM_KEY = "test-openai-key"
SERVICE_KEY = "bench-key"
QUESTION = "Where is my order #1042 and when will the parcel arrive at my door?"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_emulator(port: int) -> None:
    import uvicorn

    from tests.emulators.openai import create_openai_emulator

    uvicorn.run(create_openai_emulator(api_key=UPSTREAM_KEY).app, host="127.0.0.1", port=port, log_level="warning")


def run_service(port: int, upstream: str, data_dir: str) -> None:
    from finetune_service.cli import serve
    from finetune_service.settings import ProviderCredentials, Settings

    settings = Settings(
        data_dir=Path(data_dir), api_keys={SERVICE_KEY: "bench"}, sync_interval_seconds=0,
        # The limiter stays in the path (its cost is part of every request) but never throttles.
        rate_limit_per_second=1e9, rate_limit_burst=10**9,
        openai=ProviderCredentials(api_key=UPSTREAM_KEY, base_url=f"{upstream}/v1"),
    )
    # Through the command's own function, so uvicorn gets exactly the app and options `serve` gives it.
    serve(settings, "127.0.0.1", port)


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


async def streamed(client: Any, model: str) -> tuple[float, float, str]:
    """(ttft seconds, total seconds, answer text) of one streamed completion."""
    started = time.perf_counter()
    stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    first: float | None = None
    parts: list[str] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            parts.append(chunk.choices[0].delta.content)
    ended = time.perf_counter()
    assert first is not None, f"{model}: no content"
    return first - started, ended - started, "".join(parts)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: int) -> float:
    if q == 50:
        return statistics.median(values)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def throughput(client: Any, model: str, n: int, concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await streamed(client, model)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


async def bench(args: argparse.Namespace, upstream: str, service: str, service_pid: int) -> None:
    from openai import AsyncOpenAI

    direct = AsyncOpenAI(base_url=f"{upstream}/v1", api_key=UPSTREAM_KEY, max_retries=0)
    through = AsyncOpenAI(base_url=f"{service}/v1", api_key=SERVICE_KEY, max_retries=0)
    paths: dict[str, tuple[Any, str]] = {
        "direct": (direct, "gpt-4o-mini"), "through": (through, "openai/gpt-4o-mini"),
        "sandbox": (through, "sandbox/sandbox-chat-small"),
    }
    try:
        answers = {name: (await streamed(client, model))[2] for name, (client, model) in paths.items()}
        assert answers["direct"] == answers["through"], "the service changed the answer"
        chunks = len((await direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                      ).choices[0].message.content.split(" ")) // 2 + 3  # type: ignore[union-attr]
        for _ in range(args.warmup):
            for client, model in paths.values():
                await streamed(client, model)
        ttft: dict[str, list[float]] = {name: [] for name in paths}
        total: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(args.n):
            order = list(paths) if i % 2 == 0 else list(reversed(paths))
            for name in order:
                client, model = paths[name]
                first, whole, _ = await streamed(client, model)
                ttft[name].append(first * 1000)
                total[name].append(whole * 1000)
        rates: dict[str, list[float]] = {name: [] for name in paths}
        service_cpu: dict[str, float] = dict.fromkeys(paths, 0.0)
        for _ in range(args.rounds):
            for name in rates:
                client, model = paths[name]
                before = cpu_seconds(service_pid)
                rates[name].append(await throughput(client, model, args.n, args.concurrency))
                service_cpu[name] += (cpu_seconds(service_pid) - before) * 1000 / (args.rounds * args.n)
    finally:
        await direct.close()
        await through.close()

    print(f"streamed chat completions, loopback, Python {sys.version.split()[0]}; answer ~{chunks} SSE chunks")
    print(f"latency: {args.n} sequential completions per path (after {args.warmup} warm-up rounds)\n")
    print(f"{'':14}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    rows: list[tuple[str, dict[str, list[float]], str]] = [("TTFT", ttft, "ttft"), ("total", total, "total")]
    for label, data, _ in rows:
        for name in paths:
            values = data[name]
            print(f"{label + ' ' + name:14}{pct(values, 50):10.3f}{pct(values, 99):10.3f}"
                  f"{statistics.fmean(values):10.3f}")
        added50 = pct(data["through"], 50) - pct(data["direct"], 50)
        added99 = pct(data["through"], 99) - pct(data["direct"], 99)
        print(f"{label + ' added':14}{added50:10.3f}{added99:10.3f}"
              f"{statistics.fmean(data['through']) - statistics.fmean(data['direct']):10.3f}\n")
    best: Callable[[str], float] = lambda name: max(rates[name])  # noqa: E731
    ratio = best("through") / best("direct")
    sequential_ratio = statistics.fmean(total["direct"]) / statistics.fmean(total["through"])
    print(f"throughput at concurrency {args.concurrency} ({args.n} completions, best of {args.rounds}): "
          f"direct {best('direct'):.1f}/s, through {best('through'):.1f}/s, ratio {ratio:.1%}; "
          f"sandbox via the service {best('sandbox'):.1f}/s")
    print(f"service CPU per streamed completion: through {service_cpu['through']:.2f} ms, "
          f"sandbox {service_cpu['sandbox']:.2f} ms (direct: {service_cpu['direct']:.2f} ms, idle)")
    print(f"sequential throughput ratio (1/mean total): {sequential_ratio:.1%}\n")
    added = pct(ttft["through"], 50) - pct(ttft["direct"], 50)
    print(f"goal p50 added TTFT < 2 ms: {'met' if added < 2 else 'NOT met'} ({added:.3f} ms); "
          f"goal throughput >= 90% of direct: {'met' if ratio >= 0.9 else 'NOT met'} ({ratio:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds per path (best counts)")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    upstream_port, service_port = free_port(), free_port()
    upstream, service = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{service_port}"
    with tempfile.TemporaryDirectory() as data_dir:
        processes = [context.Process(target=run_emulator, args=(upstream_port,), daemon=True),
                     context.Process(target=run_service, args=(service_port, upstream, data_dir), daemon=True)]
        for process in processes:
            process.start()
        try:
            wait_listening(upstream_port)
            wait_listening(service_port)
            asyncio.run(bench(args, upstream, service, processes[1].pid or 0))
        finally:
            for process in processes:
                process.terminate()
                process.join(10)


if __name__ == "__main__":
    main()
