"""HTTP transport: envelopes, error mapping, retries and where the key may go.

Rules this module enforces for every caller:

* The ``Authorization`` header is added per request, only to requests for the
  configured API origin, and API requests never follow redirects.  Storage
  and result hosts get plain requests from the same session, which carries no
  credentials of its own.
* The base URL must be https, except for loopback addresses (the sandbox).
* TLS verification is always on; a custom CA bundle may replace the default.
  Proxies from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) are
  honoured, as requests does by default.
* Every request has a connect and a read timeout; the read timeout is also
  the longest a transfer may go without a byte before it counts as a fault.
* A cancel breaks a blocked request at once: the transport registers an abort
  with its cancel token that shuts its sockets down (see ``sockets``).
* JSON answers are read with a size cap, so a runaway body is an error rather
  than an out-of-memory.
* Calls marked ``idempotent`` are retried on network errors, 429 and 5xx with
  exponential backoff and full jitter, honouring ``Retry-After``.  Other calls
  are retried only when the request provably never left this machine.

A ``Transport`` is used by one thread at a time (``requests.Session`` is not
thread-safe); each job runner owns its own.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from . import errors
from .cancel import CancelToken
from .sockets import AbortableAdapter, SocketRegistry

T = TypeVar("T")

MAX_JSON_BYTES = 4 * 1024 * 1024
USER_AGENT = "talking-face-blender/0.1 (+newport_api)"

MSG_KEY_REJECTED = "Your Newport AI API key was rejected — check it in Preferences ▸ Add-ons ▸ Talking Face."
MSG_KEY_MISSING = "No Newport AI API key is set — add it in Preferences ▸ Add-ons ▸ Talking Face."
MSG_QUOTA = "Newport AI refused the job: out of credits or over the rate limit — top up or wait, then retry."
MSG_RATE_LIMITED = "Newport AI is busy (too many requests) — wait a minute, then retry."
MSG_UNREACHABLE = "Can't reach Newport AI — check your internet connection, then retry."
MSG_UNAVAILABLE = "Newport AI is not answering properly right now — try again in a few minutes."
MSG_TLS = ("The secure connection to Newport AI could not be verified — if your network inspects HTTPS, "
           "set its CA bundle in Preferences ▸ Add-ons ▸ Talking Face, then retry.")
MSG_TOO_LARGE = "Newport AI sent an unexpectedly large answer — try again later."

KEY_ERROR_CODES = {13005: MSG_KEY_MISSING, 13006: MSG_KEY_REJECTED, 13007: MSG_KEY_REJECTED}
QUOTA_CODES = {13015}
ILLEGAL_PARAMETER_CODES = {10192}


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 60.0  # also the longest a transfer may go without a single byte

    def __post_init__(self) -> None:
        for name in ("connect", "read"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 < value < math.inf):
                raise ValueError(f"Timeouts.{name} must be a positive number of seconds, not {value!r}")

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * (2 ** attempt))
        return random.uniform(0.0, ceiling)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or default_port)


def check_base_url(base_url: str) -> str:
    """Return the normalised base URL, or raise if it may not carry the key."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InsecureURLError(
            f"The API base URL '{base_url}' is not a web address (it should start with https://) "
            "— fix it in Preferences ▸ Add-ons ▸ Talking Face.")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise errors.InsecureURLError(
            "The API base URL must start with https:// (plain http is only allowed for this computer) "
            "— fix it in Preferences ▸ Add-ons ▸ Talking Face.")
    return base_url.strip().rstrip("/")


def check_ca_bundle(ca_bundle: str | None) -> str | None:
    """Return the CA bundle path to use (None: the default), or raise if it cannot be read."""
    if not ca_bundle or not ca_bundle.strip():
        return None
    path = os.path.expanduser(ca_bundle.strip())
    if not (os.path.isfile(path) or os.path.isdir(path)):
        raise errors.ConfigurationError(
            f"The CA bundle '{ca_bundle.strip()}' does not exist — fix or clear its path in "
            "Preferences ▸ Add-ons ▸ Talking Face.", detail="ca_bundle is neither a file nor a folder")
    return path


class Transport:
    def __init__(self, base_url: str, api_key: str, *, timeouts: Timeouts | None = None,
                 retry: RetryPolicy | None = None, ca_bundle: str | None = None,
                 cancel: CancelToken | None = None, session: requests.Session | None = None) -> None:
        self.base_url = check_base_url(base_url)
        self._api_key = api_key.strip()
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.cancel = cancel or CancelToken()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # Checked again before every request, so a bad path fails the job with a sentence
        # instead of a traceback in whichever thread created the client.
        self._ca_problem: errors.ConfigurationError | None = None
        try:
            self._verify: str | bool = check_ca_bundle(ca_bundle) or True
        except errors.ConfigurationError as problem:
            self._ca_problem = problem
            self._verify = True
        self.session.verify = self._verify
        self._sockets = SocketRegistry()
        adapter = AbortableAdapter(self._sockets)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._forget_abort = self.cancel.on_cancel(self._sockets.abort)

    def close(self) -> None:
        """Close the connections; the transport makes no more requests after this."""
        self._forget_abort()
        self.session.close()
        self._sockets.close()

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r}, api_key=<hidden>)"

    # -- key hygiene --------------------------------------------------------

    def redact(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "<api key>")
        return text

    def is_api_url(self, url: str) -> bool:
        return origin_of(url) == origin_of(self.base_url)

    # -- API calls ----------------------------------------------------------

    def call_api(self, path: str, *, json_body: dict | None = None, form: dict | None = None,
                 idempotent: bool = True, allow_empty: bool = False) -> Any:
        """POST to the API and return the envelope's ``data``.

        ``allow_empty`` turns an empty 200 answer into ``None`` instead of an
        error (the polling endpoint sometimes answers that way while busy).
        """
        if not self._api_key:
            raise errors.AuthenticationError(MSG_KEY_MISSING, code=13005)
        url = self.base_url + path

        def attempt() -> Any:
            try:
                response = self._send(
                    "POST", url, json=json_body, data=form, allow_redirects=False, stream=True,
                    headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"})
                with response:
                    return self._read_envelope(response, allow_empty=allow_empty)
            except errors.NewportError as error:
                if idempotent or self.cancel.cancelled or not fate_unknown(error):
                    raise
                raise submit_uncertain(error) from None

        return self.with_retries(attempt, idempotent=idempotent)

    def _read_envelope(self, response: requests.Response, *, allow_empty: bool) -> Any:
        self.raise_for_http_status(response, host="api")
        raw = read_capped(response, MAX_JSON_BYTES, cancel=self.cancel)
        if not raw.strip():
            if allow_empty:
                return None
            raise errors.ServiceUnavailableError(MSG_UNAVAILABLE, detail="empty answer from the API",
                                                 http_status=response.status_code)
        try:
            envelope = json.loads(raw)
        except ValueError as exc:
            raise errors.ServiceUnavailableError(
                MSG_UNAVAILABLE, detail=f"not JSON: {self.redact(raw[:200].decode('utf-8', 'replace'))}",
                http_status=response.status_code) from exc
        if not isinstance(envelope, dict) or "code" not in envelope:
            raise errors.ServiceUnavailableError(MSG_UNAVAILABLE, detail="answer is not an API envelope",
                                                 http_status=response.status_code)
        self.raise_for_envelope_code(envelope)
        return envelope.get("data")

    def raise_for_envelope_code(self, envelope: dict) -> None:
        try:
            code = int(envelope.get("code"))
        except (TypeError, ValueError):
            raise errors.ServiceUnavailableError(MSG_UNAVAILABLE, detail="envelope code is not a number") from None
        if code == 0:
            return
        message = self.redact(str(envelope.get("message") or "")).strip()
        detail = f"code {code}: {message}"
        if code in KEY_ERROR_CODES:
            raise errors.AuthenticationError(KEY_ERROR_CODES[code], code=code, detail=detail)
        if code in QUOTA_CODES:
            raise errors.QuotaError(MSG_QUOTA, code=code, detail=detail)
        if code in ILLEGAL_PARAMETER_CODES:
            raise errors.InvalidParameterError(
                f"Newport AI rejected a setting of this job ({message or 'illegal parameter'}) "
                "— check the source, audio and options.", code=code, detail=detail)
        raise errors.NewportError(
            f"Newport AI refused the request: {message or 'no reason given'} (code {code}).",
            code=code, detail=detail)

    def raise_for_http_status(self, response: requests.Response, *, host: str) -> None:
        status = response.status_code
        if status < 300:
            return
        detail = f"HTTP {status} from {host}"
        if status == 429:
            raise errors.RateLimitedError(MSG_RATE_LIMITED, retry_after=parse_retry_after(response),
                                          http_status=status, detail=detail)
        if status >= 500:
            raise errors.ServiceUnavailableError(MSG_UNAVAILABLE, http_status=status, detail=detail)
        if host == "api" and status in (401, 403):
            raise errors.AuthenticationError(MSG_KEY_REJECTED, http_status=status, detail=detail)
        if host == "api" and 300 <= status < 400:
            raise errors.ProtocolError(
                "The API base URL redirects elsewhere — check it in Preferences ▸ Add-ons ▸ Talking Face.",
                http_status=status, detail=detail)
        if host == "api":
            raise errors.ProtocolError(
                "Newport AI does not answer this request at the configured address — check the API base URL "
                "in Preferences ▸ Add-ons ▸ Talking Face.", http_status=status, detail=detail)
        # Storage and result hosts map their own statuses; this is the fallback.
        raise errors.ServiceUnavailableError(MSG_UNAVAILABLE, http_status=status, detail=detail)

    # -- sending and retrying ------------------------------------------------

    def send_plain(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A request to a storage or result host: never with the key."""
        headers = dict(kwargs.pop("headers", None) or {})
        headers.pop("Authorization", None)
        return self._send(method, url, headers=headers, **kwargs)

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.cancel.raise_if_cancelled()
        if self._ca_problem is not None:
            raise self._ca_problem
        if "Authorization" in kwargs.get("headers", {}) and not self.is_api_url(url):
            raise errors.ConfigurationError("Refusing to send the API key to a host that is not the API.")
        kwargs.pop("timeout", None)  # every request gets both timeouts
        # Verification is always on.  Passed per request because requests lets REQUESTS_CA_BUNDLE or
        # CURL_CA_BUNDLE override a session's CA bundle; with no bundle set, those still apply.
        kwargs["verify"] = self._verify
        try:
            return self.session.request(method, url, timeout=self.timeouts.as_tuple(), **kwargs)
        except requests.RequestException as exc:
            raise self._network_error(exc) from None
        except OSError as exc:  # e.g. a CA bundle that vanished after the check
            if self.cancel.cancelled:
                raise errors.CancelledError("The job was cancelled.") from None
            raise errors.ConfigurationError(
                "A local network setting is broken (CA bundle or proxy) — check Preferences ▸ Add-ons ▸ "
                "Talking Face and your proxy settings.", detail=self.redact(f"{type(exc).__name__}: {exc}"),
            ) from None

    def _network_error(self, exc: requests.RequestException) -> errors.NewportError:
        detail = self.redact(f"{type(exc).__name__}: {exc}")
        if self.cancel.cancelled:
            return errors.CancelledError("The job was cancelled.", detail=detail)
        if is_certificate_problem(exc):
            return errors.TLSError(MSG_TLS, detail=detail)
        if request_never_left(exc):
            return errors.NotConnectedError(MSG_UNREACHABLE, detail=detail)
        return errors.NetworkError(MSG_UNREACHABLE, detail=detail)

    def broken_transfer(self, exc: BaseException, message: str = MSG_UNREACHABLE) -> errors.NewportError:
        """The error for a body that broke off while being read (CancelledError if we broke it)."""
        detail = self.redact(f"{type(exc).__name__}: {exc}")
        if self.cancel.cancelled:
            return errors.CancelledError("The job was cancelled.", detail=detail)
        return errors.NetworkError(message, detail=detail)

    def with_retries(self, attempt: Callable[[], T], *, idempotent: bool = True,
                     on_retry: Callable[[errors.NewportError, float], None] | None = None) -> T:
        """Run ``attempt`` and repeat it while it fails in a way worth repeating.

        A non-idempotent attempt is repeated only after a 429 (the service
        refused it outright) or a connection that never opened.
        """
        for number in range(self.retry.attempts):
            try:
                return attempt()
            except errors.NewportError as error:
                if self.cancel.cancelled and not isinstance(error, errors.CancelledError):
                    raise errors.CancelledError("The job was cancelled.", detail=error.detail) from None
                if not self._worth_retrying(error, idempotent) or number == self.retry.attempts - 1:
                    raise
                delay = self.retry.delay(number, getattr(error, "retry_after", None))
                if on_retry:
                    on_retry(error, delay)
                self.cancel.sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _worth_retrying(error: errors.NewportError, idempotent: bool) -> bool:
        if not error.retryable:
            return False
        if idempotent:
            return True
        return isinstance(error, (errors.RateLimitedError, errors.NotConnectedError))


MSG_SUBMIT_UNCERTAIN = ("Newport AI did not confirm that the job started, so it may or may not be running; "
                        "it was not sent twice — check your Newport AI account, then use Retry to submit "
                        "again.")


def submit_uncertain(cause: errors.NewportError) -> errors.SubmitUncertainError:
    return errors.SubmitUncertainError(MSG_SUBMIT_UNCERTAIN, detail=cause.detail, http_status=cause.http_status)


def fate_unknown(error: errors.NewportError) -> bool:
    """After a request that must not be repeated: True when the service may have acted on it.

    Refusals the service states (an error code, 401/403, 429, a redirect or
    404) and connections that never opened are certain; a broken, stalled,
    garbled or server-error answer is not.
    """
    if isinstance(error, (errors.CancelledError, errors.NotConnectedError, errors.RateLimitedError,
                          errors.TLSError, errors.ConfigurationError)):
        return False
    if isinstance(error, (errors.ServiceUnavailableError, errors.NetworkError)):
        return True
    if isinstance(error, errors.ProtocolError):
        return error.http_status is None or error.http_status < 300
    return False


def is_certificate_problem(exc: requests.RequestException) -> bool:
    """A certificate that failed verification: retrying will not help, a CA bundle might."""
    if not isinstance(exc, requests.exceptions.SSLError):
        return False
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text or "hostname" in text


def request_never_left(exc: requests.RequestException) -> bool:
    """True when the connection failed before any byte of the request was sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        name = type(reason).__name__
        return name in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")
    return False


def parse_retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def read_capped(response: requests.Response, limit: int, *, cancel: CancelToken | None = None) -> bytes:
    """Read a whole body, refusing one larger than ``limit`` bytes (before reading it, if it says so)."""
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise errors.ServiceUnavailableError(MSG_TOO_LARGE, http_status=response.status_code,
                                             detail=f"Content-Length {declared} is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > limit:  # a garbled answer like any other: retried where that is safe
                raise errors.ServiceUnavailableError(MSG_TOO_LARGE, http_status=response.status_code,
                                                     detail=f"body over {limit} bytes")
            chunks.append(chunk)
    except requests.RequestException as exc:
        if cancel is not None and cancel.cancelled:
            raise errors.CancelledError("The job was cancelled.") from None
        raise errors.NetworkError(MSG_UNREACHABLE, detail=f"{type(exc).__name__} while reading") from None
    return b"".join(chunks)
