"""A short run of benchmarks/bench_load.py: dashboards polling with ETags while the scheduler syncs.

20 raw keep-alive clients for 3 s against one service process on SQLite with 50 active Sandbox
jobs and a 0.5 s sync interval. Asserts correctness only: no answer but 200/304 and every active
job synced at least once during the window. Speed is the benchmark's business, not this test's.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import REPO


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", REPO / "benchmarks" / "bench_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_polling_under_sync_loses_nothing() -> None:
    bench = load_bench()
    result = bench.run(bench.Config(clients=20, duration=3.0, jobs=50, rate=400.0, backend="sqlite",
                                    processes=1, sync_interval=0.5, warmup=1.0))
    print(result.report())
    assert result.requests > 0 and result.ok > 0 and result.warmup_latencies
    assert result.errors == 0, result.error_kinds
    assert result.not_modified > 0  # the ETags work under load
    assert result.jobs == 50 and result.lost_updates == 0
