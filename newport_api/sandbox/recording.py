"""The log of every request the sandbox received, for tests to assert on.

Threading: handler threads append while the test thread reads; RequestLog
guards its list with a lock and hands out copies. RecordedRequest is frozen,
and its dicts are private copies that nothing mutates after construction.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    role: str  # "api" | "storage" | "cdn": which listener received it
    phase: str  # one of faults.PHASES, or "other"
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]
    body: dict[str, Any] | None  # JSON object, or form fields (never file bytes), else None
    authorization: str | None
    time: float  # time.monotonic() when the request line arrived

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[RecordedRequest] = []

    def append(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._entries)

    def count(self, phase: str) -> int:
        with self._lock:
            return sum(1 for entry in self._entries if entry.phase == phase)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
