"""What the sandbox remembers: upload grants, stored objects and tasks.

Times are ``time.monotonic()`` seconds so that tests are immune to clock
changes; epoch values for the wire are derived with ``epoch_at()``.

Threading: one SandboxStore is shared by every handler thread; each method
holds the store's lock. The records it hands out are frozen, and a change to
a task replaces the record rather than mutating it, so a reader never sees a
half-updated task.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


def epoch_at(monotonic_time: float) -> float:
    """The wall-clock epoch seconds at which ``time.monotonic()`` reads ``monotonic_time``."""
    return time.time() + (monotonic_time - time.monotonic())


@dataclass(frozen=True)
class PolicyGrant:
    req_id: str
    policy: str  # the base64 policy document, which identifies the grant on upload
    directory: str
    key: str | None  # set in the "new" policy shape


@dataclass(frozen=True)
class StoredObject:
    key: str
    path: Path
    size: int
    content_type: str
    stored_at: float

    def expired(self, now: float, ttl_seconds: float) -> bool:
        return now > self.stored_at + ttl_seconds


@dataclass(frozen=True)
class TaskFailure:
    reason: str
    error_code: int


@dataclass(frozen=True)
class Task:
    task_id: str
    source: Path  # the result IS the source video, byte for byte
    submitted_at: float
    queued_seconds: float
    processing_seconds: float
    failure: TaskFailure | None = None
    video_withheld: bool = False  # status 3 but no videos, for good

    @property
    def started_at(self) -> float:
        return self.submitted_at + self.queued_seconds

    @property
    def succeeds_at(self) -> float:
        return self.started_at + self.processing_seconds

    def status(self, now: float) -> int:
        if self.failure is not None:
            return 4
        if self.video_withheld:
            return 3
        if now < self.started_at:
            return 1
        return 2 if now < self.succeeds_at else 3


class SandboxStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, PolicyGrant] = {}
        self._objects: dict[str, StoredObject] = {}
        self._objects_by_req_id: dict[str, StoredObject] = {}
        self._tasks: dict[str, Task] = {}

    def add_grant(self, grant: PolicyGrant) -> None:
        with self._lock:
            self._grants[grant.policy] = grant

    def grant_for_policy(self, policy: str) -> PolicyGrant | None:
        with self._lock:
            return self._grants.get(policy)

    def put_object(self, stored: StoredObject, req_id: str) -> None:
        with self._lock:
            self._objects[stored.key] = stored
            self._objects_by_req_id[req_id] = stored

    def object_for_key(self, key: str) -> StoredObject | None:
        with self._lock:
            return self._objects.get(key)

    def object_for_req_id(self, req_id: str) -> StoredObject | None:
        with self._lock:
            return self._objects_by_req_id.get(req_id)

    def add_task(self, source: Path, queued_seconds: float, processing_seconds: float) -> Task:
        task = Task(uuid.uuid4().hex, source, time.monotonic(), queued_seconds, processing_seconds)
        with self._lock:
            self._tasks[task.task_id] = task
        return task

    def task(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def fail_task(self, task_id: str, failure: TaskFailure) -> Task | None:
        return self._replace_task(task_id, failure=failure)

    def withhold_video(self, task_id: str) -> Task | None:
        return self._replace_task(task_id, video_withheld=True)

    def _replace_task(self, task_id: str, **changes: object) -> Task | None:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None:
                task = self._tasks[task_id] = dataclasses.replace(task, **changes)  # type: ignore[arg-type]
            return task

    def clear_tasks(self) -> None:
        with self._lock:
            self._tasks.clear()
