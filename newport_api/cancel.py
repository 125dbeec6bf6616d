"""Cooperative cancellation shared by the job runner, the retry loop and transfers.

A token is set from any thread; the thread doing the work checks it between
chunks and waits on it instead of sleeping, so a cancel takes effect within
one chunk or one network timeout.
"""

from __future__ import annotations

import threading
from enum import Enum

from .errors import CancelledError


class StopReason(str, Enum):
    CANCEL = "cancel"  # the artist cancelled: the job ends as cancelled
    SHUTDOWN = "shutdown"  # the program is closing: the job stays resumable


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: StopReason | None = None

    def cancel(self, reason: StopReason = StopReason.CANCEL) -> None:
        if self.reason is None:
            self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("The job was cancelled.")

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise ``CancelledError`` as soon as the token is set."""
        if self._event.wait(max(0.0, seconds)):
            raise CancelledError("The job was cancelled.")
