"""Cooperative cancellation shared by the job runner, the retry loop and transfers.

A token is set from any thread; the thread doing the work checks it between
chunks and waits on it instead of sleeping.  Work that blocks on the network
registers an abort callback with ``on_cancel``: ``cancel()`` runs it on the
cancelling thread, which breaks the blocked call at once (the transport
shuts its sockets down), so a cancel takes effect within a fraction of a
second even while a server stalls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum

from .errors import CancelledError


class StopReason(str, Enum):
    CANCEL = "cancel"  # the artist cancelled: the job ends as cancelled
    SHUTDOWN = "shutdown"  # the program is closing: the job stays resumable


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_handle = 0
        self.reason: StopReason | None = None

    def cancel(self, reason: StopReason = StopReason.CANCEL) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            _run_quietly(callback)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` once when the token is set (at once if it already is).

        The callback runs on the thread that cancels, so it must be quick and
        must not raise (what it raises is ignored).  Returns a function that
        unregisters the callback; calling it after the cancel does nothing.
        """
        with self._lock:
            if not self._event.is_set():
                handle = self._next_handle
                self._next_handle += 1
                self._callbacks[handle] = callback
                return lambda: self._forget(handle)
        _run_quietly(callback)
        return lambda: None

    def _forget(self, handle: int) -> None:
        with self._lock:
            self._callbacks.pop(handle, None)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("The job was cancelled.")

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise ``CancelledError`` as soon as the token is set."""
        if self._event.wait(max(0.0, seconds)):
            raise CancelledError("The job was cancelled.")


def _run_quietly(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # noqa: BLE001, S110 — an abort that fails must not break the cancel itself
        pass
