"""HTTP plumbing shared by the three listeners: replies, request bodies, byte
ranges, throttling, and the base handler that records requests and applies faults.

Every request goes through ``SandboxHandler.serve_request``: take the phase's
next fault, receive the body, record the request, then either answer with the
fault or let the role's ``respond()`` build a Reply and send it, possibly
spoiled by the fault. Replies are values, so a fault can cut or truncate the
real answer without the endpoints knowing about faults.

Threading: ThreadingHTTPServer gives each connection its own handler instance
on its own daemon thread, so handler attributes are never shared. Shared state
lives in the SandboxContext, whose members carry their own locks. Every wait
(stall, throttle) watches ``context.stopping`` so stop() ends it at once.
"""

from __future__ import annotations

import contextlib
import http
import json
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import SplitResult, urlsplit
from xml.sax.saxutils import escape

from .context import SandboxContext
from .faults import HTTP_STATUS_FAULTS, PHASES, Fault
from .recording import RecordedRequest

CHUNK_BYTES = 256 * 1024
JSON_TYPE = "application/json"
XML_TYPE = "application/xml"
CONTROL_PHASE = "control"  # the /_sandbox/ endpoints: never recorded, never faulted

_OSS_ERROR_CODES = {400: "InvalidArgument", 401: "Unauthorized", 403: "AccessDenied", 404: "NoSuchKey",
                    405: "MethodNotAllowed", 413: "EntityTooLarge", 429: "TooManyRequests",
                    500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FileSlice:
    path: Path
    start: int
    length: int


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    file: FileSlice | None = None  # streamed from disk instead of ``body``

    @property
    def content_length(self) -> int:
        return self.file.length if self.file is not None else len(self.body)


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload).encode("utf-8"))


def envelope(code: int, message: str, data: Any = None, status: int = 200) -> Reply:
    return json_reply({"code": code, "message": message, "data": data}, status)


def oss_error(status: int, code: str | None = None, message: str | None = None) -> Reply:
    code = code or _OSS_ERROR_CODES.get(status, "Error")
    message = message or _phrase(status)
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
            f"  <Code>{escape(code)}</Code>\n  <Message>{escape(message)}</Message>\n"
            f"  <RequestId>{uuid.uuid4().hex.upper()[:24]}</RequestId>\n"
            "  <HostId>sandbox</HostId>\n</Error>\n")
    return Reply(status, body.encode("utf-8"), XML_TYPE)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def html_error(status: int) -> Reply:
    phrase = escape(_phrase(status))
    page = (f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")
    return Reply(status, page.encode("utf-8"), "text/html")


class RangeNotSatisfiable(Exception):
    pass


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single ``bytes=`` range, None to send it all (RFC 9110 §14).

    Multiple ranges and malformed headers are ignored (the whole entity is sent),
    as the RFC allows; a well-formed range that misses the entity raises.
    """
    if not header or not header.strip().lower().startswith("bytes=") or "," in header:
        return None
    first_text, dash, last_text = header.strip()[6:].strip().partition("-")
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:  # suffix range: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and (not last_text.isdigit() or int(last_text) < first):
        return None  # syntactically invalid: ignored
    if first >= size:
        raise RangeNotSatisfiable
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


def file_reply(path: Path, size: int, content_type: str, range_header: str | None) -> Reply:
    """Serve a file with Range support: 200, 206 with Content-Range, or 416."""
    try:
        span = requested_range(range_header, size)
    except RangeNotSatisfiable:
        refused = oss_error(416, "InvalidRange", "The requested range is not satisfiable")
        return replace(refused, headers=(("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes")))
    if span is None:
        return Reply(200, content_type=content_type, headers=(("Accept-Ranges", "bytes"),),
                     file=FileSlice(path, 0, size))
    first, last = span
    return Reply(206, content_type=content_type,
                 headers=(("Accept-Ranges", "bytes"), ("Content-Range", f"bytes {first}-{last}/{size}")),
                 file=FileSlice(path, first, last - first + 1))


class Throttle:
    """Paces a transfer at a fixed byte rate; raises when the sandbox stops, to abandon the transfer."""

    def __init__(self, bytes_per_second: float, stopping: threading.Event) -> None:
        self._rate = float(bytes_per_second)
        self._stopping = stopping
        self._started = time.monotonic()
        self._moved = 0

    def chunk_size(self, preferred: int) -> int:
        return max(1, min(preferred, int(self._rate / 10)))  # about ten steps a second

    def account(self, byte_count: int) -> None:
        self._moved += byte_count
        delay = self._started + self._moved / self._rate - time.monotonic()
        if delay > 0 and self._stopping.wait(delay):
            raise ConnectionAbortedError("the sandbox is stopping")


class RequestBody:
    """One request's body, read incrementally; Content-Length and chunked framing both work.

    Clients that stream a multipart upload from a generator send it chunked,
    so the storage host must accept that as well as a plain Content-Length.
    """

    def __init__(self, rfile: BinaryIO, headers: Any) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._remaining = 0 if self._chunked else _content_length(headers)
        self._chunk_left = 0
        self._finished = not self._chunked and self._remaining == 0

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes; b"" once the body is over."""
        if self._finished:
            return b""
        if self._chunked:
            return self._read_chunked(limit)
        data = self._rfile.read(min(limit, self._remaining))
        if not data:
            raise ConnectionAbortedError("the client closed the connection in the middle of the body")
        self._remaining -= len(data)
        self._finished = self._remaining == 0
        return data

    def chunks(self, size: int = CHUNK_BYTES, throttle: Throttle | None = None) -> Iterator[bytes]:
        while data := self.read(throttle.chunk_size(size) if throttle else size):
            yield data
            if throttle:
                throttle.account(len(data))

    def read_all(self, max_bytes: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        for data in self.chunks():
            total += len(data)
            if total > max_bytes:
                raise BadRequest(413, f"the body is larger than {max_bytes} bytes")
            parts.append(data)
        return b"".join(parts)

    def drain(self) -> None:
        for _ in self.chunks():
            pass

    def _read_chunked(self, limit: int) -> bytes:
        if self._chunk_left == 0:
            self._chunk_left = self._next_chunk_size()
            if self._chunk_left == 0:
                self._skip_trailers()
                self._finished = True
                return b""
        data = self._rfile.read(min(limit, self._chunk_left))
        if not data:
            raise ConnectionAbortedError("the client closed the connection in the middle of a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and self._rfile.read(2) != b"\r\n":
            raise BadRequest(400, "a chunk is not followed by CRLF")
        return data

    def _next_chunk_size(self) -> int:
        line = self._rfile.readline(1026)
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(400, f"bad chunk size line {line[:40]!r}") from None

    def _skip_trailers(self) -> None:
        while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass


def _content_length(headers: Any) -> int:
    text = headers.get("Content-Length")
    if text is None:
        return 0
    if not text.strip().isdigit():
        raise BadRequest(400, f"bad Content-Length {text!r}")
    return int(text)


@dataclass
class Received:
    """What a handler took from a request: what the log shows, and what respond() works on."""

    recorded: dict[str, Any] | None = None
    payload: Any = None
    cleanup: Callable[[], None] | None = None


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() breaks connections and joins their threads itself, with a deadline
    request_queue_size = 64

    def __init__(self, port: int, handler: type[SandboxHandler]) -> None:
        self.context: SandboxContext | None = None  # set by Sandbox.start() before serving
        self._stop_requested = False
        self._serving: threading.Thread | None = None
        super().__init__(("127.0.0.1", port), handler)

    def serve_in_thread(self, name: str) -> None:
        """Accept connections on a daemon thread that sleeps in ``select`` until one comes.

        Not ``serve_forever``: that wakes every poll interval to look for ``shutdown()``, and
        any thread waking to run Python while Blender runs ``bpy.ops`` under a context override
        can crash Blender builds on Python 3.11 (see ``operators.compat``); a sandbox serving
        tests inside Blender must stay asleep while nobody calls it. ``stop_serving`` wakes it.
        """
        self.timeout = None  # handle_request() waits for a connection as long as it takes
        self._serving = threading.Thread(target=self._serve_until_stopped, name=name, daemon=True)
        self._serving.start()

    def _serve_until_stopped(self) -> None:
        while not self._stop_requested:
            self.handle_request()

    def stop_serving(self, timeout: float) -> None:
        """End ``serve_in_thread``'s loop: flag it, then wake its ``select`` with a connection of our own."""
        self._stop_requested = True
        if self._serving is None:
            return
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=timeout).close()
        self._serving.join(timeout)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return not self._stop_requested  # the wake-up connection (or any after stop) is closed unanswered

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skips HTTPServer's getfqdn(), which can wait on DNS
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        stopping = self.context is not None and self.context.stopping.is_set()
        if stopping or isinstance(error, (OSError, ValueError)):
            return  # clients that hang up, and connections we broke on purpose, are not errors
        super().handle_error(request, client_address)


class SandboxHandler(BaseHTTPRequestHandler):
    """The request cycle shared by the three roles; subclasses route, receive and respond."""

    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections do not hold a thread forever
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    role: ClassVar[str] = "other"
    server: SandboxServer
    url: SplitResult

    @property
    def context(self) -> SandboxContext:
        assert self.server.context is not None
        return self.server.context

    # --- hooks for the roles -------------------------------------------------------------------------

    def phase_of(self, method: str, path: str) -> str:
        raise NotImplementedError

    def receive(self, phase: str, fault: Fault | None) -> Received:
        self.request_body().drain()
        return Received()

    def respond(self, phase: str, fault: Fault | None, received: Received) -> Reply:
        raise NotImplementedError

    def error_reply(self, status: int) -> Reply:
        return oss_error(status)

    def serve_control(self) -> None:
        self.send_reply(self.error_reply(404))

    # --- the request cycle ---------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.context.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.context.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.context.verbose:
            super().log_message(format, *args)

    def serve_request(self) -> None:
        arrived = time.monotonic()
        self.url = urlsplit(self.path)
        phase = self.phase_of(self.command, self.url.path)
        if phase == CONTROL_PHASE:
            self.serve_control()
            return
        fault = self.context.faults.take(phase) if phase in PHASES else None
        received = Received()
        try:
            try:
                received = self.receive(phase, fault)
            except BadRequest as problem:
                self.close_connection = True  # the rest of the body may still be in flight
                self.send_reply(replace(self.error_reply(problem.status), headers=(("Connection", "close"),)))
                return
            finally:
                self.record(phase, received.recorded, arrived)
            self.answer(phase, fault, received)
        finally:
            if received.cleanup is not None:
                received.cleanup()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = serve_request

    def request_body(self) -> RequestBody:
        return RequestBody(self.rfile, self.headers)

    def record(self, phase: str, body: dict[str, Any] | None, arrived: float) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.context.log.append(RecordedRequest(
            role=self.role, phase=phase, method=self.command, path=self.url.path, query=self.url.query,
            headers=headers, body=body, authorization=self.headers.get("Authorization"), time=arrived))

    def answer(self, phase: str, fault: Fault | None, received: Received) -> None:
        if fault is not None and fault.answers_instead:
            self.answer_with_fault(fault)
            return
        if fault is not None and fault.name == "stall" and not self.stall(float(fault.option("seconds", 30))):
            return
        try:
            reply = self.respond(phase, fault, received)
        except Exception:  # noqa: BLE001 (a sandbox bug must still answer, or the client sees a mystery)
            traceback.print_exc()
            reply = self.error_reply(500)
        self.send_reply(reply, fault)

    def answer_with_fault(self, fault: Fault) -> None:
        if fault.name == "reset":
            self.reset_connection()
        else:
            self.send_reply(self.fault_reply(fault))

    def fault_reply(self, fault: Fault) -> Reply:
        if fault.name in HTTP_STATUS_FAULTS:
            reply = self.error_reply(HTTP_STATUS_FAULTS[fault.name])
            if fault.name == "http_429":
                reply = replace(reply, headers=(("Retry-After", str(fault.option("retry_after", 1))),))
            return reply
        if fault.name == "code":
            return envelope(int(fault.options["code"]), str(fault.option("message") or ""))
        if fault.name == "html":
            return html_error(int(fault.option("status", 502)))
        if fault.name == "expired":
            return oss_error(404, "NoSuchKey", "The specified key does not exist.")
        if fault.name == "redirect":
            location = str(fault.options["location"]).rstrip("/") + self.path
            return Reply(int(fault.option("status", 302)), b"", "text/plain", (("Location", location),))
        return Reply(200)  # empty_body

    def stall(self, seconds: float) -> bool:
        """Hold the answer back; False (connection dropped) when the sandbox stops meanwhile."""
        if self.context.stopping.wait(seconds):
            self.reset_connection()
            return False
        return True

    def reset_connection(self) -> None:
        """Abort with a TCP RST: SO_LINGER 0, then close without a FIN."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The real close waits until finish() closes rfile; nothing is written before that.
        self.connection.close()

    def send_reply(self, reply: Reply, fault: Fault | None = None) -> None:
        name = fault.name if fault is not None else None
        if name == "malformed_json":
            reply = replace(reply, body=reply.body[: max(1, len(reply.body) // 2)], content_type=JSON_TYPE)
        if name == "huge_json" and fault is not None:
            self.send_huge_json(int(fault.option("bytes", HUGE_JSON_BYTES)))
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(reply.content_length))
        for header, value in reply.headers:
            self.send_header(header, value)
        self.end_headers()
        cut = name in ("cut_short", "reset_mid_body")
        limit = 0 if self.command == "HEAD" else reply.content_length // 2 if cut else reply.content_length
        throttle = None
        if name == "slow" and fault is not None and fault.phase == "download":
            throttle = Throttle(float(fault.options["bytes_per_second"]), self.context.stopping)
        if name == "stall_mid_body" and fault is not None and limit > 0:
            half = self.write_body(reply, limit // 2, throttle)
            if not self.stall(float(fault.option("seconds", 30))):
                return
            sent = half + self.write_body(reply, limit - half, throttle, skip=half)
        else:
            sent = self.write_body(reply, limit, throttle)
        if name == "reset_mid_body":
            self.reset_connection()
        elif cut or sent < limit:
            self.close_connection = True  # the client sees fewer bytes than Content-Length promised

    def write_body(self, reply: Reply, limit: int, throttle: Throttle | None, skip: int = 0) -> int:
        """Send ``limit`` bytes of the body, starting ``skip`` bytes in."""
        sent = 0
        for data in _body_pieces(reply, limit, throttle, skip):
            self.wfile.write(data)
            sent += len(data)
            if throttle:
                throttle.account(len(data))
        return sent

    def send_huge_json(self, size: int) -> None:
        """A valid success envelope of ``size`` bytes (at least its frame), padded in ``message``.

        Streamed from one reused block, so a huge answer costs the sandbox no memory.
        """
        head, tail = b'{"code": 0, "message": "', b'", "data": null}'
        padding = max(0, size - len(head) - len(tail))
        self.send_response(200)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(head) + padding + len(tail)))
        self.end_headers()
        if self.command == "HEAD":
            return
        self.close_connection = True  # clients are expected to hang up part-way
        block = b"x" * CHUNK_BYTES
        self.wfile.write(head)
        while padding > 0:
            piece = block if padding >= len(block) else block[:padding]
            self.wfile.write(piece)
            padding -= len(piece)
        self.wfile.write(tail)


HUGE_JSON_BYTES = 8 * 1024 * 1024


def _body_pieces(reply: Reply, limit: int, throttle: Throttle | None, skip: int = 0) -> Iterator[bytes]:
    size = throttle.chunk_size(CHUNK_BYTES) if throttle else CHUNK_BYTES
    if reply.file is None:
        view = memoryview(reply.body)[skip:skip + limit]
        for start in range(0, len(view), size):
            yield bytes(view[start:start + size])
        return
    with open(reply.file.path, "rb") as source:
        source.seek(reply.file.start + skip)
        remaining = limit
        while remaining > 0 and (data := source.read(min(size, remaining))):
            remaining -= len(data)
            yield data
