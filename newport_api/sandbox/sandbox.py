"""The Sandbox object: three loopback listeners (API, storage, cdn) and the switches tests pull.

Threading: start() and stop() may be called from any thread and are
serialised by a lock; stop() is idempotent. inject(), clear_faults(), reset(),
requests and count() are safe from any thread at any time, also while the
listeners serve, because they only touch the locked FaultBook, RequestLog and
SandboxStore. Each listener serves on its own daemon thread, asleep between
connections (``SandboxServer.serve_in_thread``), and each connection gets its
own daemon handler thread.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .context import ConnectionRegistry, Origins, SandboxConfig, SandboxContext
from .faults import OTHER_PHASE, PHASES, FaultBook
from .httpcore import SandboxServer
from .recording import RecordedRequest, RequestLog
from .roles import ApiHandler, CdnHandler, StorageHandler
from .signing import Signer
from .store import SandboxStore

STOP_JOIN_SECONDS = 2.0


class Sandbox:
    """A local stand-in for the Newport AI API, storage host and result cdn (contract section 6)."""

    def __init__(
        self,
        processing_seconds: float = 2.0,
        queued_seconds: float = 0.0,
        api_keys: Iterable[str] | None = None,
        result_ttl_seconds: float = 86400.0,
        upload_ttl_seconds: float = 86400.0,
        credits: float = 1000.0,
        policy_shape: str = "classic",
        max_upload_bytes: int = 5 * 1024**3,
        storage_dir: str | Path | None = None,
        *,
        port: int = 0,
        policy_ttl_seconds: float = 3600.0,
        verbose: bool = False,
    ) -> None:
        self.config = SandboxConfig(
            processing_seconds=processing_seconds, queued_seconds=queued_seconds,
            api_keys=frozenset(api_keys) if api_keys is not None else None,
            result_ttl_seconds=result_ttl_seconds, upload_ttl_seconds=upload_ttl_seconds, credits=credits,
            policy_shape=policy_shape, max_upload_bytes=max_upload_bytes,
            policy_ttl_seconds=policy_ttl_seconds)
        self._port = port
        self._given_storage_dir = Path(storage_dir) if storage_dir is not None else None
        self._verbose = verbose
        self._faults = FaultBook()
        self._log = RequestLog()
        self._store = SandboxStore()
        self._lifecycle_lock = threading.Lock()
        self._state = "new"  # -> "running" -> "stopped"
        self._context: SandboxContext | None = None
        self._servers: list[SandboxServer] = []
        self._refusing_socket: socket.socket | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> Self:
        with self._lifecycle_lock:
            if self._state != "new":
                raise RuntimeError(f"a Sandbox starts once; this one is {self._state}")
            storage_dir = self._prepare_storage_dir()
            try:
                self._servers = [SandboxServer(self._port, ApiHandler), SandboxServer(0, StorageHandler),
                                 SandboxServer(0, CdnHandler)]
                self._refusing_socket = _bound_but_not_listening()
            except OSError:
                self._close_sockets()
                raise
            self._context = self._build_context(storage_dir)
            for server in self._servers:
                server.context = self._context
                server.serve_in_thread(f"newport-sandbox-{server.RequestHandlerClass.role}")
            self._state = "running"
        return self

    def stop(self) -> None:
        with self._lifecycle_lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopped"
            context = self._context
            assert context is not None
            context.stopping.set()  # ends stalls and throttles at once
            for server in self._servers:
                server.stop_serving(STOP_JOIN_SECONDS)
            self._close_sockets()
            context.connections.close_all(STOP_JOIN_SECONDS)
            if self._given_storage_dir is None:
                shutil.rmtree(context.storage_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _prepare_storage_dir(self) -> Path:
        root = self._given_storage_dir or Path(tempfile.mkdtemp(prefix="newport_sandbox_"))
        for part in ("incoming", "objects", "fetched"):
            (root / part).mkdir(parents=True, exist_ok=True)
        return root

    def _build_context(self, storage_dir: Path) -> SandboxContext:
        api, storage, cdn = (f"http://127.0.0.1:{server.port}" for server in self._servers)
        assert self._refusing_socket is not None
        refused = f"http://127.0.0.1:{self._refusing_socket.getsockname()[1]}"
        return SandboxContext(
            config=self.config, origins=Origins(api, storage, cdn, refused), storage_dir=storage_dir,
            store=self._store, faults=self._faults, log=self._log, signer=Signer(),
            stopping=threading.Event(), connections=ConnectionRegistry(), verbose=self._verbose)

    def _close_sockets(self) -> None:
        for server in self._servers:
            server.server_close()
        if self._refusing_socket is not None:
            self._refusing_socket.close()

    # --- origins -----------------------------------------------------------------------------------------

    @property
    def _origins(self) -> Origins:
        if self._context is None:
            raise RuntimeError("the Sandbox has not been started")
        return self._context.origins

    @property
    def base_url(self) -> str:
        """The API origin, e.g. http://127.0.0.1:8123 (the only origin that should see Authorization)."""
        return self._origins.api

    @property
    def storage_origin(self) -> str:
        return self._origins.storage

    @property
    def cdn_origin(self) -> str:
        return self._origins.cdn

    @property
    def refused_origin(self) -> str:
        """The origin handed out by the "refused" fault: nothing listens there."""
        return self._origins.refused

    # --- switches and records ----------------------------------------------------------------------------

    def inject(self, phase: str, fault: str, times: int | None = 1, **options: Any) -> None:
        """Queue ``fault`` for the next ``times`` requests of ``phase`` (None: forever). See faults.FAULTS."""
        self._faults.add(phase, fault, times, options)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot copy of every request received so far, in arrival order."""
        return self._log.snapshot()

    def count(self, phase: str) -> int:
        if phase not in PHASES and phase != OTHER_PHASE:
            raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}, {OTHER_PHASE}")
        return self._log.count(phase)

    def reset(self) -> None:
        """Forget faults, the request log and tasks; uploaded files stay."""
        self._faults.clear()
        self._log.clear()
        self._store.clear_tasks()


def _bound_but_not_listening() -> socket.socket:
    """A loopback port that is taken (so nobody else gets it) but refuses every connection."""
    refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refusing.bind(("127.0.0.1", 0))
    return refusing
