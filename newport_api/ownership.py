"""Which process owns a job: one owner per job across every Blender on this computer.

Two Blender processes can open the same .blend (or both be unsaved) while a job
runs, and both read the same job store.  Only the process that holds a job's
claim may run it, write its record and result, and import the result.

A claim has two parts, both in the job store next to the record:

* ``<job_id>.lock`` carries an OS lock (``fcntl.flock`` on Linux and macOS,
  ``msvcrt.locking`` on Windows), held open by the owner for as long as it
  owns the job.  The kernel drops it when the owner dies in any way (crash,
  SIGKILL, quit), so exclusion never depends on anyone cleaning up.
* ``<job_id>.owner`` is JSON saying who holds it (pid, host, the process's start
  token and a heartbeat), written atomically, so another process can show
  "running in another Blender (pid N)" without touching the lock.

The start token tells a recycled pid from the owner: on Linux it is the boot id
and the process's start time from ``/proc/<pid>/stat``.  Where no token can be
read for another process (macOS, Windows) liveness falls back to the heartbeat:
an owner whose heartbeat is older than ``STALE_SECONDS`` is gone.

Without ``fcntl`` and ``msvcrt`` (no such CPython platform is known) the owner
file itself is the lock, created exclusively and taken over only when its owner
is judged gone; that mode is best effort: two processes taking over the same dead
owner in the same instant could both win.  ``LOCKING`` says which mode is in use.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # everything but Windows
    msvcrt = None  # type: ignore[assignment]

LOCKING = "flock" if fcntl is not None else "msvcrt" if msvcrt is not None else "file"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0  # six missed heartbeats: the owner is gone (used where a pid cannot be checked)


@dataclass(frozen=True)
class OwnerInfo:
    pid: int
    host: str
    start_token: str  # "" where the platform gives none
    claimed_at: float
    heartbeat: float
    alive: bool = True  # judged when read; never stored

    @property
    def is_this_process(self) -> bool:
        return self.pid == os.getpid() and self.host == HOST and self.start_token == process_start_token()

    def to_json(self) -> bytes:
        data = asdict(self)
        del data["alive"]
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, text: bytes) -> OwnerInfo:
        data = json.loads(text)
        return cls(pid=int(data["pid"]), host=str(data["host"]), start_token=str(data.get("start_token", "")),
                   claimed_at=float(data["claimed_at"]), heartbeat=float(data["heartbeat"]))


HOST = socket.gethostname()


def this_process(claimed_at: float | None = None) -> OwnerInfo:
    now = time.time()
    return OwnerInfo(pid=os.getpid(), host=HOST, start_token=process_start_token(),
                     claimed_at=claimed_at or now, heartbeat=now)


# -- is a process still the one that claimed? ------------------------------------------------------------

def process_start_token(pid: int | None = None) -> str:
    """Boot id and start time of ``pid`` (Linux); "" where they cannot be read."""
    pid = os.getpid() if pid is None else pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    # The command name in parentheses may hold spaces: the fields after its closing ")" are fixed.
    fields = stat.rpartition(")")[2].split()
    return f"{boot_id}:{fields[19]}" if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool | None:
    """True or False where the platform can tell without side effects; None where it cannot."""
    if sys.platform == "win32":
        return None  # os.kill(pid, 0) would terminate the process there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return None
    return True


def judge(owner: OwnerInfo, now: float | None = None) -> OwnerInfo:
    """``owner`` with ``alive`` set: a live process that is the one that claimed, or a fresh heartbeat."""
    now = time.time() if now is None else now
    if owner.host == HOST:
        alive = pid_alive(owner.pid)
        if alive is False:
            return _with_alive(owner, False)
        token = process_start_token(owner.pid) if alive else ""
        if token and owner.start_token:
            return _with_alive(owner, token == owner.start_token)  # a different token: a recycled pid
    return _with_alive(owner, now - owner.heartbeat < STALE_SECONDS)


def _with_alive(owner: OwnerInfo, alive: bool) -> OwnerInfo:
    return replace(owner, alive=alive)


# -- the files ------------------------------------------------------------------------------------------

def read_owner(path: Path) -> OwnerInfo | None:
    try:
        return OwnerInfo.from_json(path.read_bytes())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_owner(path: Path, owner: OwnerInfo) -> None:
    """Replace the owner file atomically: readers see the old owner or the new one, never half.

    Not synced to disk: the lock is the truth and a crash makes the file stale anyway, while a
    quick write keeps short the moment in which a new owner holds the lock but the file still
    names the previous one.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".owner-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(owner.to_json())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def create_owner_exclusively(path: Path, owner: OwnerInfo) -> bool:
    """The "file" locking mode: the owner file appears whole, and only if there was none."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".owner-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(owner.to_json())
        os.link(temporary, path)  # atomic and exclusive: fails when the file exists
        return True
    except FileExistsError:
        return False
    finally:
        Path(temporary).unlink(missing_ok=True)


class OsLock:
    """An exclusive, non-blocking OS lock on one file, held until ``release`` or the process's death."""

    def __init__(self, path: Path, handle: int) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def try_acquire(cls, path: Path) -> OsLock | None:
        for _ in range(3):  # the file may be replaced between open and lock (a deleted job): try again
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _lock(handle):
                os.close(handle)
                return None
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(handle), os.stat(path)):
                    return cls(path, handle)
            _unlock(handle)
            os.close(handle)
        return None

    def release(self) -> None:
        if self._handle < 0:
            return
        _unlock(self._handle)
        os.close(self._handle)
        self._handle = -1


def _lock(handle: int) -> bool:
    try:
        if fcntl is not None:
            # flock, not lockf: a POSIX lock belongs to the whole process and closing any other
            # descriptor of the file would drop it; flock belongs to this open file only.
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(handle, 0, os.SEEK_SET)
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(handle: int) -> None:
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
        else:
            os.lseek(handle, 0, os.SEEK_SET)
            msvcrt.locking(handle, msvcrt.LK_UNLCK, 1)
