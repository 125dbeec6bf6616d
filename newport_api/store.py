"""Job records on disk: one JSON file per job, each written atomically, and who owns each job.

A write goes to a temporary file in the same folder, is flushed to disk and
then renamed over the old record, so a crash leaves either the old record or
the new one, never half of each.  Records hold no API key (``JobRecord`` has
no field for it).  The store is safe to use from several threads.

Several processes (two Blenders on one file) share the folder.  Only the one
that holds a job's claim (``claim``; see ``ownership``) may run the job, write
its record and import its result; the claim lasts until ``release`` or the
death of the process, and a heartbeat thread keeps its owner file fresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from . import ownership
from .jobs import JobRecord
from .ownership import OwnerInfo


@dataclass
class _Claim:
    os_lock: ownership.OsLock | None  # None in the "file" locking mode: the owner file is the lock
    owner: OwnerInfo


class JobStore:
    def __init__(self, directory: str | os.PathLike[str], *, locking: str = ownership.LOCKING) -> None:
        self.directory = Path(directory)
        self.locking = locking  # "flock", "msvcrt" or "file" (see ownership's docstring)
        self._lock = threading.Lock()
        self._claims: dict[str, _Claim] = {}
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()

    def path_for(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError(f"not a job id: {job_id!r}")
        return self.directory / f"{job_id}.json"

    def lock_path_for(self, job_id: str) -> Path:
        return self.path_for(job_id).with_suffix(".lock")

    def owner_path_for(self, job_id: str) -> Path:
        return self.path_for(job_id).with_suffix(".owner")

    def save(self, record: JobRecord) -> None:
        """Write the record whole (a temporary file synced, then renamed over the old one).

        Not under the store's lock: the sync can take a slow disk tens of milliseconds, and the
        host's thread asks that lock about claims on every tick. Each record has one writer at a
        time (its runner, else the host), and renames are atomic, so writers need no lock.
        """
        payload = json.dumps(record.to_dict(), indent=1, sort_keys=True).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".job-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path_for(record.job_id))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load(self, job_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_dict(json.loads(self.path_for(job_id).read_text()))
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            return None

    def load_all(self) -> list[JobRecord]:
        """Every readable record, oldest first; unreadable files are skipped, not deleted."""
        if not self.directory.is_dir():
            return []
        records = [self.load(path.stem) for path in self.directory.glob("*.json") if path.stem.isalnum()]
        return sorted((record for record in records if record), key=lambda record: record.created_at)

    def delete(self, job_id: str) -> None:
        """Remove a finished job's record; its lock files go too unless another process holds the job."""
        self.path_for(job_id).unlink(missing_ok=True)
        owner = self.owner_of(job_id)
        if owner is not None and owner.alive and not self.holds(job_id):
            return
        self.release(job_id)
        for path in (self.owner_path_for(job_id), self.lock_path_for(job_id)):
            with contextlib.suppress(OSError):  # Windows refuses to delete a file someone has open
                path.unlink(missing_ok=True)

    # -- ownership ----------------------------------------------------------------

    def claim(self, job_id: str) -> bool:
        """Own ``job_id`` from now on; False when another live process (or store) owns it.

        Claiming a job this store already holds returns True.
        """
        with self._lock:
            if job_id in self._claims:
                return True
            self.directory.mkdir(parents=True, exist_ok=True)
            owner = ownership.this_process()
            if self.locking == "file":
                if not self._claim_owner_file(job_id, owner):
                    return False
                os_lock = None
            else:
                os_lock = ownership.OsLock.try_acquire(self.lock_path_for(job_id))
                if os_lock is None:
                    return False
                # The owner file only informs (the lock decides); one that cannot be written now
                # (Windows refuses to replace a file another process is reading) the heartbeat writes.
                with contextlib.suppress(OSError):
                    ownership.write_owner(self.owner_path_for(job_id), owner)
            self._claims[job_id] = _Claim(os_lock, owner)
            self._ensure_heartbeat()
            return True

    def _claim_owner_file(self, job_id: str, owner: OwnerInfo) -> bool:
        path = self.owner_path_for(job_id)
        for _ in range(2):
            if ownership.create_owner_exclusively(path, owner):
                return True
            current = ownership.read_owner(path)
            if current is not None and ownership.judge(current).alive:
                return False
            if ownership.read_owner(path) == current:  # still the owner judged gone: take it over
                with contextlib.suppress(OSError):
                    path.unlink()
        return False

    def release(self, job_id: str) -> None:
        """Give up ``job_id`` (nothing happens when this store does not hold it)."""
        with self._lock:
            claim = self._claims.pop(job_id, None)
            if claim is not None:
                path = self.owner_path_for(job_id)
                current = ownership.read_owner(path)
                # Removed before the OS lock is let go, so a next owner's file is never the one removed.
                if current is not None and _same_claim(current, claim.owner):
                    with contextlib.suppress(OSError):
                        path.unlink()
                if claim.os_lock is not None:
                    claim.os_lock.release()
        self._stop_heartbeat_if_idle()

    # ``holds`` and ``claimed_ids`` read the claims without the lock: each is one dict operation,
    # atomic under the GIL, and the host asks them on every tick and redraw. Waiting for the lock
    # there gives the GIL away, and winning it back beside busy job threads can take a switch
    # interval (5 ms) — ten times a tick's own work.
    def holds(self, job_id: str) -> bool:
        return job_id in self._claims

    def claimed_ids(self) -> list[str]:
        return list(self._claims)

    def owner_of(self, job_id: str) -> OwnerInfo | None:
        """Who claimed ``job_id`` (``alive`` says whether it still runs); None when nobody did."""
        owner = ownership.read_owner(self.owner_path_for(job_id))
        return None if owner is None else ownership.judge(owner)

    # -- the heartbeat --------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        """Called with ``_lock`` held: one thread refreshes every claim of this store."""
        if self._heartbeat is not None:
            return
        self._heartbeat_stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, args=(self._heartbeat_stop,), daemon=True,
                                           name="talking-face-heartbeat")
        self._heartbeat.start()

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(ownership.HEARTBEAT_SECONDS):
            for job_id in self.claimed_ids():
                # One owner file per turn of the lock: a host asking about claims meanwhile waits for
                # one small write, not for all of them; a claim released meanwhile is not written back.
                with self._lock:
                    claim = self._claims.get(job_id)
                    if stop.is_set():
                        return
                    if claim is None:
                        continue
                    claim.owner = replace(claim.owner, heartbeat=time.time())
                    with contextlib.suppress(OSError):  # a full disk must not end the claim
                        ownership.write_owner(self.owner_path_for(job_id), claim.owner)

    @contextlib.contextmanager
    def heartbeat_paused(self) -> Iterator[None]:
        """No heartbeat thread runs inside the block; claims stay held (their owner files age a little).

        For a caller that must be the only thread running Python for a moment (see ``compat``'s
        notes on Blender's context overrides); the heartbeat starts again after it.
        """
        self._stop_heartbeat(only_when_idle=False, wait=None)  # waits out a beat under way
        try:
            yield
        finally:
            with self._lock:
                if self._claims:
                    self._ensure_heartbeat()

    def _stop_heartbeat_if_idle(self) -> None:
        self._stop_heartbeat(only_when_idle=True, wait=2.0)

    def _stop_heartbeat(self, *, only_when_idle: bool, wait: float | None) -> None:
        with self._lock:
            if (only_when_idle and self._claims) or self._heartbeat is None:
                return
            thread, self._heartbeat = self._heartbeat, None
            self._heartbeat_stop.set()
        if thread is not threading.current_thread():
            thread.join(wait)


def _same_claim(a: OwnerInfo, b: OwnerInfo) -> bool:
    return (a.pid, a.host, a.start_token, a.claimed_at) == (b.pid, b.host, b.start_token, b.claimed_at)
