"""An incremental multipart/form-data parser that never holds a whole part in memory.

The caller feeds the body in chunks of any size and the parser calls back with
each part's headers, data and end. Memory stays bounded by the chunk size plus
the delimiter, whatever the size of the parts: between feeds the parser keeps
at most ``len(delimiter) - 1`` bytes of part data, because those bytes may be
the start of a delimiter that straddles the border between two chunks.

Threading: a parser belongs to one request on one handler thread and shares
nothing.
"""

from __future__ import annotations

import email.message
import email.utils
import enum
from typing import Protocol

MAX_PART_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


class PartHandler(Protocol):
    def part_begin(self, headers: dict[str, str]) -> None: ...

    def part_data(self, data: bytes) -> None: ...

    def part_end(self) -> None: ...


class _State(enum.Enum):
    PREAMBLE = enum.auto()
    AFTER_DELIMITER = enum.auto()
    HEADERS = enum.auto()
    BODY = enum.auto()
    EPILOGUE = enum.auto()


def header_parameters(value: str, header_name: str = "content-type") -> tuple[str, dict[str, str]]:
    """Split ``main/type; a="b"`` into ("main/type", {"a": "b"}), honouring quotes and RFC 2231."""
    message = email.message.Message()
    message[header_name] = value
    params = message.get_params(header=header_name) or []
    if not params:
        return "", {}
    main = params[0][0].strip().lower()
    rest = {name.lower(): email.utils.collapse_rfc2231_value(raw) for name, raw in params[1:]}
    return main, rest


def _parse_part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers[name.decode("latin-1").strip().lower()] = value.decode("utf-8", "replace").strip()
    return headers


class MultipartParser:
    def __init__(self, boundary: str, handler: PartHandler) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("missing or overlong multipart boundary")
        self._handler = handler
        self._first_delimiter = b"--" + boundary.encode("latin-1")
        self._delimiter = b"\r\n" + self._first_delimiter
        self._buffer = b""
        self._state = _State.PREAMBLE

    @property
    def finished(self) -> bool:
        """True once the closing delimiter has been seen."""
        return self._state is _State.EPILOGUE

    def feed(self, data: bytes) -> None:
        if self._state is _State.EPILOGUE:
            return  # the epilogue carries nothing
        self._buffer = self._buffer + data if self._buffer else data
        while self._step():
            pass

    def close(self) -> None:
        if self._state is not _State.EPILOGUE:
            raise MultipartError("the body ended before the closing multipart delimiter")

    def _step(self) -> bool:
        """Advance as far as the buffer allows; False when more data is needed."""
        state = self._state
        if state is _State.PREAMBLE:
            return self._skip_preamble()
        if state is _State.AFTER_DELIMITER:
            return self._after_delimiter()
        if state is _State.HEADERS:
            return self._read_headers()
        if state is _State.BODY:
            return self._read_body()
        self._buffer = b""
        return False

    def _skip_preamble(self) -> bool:
        found = self._buffer.find(self._first_delimiter)
        if found < 0:
            self._buffer = self._buffer[-(len(self._first_delimiter) - 1):]
            return False
        self._buffer = self._buffer[found + len(self._first_delimiter):]
        self._state = _State.AFTER_DELIMITER
        return True

    def _after_delimiter(self) -> bool:
        if len(self._buffer) < 2:
            return False
        if self._buffer.startswith(b"--"):
            self._state = _State.EPILOGUE
            self._buffer = b""
            return False
        line_end = self._buffer.find(b"\r\n")
        if line_end < 0:
            if len(self._buffer) > 1024:
                raise MultipartError("garbage after a multipart delimiter")
            return False
        if self._buffer[:line_end].strip(b" \t"):  # only transport padding may follow a delimiter
            raise MultipartError("garbage after a multipart delimiter")
        self._buffer = self._buffer[line_end + 2:]
        self._state = _State.HEADERS
        return True

    def _read_headers(self) -> bool:
        if self._buffer.startswith(b"\r\n"):  # a part without headers
            block, rest = b"", self._buffer[2:]
        else:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_PART_HEADER_BYTES:
                    raise MultipartError("part headers are too long")
                return False
            block, rest = self._buffer[:end], self._buffer[end + 4:]
        self._buffer = rest
        self._state = _State.BODY
        self._handler.part_begin(_parse_part_headers(block))
        return True

    def _read_body(self) -> bool:
        found = self._buffer.find(self._delimiter)
        if found >= 0:
            if found:
                self._handler.part_data(self._buffer[:found])
            self._handler.part_end()
            self._buffer = self._buffer[found + len(self._delimiter):]
            self._state = _State.AFTER_DELIMITER
            return True
        keep = len(self._delimiter) - 1
        if len(self._buffer) > keep:
            self._handler.part_data(self._buffer[:-keep])
            self._buffer = self._buffer[-keep:]
        return False
