"""Configuration and the services that every handler thread shares.

Threading: SandboxConfig, Origins and SandboxContext are immutable once the
sandbox has started. The mutable members of a context (store, faults, log,
connections) each carry their own lock, and ``stopping`` is a threading.Event
that every wait in a handler watches, so stop() interrupts stalls and throttles.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .faults import FaultBook
from .recording import RequestLog
from .signing import Signer
from .store import SandboxStore

POLICY_SHAPES = ("classic", "new")


@dataclass(frozen=True)
class SandboxConfig:
    processing_seconds: float = 2.0
    queued_seconds: float = 0.0
    api_keys: frozenset[str] | None = None  # None: any key starting "sk-"
    result_ttl_seconds: float = 86400.0
    upload_ttl_seconds: float = 86400.0
    credits: float = 1000.0
    policy_shape: str = "classic"
    max_upload_bytes: int = 5 * 1024**3
    policy_ttl_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.policy_shape not in POLICY_SHAPES:
            raise ValueError(f"policy_shape must be one of {POLICY_SHAPES}, not {self.policy_shape!r}")
        for name in ("processing_seconds", "queued_seconds", "result_ttl_seconds", "upload_ttl_seconds",
                     "policy_ttl_seconds", "max_upload_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True)
class Origins:
    api: str
    storage: str
    cdn: str
    refused: str  # a port that is bound but never listens: connecting to it is refused


class ConnectionRegistry:
    """The open client connections, so that stop() can break every blocked read and write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[socket.socket, threading.Thread] = {}
        self._closing = False

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._open[connection] = threading.current_thread()
            closing = self._closing
        if closing:  # accepted while stopping: do not let it be served
            _shut(connection)

    def discard(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.pop(connection, None)

    def close_all(self, join_timeout: float) -> None:
        with self._lock:
            self._closing = True
            entries = list(self._open.items())
        for connection, _ in entries:
            _shut(connection)
        deadline = time.monotonic() + join_timeout
        for _, thread in entries:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


@dataclass(frozen=True)
class SandboxContext:
    config: SandboxConfig
    origins: Origins
    storage_dir: Path
    store: SandboxStore
    faults: FaultBook
    log: RequestLog
    signer: Signer
    stopping: threading.Event
    connections: ConnectionRegistry
    verbose: bool = False

    def reset(self) -> None:
        """Forget faults, the request log and tasks; stored files stay."""
        self.faults.clear()
        self.log.clear()
        self.store.clear_tasks()
