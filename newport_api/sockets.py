"""Connections that a cancel can break at once, even in a blocked connect, send or read.

requests offers no way to interrupt a call waiting on the network: a server
that stalls holds the calling thread until the read timeout.  The transport
mounts an ``AbortableAdapter`` on its session.  Every socket that adapter's
connections open is registered with a ``SocketRegistry`` *before* it
connects, as a duplicate handle: the duplicate shares the connection, and
it still works after TLS has wrapped (and detached) the original.
``SocketRegistry.abort()`` shuts every registered socket down, so a blocked
connect, TLS handshake, send or read fails at once; the transport then turns
that failure into ``CancelledError``.

Only public urllib3 classes are subclassed; if the urllib3 in use lacks what
the early registration needs, a socket is registered right after it
connects instead (then only the connect itself cannot be interrupted, and it
ends within the connect timeout).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_errors
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

try:
    from urllib3.util.connection import allowed_gai_family
except ImportError:  # pragma: no cover — every urllib3 since 1.22 has it
    def allowed_gai_family() -> socket.AddressFamily:
        return socket.AF_UNSPEC


class SocketRegistry:
    """The open sockets of one transport; ``abort()`` shuts them all down, now and from then on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: set[socket.socket] = set()
        self._aborted = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    def register(self, sock: socket.socket) -> socket.socket | None:
        """Keep a duplicate handle of ``sock``; raise ``ConnectionAbortedError`` if already aborted."""
        try:
            handle = sock.dup()
        except OSError:
            return None
        with self._lock:
            if not self._aborted:
                self._handles.add(handle)
                return handle
            _shut(handle)
            handle.close()
        raise ConnectionAbortedError("the transfer was cancelled")

    def release(self, handle: socket.socket) -> None:
        # Under the lock, so abort() never shuts down a descriptor number that was reused meanwhile.
        with self._lock:
            self._handles.discard(handle)
            handle.close()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            for handle in self._handles:
                _shut(handle)

    def close(self) -> None:
        """Release every handle (the transport is closing); an abort stays in force."""
        with self._lock:
            for handle in self._handles:
                handle.close()
            self._handles.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._handles)


def _shut(handle: socket.socket) -> None:
    try:
        handle.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet on some systems, or already gone


class _AbortableConnection:
    """Mixed into urllib3's connection classes; ``registry`` is set per adapter."""

    registry: SocketRegistry
    _abort_handle: socket.socket | None = None

    # The attributes below come from urllib3's HTTPConnection.
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        self._release_abort_handle()
        if self.registry.aborted:
            raise urllib3_errors.NewConnectionError(self, "Failed to establish a new connection: cancelled")
        if not hasattr(self, "_dns_host"):  # an unknown urllib3: register once connected
            sock = super()._new_conn()  # type: ignore[misc]
            self._register(sock)
            return sock
        try:
            sock = self._connect_registered()
        except socket.gaierror as error:
            raise urllib3_errors.NewConnectionError(
                self, f"Failed to resolve '{self.host}' ({error})") from error
        except TimeoutError as error:
            raise urllib3_errors.ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})") from error
        except OSError as error:
            raise urllib3_errors.NewConnectionError(
                self, f"Failed to establish a new connection: {error}") from error
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock

    def _connect_registered(self) -> socket.socket:
        """urllib3's create_connection, with each socket registered before it connects."""
        host = self._dns_host
        if host.startswith("["):
            host = host.strip("[]")
        try:
            host.encode("idna")
        except UnicodeError:
            raise urllib3_errors.LocationParseError(f"'{host}', label empty or too long") from None
        failure: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(host, self.port, allowed_gai_family(),
                                                                   socket.SOCK_STREAM):
            sock = None
            try:
                sock = socket.socket(family, kind, proto)
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(self.timeout, (int, float)):
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                self._register(sock)
                sock.connect(address)
                return sock
            except OSError as error:
                failure = error
                self._release_abort_handle()
                if sock is not None:
                    sock.close()
                if self.registry.aborted:
                    break
        raise failure or OSError("getaddrinfo returns an empty list")

    def _register(self, sock: socket.socket) -> None:
        self._abort_handle = self.registry.register(sock)

    def _release_abort_handle(self) -> None:
        handle, self._abort_handle = self._abort_handle, None
        if handle is not None:
            self.registry.release(handle)

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            self._release_abort_handle()


def pool_classes_for(registry: SocketRegistry) -> dict[str, type]:
    """urllib3 pool classes whose connections register their sockets with ``registry``."""
    http_connection = type("AbortableHTTPConnection", (_AbortableConnection, HTTPConnection),
                           {"registry": registry})
    https_connection = type("AbortableHTTPSConnection", (_AbortableConnection, HTTPSConnection),
                            {"registry": registry})
    return {
        "http": type("AbortableHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_connection}),
        "https": type("AbortableHTTPSConnectionPool", (HTTPSConnectionPool,),
                      {"ConnectionCls": https_connection}),
    }


class AbortableAdapter(HTTPAdapter):
    """requests' adapter, with connections (direct or through an http proxy) that ``registry`` can abort."""

    def __init__(self, registry: SocketRegistry, **kwargs: Any) -> None:
        self.registry = registry
        self._pool_classes = pool_classes_for(registry)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools bring their own connection classes
            manager.pool_classes_by_scheme = self._pool_classes
        return manager


@contextlib.contextmanager
def sigpipe_blocked() -> Iterator[None]:
    """While inside, a write to a connection that was closed fails with EPIPE instead of ending the process.

    CPython ignores SIGPIPE when it starts a program of its own, but a program that embeds it
    (Blender) keeps the default action, which kills the whole process: cancelling an upload,
    or a storage host resetting it, would take Blender down with every unsaved change. OpenSSL
    writes with plain ``send``, so no per-call flag can help; blocking the signal in the
    sending thread turns it into the EPIPE error the transport already handles. A signal left
    pending is taken off before the old mask returns, so it is never delivered later.
    """
    if not hasattr(signal, "pthread_sigmask") or not hasattr(signal, "SIGPIPE"):
        yield  # Windows has no SIGPIPE
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        yield
    finally:
        if signal.SIGPIPE not in previous:
            while signal.SIGPIPE in signal.sigpending():
                signal.sigtimedwait({signal.SIGPIPE}, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
