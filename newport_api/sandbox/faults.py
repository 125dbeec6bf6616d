"""The catalogue of faults the sandbox can inject, and the book that hands them out.

A fault is queued for one phase with a count (or forever) and applies to the
next requests of that phase, in arrival order; then normal service resumes.
Faults fall into three groups, which matters for requests that cost money:

* answering faults replace the answer and the request is NOT processed
  (``http_*``, ``code``, ``html``, ``empty_body``, ``reset``, ``expired``,
  ``redirect``): a submit answered with ``http_503`` creates no task;
* shaping faults let the request be processed, then spoil or delay the answer
  (``reset_mid_body``, ``malformed_json``, ``huge_json``, ``stall``,
  ``stall_mid_body``, ``slow``, ``cut_short`` and the poll-only faults): a
  submit answered with ``reset_mid_body`` DID create a task, exactly like a
  real answer lost on the way back;
* ``refused`` is consumed by the answers that hand out an origin: get_policy's
  ``host`` for phase "storage", a successful poll's ``videoUrl`` for "download".

Threading: one FaultBook is shared by every handler thread of the three
listeners and by the thread that calls ``Sandbox.inject()``; every method holds
the book's lock. ``Fault`` values are immutable and safe to pass around.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

PHASES: tuple[str, ...] = ("policy", "storage", "finish", "submit", "poll", "download", "credits")
OTHER_PHASE = "other"

HTTP_STATUS_FAULTS: Mapping[str, int] = MappingProxyType({
    "http_401": 401, "http_403": 403, "http_429": 429, "http_500": 500, "http_502": 502, "http_503": 503,
})

_ALL = frozenset(PHASES)
_NOT_DOWNLOAD = _ALL - {"download"}


@dataclass(frozen=True)
class FaultSpec:
    phases: frozenset[str]
    answers_instead: bool
    description: str
    options: frozenset[str] = frozenset()
    required_options: frozenset[str] = frozenset()


def _http_spec(status: int) -> FaultSpec:
    if status == 429:
        return FaultSpec(_ALL, True, "HTTP 429 with header Retry-After: options.get('retry_after', 1)",
                         frozenset({"retry_after"}))
    return FaultSpec(_ALL, True, f"HTTP {status} with a small JSON (API) or XML (storage, cdn) body")


FAULTS: Mapping[str, FaultSpec] = MappingProxyType({
    **{name: _http_spec(status) for name, status in HTTP_STATUS_FAULTS.items()},
    "code": FaultSpec(_NOT_DOWNLOAD, True,
                      "HTTP 200 envelope with code=options['code'], message=options.get('message')",
                      frozenset({"code", "message"}), frozenset({"code"})),
    "html": FaultSpec(_ALL, True, "an HTML error page with status options.get('status', 502)",
                      frozenset({"status"})),
    "empty_body": FaultSpec(_ALL, True, "HTTP 200 with an empty body (Content-Length: 0)"),
    "reset": FaultSpec(_ALL, True, "read the request fully, then a TCP RST and no answer"),
    "reset_mid_body": FaultSpec(_ALL, False,
                                "process the request, send headers and about half the body, then RST"),
    "stall": FaultSpec(_ALL, False, "wait options.get('seconds', 30) before answering normally",
                       frozenset({"seconds"})),
    "stall_mid_body": FaultSpec(_ALL, False,
                                "process the request, send headers and about half the body, then wait "
                                "options.get('seconds', 30) before sending the rest", frozenset({"seconds"})),
    "malformed_json": FaultSpec(_NOT_DOWNLOAD, False, "HTTP 200 application/json with a truncated JSON body"),
    "huge_json": FaultSpec(_NOT_DOWNLOAD, False,
                           "process the request, then answer HTTP 200 application/json with a valid envelope "
                           "of options.get('bytes', 8 MiB)", frozenset({"bytes"})),
    "redirect": FaultSpec(_ALL, True,
                          "answer options.get('status', 302) with Location: options['location'] followed by "
                          "the request's own path and query", frozenset({"location", "status"}),
                          frozenset({"location"})),
    "status0": FaultSpec(frozenset({"poll"}), False, "the task is reported with status 0 (queued)"),
    "task_failed": FaultSpec(frozenset({"poll"}), False,
                             "the task fails for good: status 4, reason=options.get('reason', 'No face was "
                             "detected in the source video'), errorCode=options.get('error_code', 10500)",
                             frozenset({"reason", "error_code"})),
    "no_video": FaultSpec(frozenset({"poll"}), False,
                          "the task succeeds for good (status 3) with an empty `videos` list"),
    "nested": FaultSpec(frozenset({"poll"}), False,
                        "the answer's data nested one level deeper: data = {data: ...}"),
    "expired": FaultSpec(frozenset({"download"}), True, "404 as if the object or result had been deleted"),
    "cut_short": FaultSpec(frozenset({"download"}), False,
                           "full Content-Length, about half the bytes, then the connection closes"),
    "slow": FaultSpec(frozenset({"download", "storage"}), False,
                      "throttle the upload read or the download to options['bytes_per_second']",
                      frozenset({"bytes_per_second"}), frozenset({"bytes_per_second"})),
    "refused": FaultSpec(frozenset({"download", "storage"}), False,
                         "hand out an origin where nothing listens (policy host / poll videoUrl): "
                         "connection refused"),
})


@dataclass(frozen=True)
class Fault:
    phase: str
    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def answers_instead(self) -> bool:
        """True when the fault replaces the answer and the request is not processed."""
        return FAULTS[self.name].answers_instead

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


def validate_fault(phase: str, name: str, times: int | None, options: Mapping[str, Any]) -> None:
    """Raise ValueError for anything inject() cannot honour, so a typo fails the test that made it."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
    spec = FAULTS.get(name)
    if spec is None:
        raise ValueError(f"unknown fault {name!r}; faults are {', '.join(FAULTS)}")
    if phase not in spec.phases:
        raise ValueError(f"fault {name!r} is not supported for phase {phase!r} (only {sorted(spec.phases)})")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be a positive int or None (forever), not {times!r}")
    unknown = set(options) - spec.options
    if unknown:
        raise ValueError(f"fault {name!r} takes no option(s) {sorted(unknown)}; "
                         f"it takes {sorted(spec.options)}")
    missing = spec.required_options - set(options)
    if missing:
        raise ValueError(f"fault {name!r} needs option(s) {sorted(missing)}")
    _validate_option_values(name, options)


def _validate_option_values(name: str, options: Mapping[str, Any]) -> None:
    def number(key: str, minimum: float, strictly_above: bool = False) -> None:
        value = options.get(key)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"option {key!r} of fault {name!r} must be a number")
        if value < minimum or (strictly_above and value == minimum):
            raise ValueError(f"option {key!r} of fault {name!r} is out of range: {value!r}")

    if name == "code" and (isinstance(options["code"], bool) or not isinstance(options["code"], int)):
        raise TypeError("option 'code' of fault 'code' must be an int")
    if name == "html":
        number("status", 100)
    if name == "redirect":
        location, status = options["location"], options.get("status", 302)
        if not isinstance(location, str) or not location.startswith(("http://", "https://")):
            raise ValueError("option 'location' of fault 'redirect' must be an http(s) URL")
        if isinstance(status, bool) or status not in (301, 302, 303, 307, 308):
            raise ValueError(f"option 'status' of fault 'redirect' must be a redirect status, not {status!r}")
    if name == "huge_json":
        number("bytes", 64)
    number("seconds", 0)
    number("bytes_per_second", 0, strictly_above=True)


@dataclass
class _Queued:
    fault: Fault
    remaining: int | None  # None: forever


def _take_from(queue: deque[_Queued]) -> Fault | None:
    if not queue:
        return None
    head = queue[0]
    if head.remaining is not None:
        head.remaining -= 1
        if head.remaining <= 0:
            queue.popleft()
    return head.fault


class FaultBook:
    """Queued faults per phase. ``refused`` lives apart: it is spent by answers, not by requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Queued]] = {phase: deque() for phase in PHASES}
        self._refusals: dict[str, deque[_Queued]] = {phase: deque() for phase in PHASES}

    def add(self, phase: str, name: str, times: int | None = 1,
            options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        validate_fault(phase, name, times, options)
        queued = _Queued(Fault(phase, name, MappingProxyType(options)), times)
        with self._lock:
            (self._refusals if name == "refused" else self._queues)[phase].append(queued)

    def take(self, phase: str) -> Fault | None:
        """The fault for the request of ``phase`` that just arrived, if any (spends one use)."""
        if phase not in self._queues:
            return None
        with self._lock:
            return _take_from(self._queues[phase])

    def take_refusal(self, phase: str) -> bool:
        """Whether the origin handed out now for ``phase`` must be the refusing one (spends one use)."""
        with self._lock:
            return _take_from(self._refusals[phase]) is not None

    def clear(self) -> None:
        with self._lock:
            for queue in (*self._queues.values(), *self._refusals.values()):
                queue.clear()
