"""Background threads that run jobs, and the queue that reports on them.

Threading rules:

* Each running job has one daemon thread, its own ``NewportClient`` and its
  own cancel token; threads share nothing but the ``JobStore`` (which locks)
  and the ``events`` queue.
* Threads never call back into their host.  Everything they have to say is a
  ``JobEvent`` (plain data).  Snapshots of the record (one at each save, the
  last one ``stopped``) queue in order on ``events``, which the host drains on
  its own thread (in Blender, the main thread's monitor timer) at its own pace.
  Progress events, the frequent kind, do not queue: each replaces its job's
  previous one in ``progress``, so a host reads one per job when it looks,
  however often the jobs report, and a host that shows no progress pays nothing.
  ``progress_of`` pairs a job's record with the progress that belongs to it.
* ``start``, ``cancel`` and ``shutdown`` are called from the host's thread.
  ``shutdown`` stops every job *without* cancelling it, so that its record
  keeps its phase and the next session resumes it.
* With a store, a job runs only under its claim (``JobStore.claim``): a job
  another process owns is not started.  The thread releases the claim when it
  stops, except at ``DOWNLOADED``: the host keeps it until the result is placed,
  so that no other process imports it too.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable

from .cancel import CancelToken, StopReason
from .client import NewportClient
from .jobs import JobEvent, JobRecord, JobRunner, Phase, RunnerSettings
from .sockets import sigpipe_blocked
from .store import JobStore

ClientFactory = Callable[[CancelToken], NewportClient]


class JobWorker:
    def __init__(self, client_factory: ClientFactory | None = None, store: JobStore | None = None, *,
                 settings: RunnerSettings | None = None) -> None:
        self._client_factory = client_factory
        self._store = store
        self._settings = settings
        self.events: queue.SimpleQueue[JobEvent] = queue.SimpleQueue()  # snapshots, in order
        # Each job's latest progress event, since its latest snapshot.  Written by the jobs' threads
        # (one dict operation, atomic under the GIL), read by the host.
        self.progress: dict[str, JobEvent] = {}
        self._progress_counter = itertools.count(1)
        self.progress_stamp = 0  # a new value at every progress event: the host's cue to redraw
        self._threads: dict[str, threading.Thread] = {}
        self._tokens: dict[str, CancelToken] = {}

    def start(self, record: JobRecord, client_factory: ClientFactory | None = None) -> bool:
        """Run ``record`` in a new thread; a job already running is left alone.

        False when another process owns the job (nothing runs then).  The thread
        owns ``record`` from now on: the caller keeps its own copy and learns of
        changes only through ``events``.
        """
        if self.is_running(record.job_id):
            return True
        factory = client_factory or self._client_factory
        if factory is None:
            raise ValueError("JobWorker.start needs a client factory")
        if self._store is not None and not self._store.claim(record.job_id):
            return False
        token = CancelToken()
        try:
            client = factory(token)
        except BaseException:
            if self._store is not None:
                self._store.release(record.job_id)
            raise
        runner = JobRunner(client, record, save=self._store.save if self._store else None,
                           emit=self.publish, settings=self._settings)
        thread = threading.Thread(target=self._run, args=(runner, client), daemon=True,
                                  name=f"talking-face-{record.job_id[:8]}")
        self._tokens[record.job_id] = token
        self._threads[record.job_id] = thread
        thread.start()
        return True

    def _run(self, runner: JobRunner, client: NewportClient) -> None:
        try:
            with sigpipe_blocked():
                runner.run()
        finally:
            client.close()
            if self._store is not None and runner.record.phase != Phase.DOWNLOADED:
                self._store.release(runner.record.job_id)

    def publish(self, event: JobEvent) -> None:
        """The runners' ``emit`` (called on their threads): snapshots queue, progress overwrites."""
        if event.record is None:
            self.progress[event.job_id] = event
            self.progress_stamp = next(self._progress_counter)
        else:
            self.progress.pop(event.job_id, None)  # older than this snapshot, which says where the job is
            self.events.put(event)

    def progress_of(self, record: JobRecord) -> tuple[float | None, str]:
        """``(fraction, message)`` to show for ``record``, the host's copy from the job's latest snapshot.

        The job's latest progress event if it is of the record's phase, else what the record says.
        A progress event of another phase is newer than a snapshot the host has not drained yet.
        """
        event = self.progress.get(record.job_id)
        if event is not None and event.phase == record.phase.value:
            return event.progress, event.message
        return record.progress, record.message

    def is_running(self, job_id: str) -> bool:
        thread = self._threads.get(job_id)
        return bool(thread and thread.is_alive())

    def running_ids(self) -> list[str]:
        return [job_id for job_id in self._threads if self.is_running(job_id)]

    def any_running(self) -> bool:
        """Like ``bool(running_ids())``, but stops at the first live thread (asked on every tick)."""
        return any(thread.is_alive() for thread in self._threads.values())

    def cancel(self, job_id: str) -> bool:
        token = self._tokens.get(job_id)
        if token is None or not self.is_running(job_id):
            return False
        token.cancel(StopReason.CANCEL)
        return True

    def pause(self, job_id: str) -> bool:
        """Stop one job without cancelling it: its record keeps the phase, ``start`` continues it."""
        token = self._tokens.get(job_id)
        if token is None or not self.is_running(job_id):
            return False
        token.cancel(StopReason.SHUTDOWN)
        return True

    def join(self, job_id: str, timeout: float | None = None) -> bool:
        thread = self._threads.get(job_id)
        if thread:
            thread.join(timeout)
        return not self.is_running(job_id)

    def forget_finished(self) -> None:
        for job_id in [job_id for job_id in self._threads if not self.is_running(job_id)]:
            del self._threads[job_id]
            del self._tokens[job_id]
            self.progress.pop(job_id, None)

    def shutdown(self, timeout: float = 2.0) -> list[str]:
        """Stop every job so it can resume later; returns the ids still alive after ``timeout``."""
        for token in self._tokens.values():
            token.cancel(StopReason.SHUTDOWN)
        for thread in self._threads.values():
            thread.join(timeout / max(1, len(self._threads)))
        alive = self.running_ids()
        self.forget_finished()
        return alive
