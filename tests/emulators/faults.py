"""Fault injection shared by every provider emulator.

A test arms a fault for requests whose method and path match; the emulator answers the
next `times` matching requests with that status (and Retry-After), or with a hang
(`delay`) or a malformed body, before serving normally again.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field


@dataclass
class Fault:
    method: str
    path_pattern: str
    status: int = 500
    times: int = 1
    retry_after: float | None = None
    delay: float = 0.0
    malformed: bool = False
    body: dict | None = None


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hits: list[tuple[str, str]] = field(default_factory=list)

    def add(self, method: str, path_pattern: str, status: int = 500, times: int = 1, **kwargs: object) -> Fault:
        fault = Fault(method.upper(), path_pattern, status, times, **kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.hits.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The armed fault for this request, consuming one of its `times`; None to serve normally."""
        with self.lock:
            self.hits.append((method.upper(), path))
            for fault in self.faults:
                if fault.times > 0 and fault.method in (method.upper(), "*") and re.search(fault.path_pattern, path):
                    fault.times -= 1
                    return fault
        return None
